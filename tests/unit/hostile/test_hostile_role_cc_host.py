"""Hostile input against role cc_host: each case is refused naming the variable and the fix, and the case's AMD
host tree (the one of tests/unit/roles/test_cc_host_role.py, without SEV-SNP firmware) stays byte-identical.

All cases run in one ansible-playbook process (tests/lib/hostile_roles.py); each is its own test here.
"""

from __future__ import annotations

from typing import List

from hostile_roles import Case, role_refusal_test
from role_roots import ROLE_ROOTS

ROLE = "cc_host"
SPEC = "Validation of arguments failed"
CONF_FIX = "must be a file name"

CASES: List[Case] = [
    Case("technology-unknown", {"cc_host_technology": "sgx"},
         [SPEC, "cc_host_technology must be one of: auto, snp, tdx, none, got: sgx"]),
    Case("assert-word", {"cc_host_assert": "perhaps"}, [SPEC, "'cc_host_assert' is of type str"]),
    Case("iommufd-word", {"cc_host_iommufd": "perhaps"}, [SPEC, "'cc_host_iommufd' is of type str"]),
    Case("tdx-args-dict", {"cc_host_tdx_boot_args": {"kvm_intel.tdx": 1}},
         [SPEC, "'cc_host_tdx_boot_args' is of type"]),
    Case("modprobe-conf-traversal", {"cc_host_modprobe_conf": "../../../tmp/x.conf"},
         ["cc_host_modprobe_conf", CONF_FIX]),
    Case("modules-load-conf-newline", {"cc_host_modules_load_conf": "a.conf\nb"},
         ["cc_host_modules_load_conf", CONF_FIX]),
    Case("snp-on-a-cpu-without-it", {"cc_host_technology": "snp"},
         ["cc_host_technology is snp but case", "SEV-SNP needs an AMD EPYC, TDX an Intel Xeon"]),
]


test_cc_host_role_refuses = role_refusal_test(ROLE, CASES, ROLE_ROOTS[ROLE])
