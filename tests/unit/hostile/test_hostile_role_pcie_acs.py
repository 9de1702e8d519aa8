"""Hostile input against role pcie_acs: each case is refused naming the variable and the fix, and the lab VM
tree (tests/lib/host_critical_tree.py) of the case stays byte-identical.

All cases run in one ansible-playbook process (tests/lib/hostile_roles.py); each is its own test here.
"""

from __future__ import annotations

from typing import List

from hostile_roles import Case, role_refusal_test
from role_roots import ROLE_ROOTS

ROLE = "pcie_acs"
SPEC = "Validation of arguments failed"
ADDRESS_FIX = "is not DDDD:BB:DD.F or BB:DD.F (hex, like 0000:3b:00.0)"
FLAGS_FIX = "is not 1 to 7 characters of 0, 1 and x, most significant bit first"

CASES: List[Case] = [
    Case("profile-unknown", {"pcie_acs_profile": "insecure"},
         [SPEC, "pcie_acs_profile must be one of: confidential, p2p, report, got: insecure"]),
    Case("address-traversal", {"pcie_acs_addresses": ["../../../etc"]}, ["address '../../../etc'", ADDRESS_FIX]),
    Case("address-wildcard", {"pcie_acs_addresses": ["0000:00:0*.0"]}, ["address '0000:00:0*.0'", ADDRESS_FIX]),
    Case("pci-id-shell", {"pcie_acs_pci_ids": ["10de:2330;id"]},
         ["pci_id '10de:2330;id' is not vendor:device in hex"]),
    Case("flags-shell", {"pcie_acs_profile": "p2p", "pcie_acs_config_acs_flags": "x0x00xx;reboot"},
         ["config_acs_flags 'x0x00xx;reboot'", FLAGS_FIX]),
    Case("flags-overlong", {"pcie_acs_profile": "p2p", "pcie_acs_config_acs_flags": "0" * 22},
         ["config_acs_flags '%s'" % ("0" * 22), FLAGS_FIX]),
    Case("planned-vf-pf-traversal", {"pcie_acs_addresses": ["0000:00:05.1"],
                                     "pcie_acs_planned_vfs": {"0000:00:05.1": "../../x"}},
         ["address '../../x'", ADDRESS_FIX]),
    # a command line with a newline is read as the kernel reads it: the ACS-weakening argument is found
    Case("cmdline-newline", {"pcie_acs_current_cmdline": "quiet\npci=disable_acs_redir=*"},
         ["weakens ACS at boot: pci=disable_acs_redir=*", "pcie_acs_kernel_args_absent"]),
    Case("defer-word", {"pcie_acs_defer_to_reboot": "later"},
         [SPEC, "'pcie_acs_defer_to_reboot' is of type str", "not a valid boolean"]),
    Case("roles-shell", {"pcie_acs_roles": ["gpu; id"]},
         [SPEC, "pcie_acs_roles must be one or more of: gpu, nvswitch, nic, bridge, storage, other"]),
]


test_pcie_acs_role_refuses = role_refusal_test(ROLE, CASES, ROLE_ROOTS[ROLE])
