"""Hostile input against role validate: each case is refused naming the variable or the check and its fix, and the
case's tree (the lab VM after prepare's reboot, tests/lib/prepare_run.py) stays byte-identical: validate never
writes, whatever it is given.

All cases run in one ansible-playbook process (tests/lib/hostile_roles.py); each is its own test here.
"""

from __future__ import annotations

from typing import List

from hostile_roles import Case, role_refusal_test
from role_roots import validate_with_link

ROLE = "validate"
SPEC = "Validation of arguments failed"
ADDRESS_FIX = "is not a PCI address"


CASES: List[Case] = [
    # an AWX survey's strings where a list or a boolean belongs
    Case("parts-yes", {"validate_parts": "yes"}, [SPEC, "validate_parts must be one or more of"]),
    Case("repetitions-word", {"validate_parts": "performance", "validate_repetitions": "many"},
         [SPEC, "validate_repetitions"]),
    Case("fail-on-fail-word", {"validate_fail_on_fail": "sometimes"}, [SPEC, "'validate_fail_on_fail' is of type str"]),
    # bad addresses: the vfio and acs checks fail with pci_driver's and pcie_acs' messages, nothing is bound
    Case("address-traversal", {"vfio_addresses": ["../../../etc"]},
         ["not ready: vfio_devices, acs failed", ADDRESS_FIX]),
    # a root that is a link to elsewhere: read through, checked, nothing written there either
    Case("root-link", {"validate_root": "{case}/link"}, ["not ready"]),
]


test_validate_role_refuses = role_refusal_test(ROLE, CASES, validate_with_link)
