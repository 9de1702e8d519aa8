"""Hostile input against role vfio: each case is refused naming the variable or device and the fix, and the lab
VM tree (tests/lib/host_critical_tree.py) of the case stays byte-identical.

All cases run in one ansible-playbook process (tests/lib/hostile_roles.py); each is its own test here.
"""

from __future__ import annotations

from typing import List

from hostile_roles import Case, role_refusal_test
from role_roots import ROLE_ROOTS

ROLE = "vfio"
SPEC = "Validation of arguments failed"
ADDRESS_FIX = "is not a PCI address; write it as DDDD:BB:DD.F or BB:DD.F"
CRITICAL = "is host-critical"

CASES: List[Case] = [
    Case("address-traversal", {"vfio_addresses": ["../../../etc"]}, ["addresses: '../../../etc'", ADDRESS_FIX]),
    Case("address-wildcard", {"vfio_addresses": ["0000:00:*.0"]}, ["'0000:00:*.0'", ADDRESS_FIX]),
    Case("address-newline", {"vfio_addresses": ["0000:00:03.0\n0000:00:04.0"]}, [ADDRESS_FIX]),
    # an AWX string where a list belongs: normalised (split at commas) and then refused as host-critical
    Case("addresses-string-normalised", {"vfio_addresses": "0000:00:03.0,0000:00:04.0"},
         [CRITICAL, "allow_host_critical: ['0000:00:03.0']", "allow_host_critical: ['0000:00:04.0']"]),
    Case("groups-string-normalised", {"vfio_iommu_groups": "1,2"}, [CRITICAL, "the disk holding /"]),
    Case("roles-string-normalised", {"vfio_roles": "gpu,nic"}, [CRITICAL, "carries the default route"]),
    Case("pci-id-malformed", {"vfio_pci_ids": ["zzzz:2330"]}, ["pci_ids: 'zzzz:2330' is not vendor:device in hex"]),
    Case("pci-id-shell", {"vfio_pci_ids": ["10de:*;id"]}, ["pci_ids: '10de:*;id' is not vendor:device in hex"]),
    Case("driver-traversal", {"vfio_driver": "../../../tmp/x"},
         ["driver: '../../../tmp/x' is not a kernel driver name (like vfio-pci)"]),
    Case("driver-shell", {"vfio_driver": "vfio-pci; reboot"}, ["'vfio-pci; reboot' is not a kernel driver name"]),
    Case("state-unknown", {"vfio_state": "bound"}, [SPEC, "vfio_state must be one of: present, absent, got: bound"]),
    Case("persist-word", {"vfio_persist": "maybe"}, [SPEC, "'vfio_persist' is of type str", "not a valid boolean"]),
    Case("group-negative", {"vfio_iommu_groups": [-3]}, ["iommu_groups: -3 is not an IOMMU group number"]),
    Case("timeout-negative", {"vfio_timeout": -1}, ["timeout must be more than 0 seconds, not -1.0"]),
    Case("allow-critical-traversal", {"vfio_allow_host_critical": ["../x"], "vfio_addresses": ["0000:00:03.0"]},
         ["allow_host_critical: '../x'", ADDRESS_FIX]),
]


test_vfio_role_refuses = role_refusal_test(ROLE, CASES, ROLE_ROOTS[ROLE])
