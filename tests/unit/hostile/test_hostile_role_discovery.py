"""Hostile input against role discovery: each case is refused naming the variable and the fix, and the lab VM
tree (tests/lib/host_critical_tree.py) of the case stays byte-identical.

All cases run in one ansible-playbook process (tests/lib/hostile_roles.py); each is its own test here.
"""

from __future__ import annotations

from typing import List

from hostile_roles import Case, role_refusal_test
from role_roots import ROLE_ROOTS

ROLE = "discovery"
SPEC = "Validation of arguments failed"
ROOT_FIX = "does not exist or is not a directory; pass the host's root ('/') or the top of a captured tree"

CASES: List[Case] = [
    Case("roles-unknown", {"discovery_roles": ["gpu", "disk"]},
         [SPEC, "discovery_roles must be one or more of: gpu, nvswitch, nic, bridge, storage, other"]),
    Case("require-unknown", {"discovery_require": ["root_shell"]},
         [SPEC, "discovery_require must be one or more of: vfio_ready, snp_ready, tdx_ready"]),
    # issue 17: an AWX string failed with "The `loop` value must resolve to a 'list', not 'str'"
    Case("require-string-normalised", {"discovery_require": "snp_ready"}, ["snp_ready is false on case"]),
    Case("require-csv-normalised", {"discovery_require": "tdx_ready,snp_ready"},
         ["tdx_ready is false on case", "snp_ready is false on case"]),
    Case("report-dir-newline", {"discovery_report_dir": "{case}/out\n/etc"},
         ["discovery_report_dir", "holds a control character"]),
    Case("root-relative", {"discovery_root": "relative/root"}, ["root 'relative/root'", ROOT_FIX]),
    Case("root-missing", {"discovery_root": "{case}/nothing"}, ["nothing'", ROOT_FIX]),
    Case("root-newline", {"discovery_root": "{case}/root\n"}, ["root\\n'", ROOT_FIX]),
]


test_discovery_role_refuses = role_refusal_test(ROLE, CASES, ROLE_ROOTS[ROLE])
