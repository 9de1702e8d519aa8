"""Hostile input against role sriov: each case is refused naming the variable and the fix before any VF is
created, and the SR-IOV lab tree (tests/lib/fake_sriov.py) of the case stays byte-identical.

All cases run in one ansible-playbook process (tests/lib/hostile_roles.py); each is its own test here.
"""

from __future__ import annotations

from typing import List

from fake_sriov import LAB_PF
from hostile_roles import Case, role_refusal_test
from role_roots import ROLE_ROOTS

ROLE = "sriov"
SPEC = "Validation of arguments failed"
ADDRESS_FIX = "is not a PCI address; give it as DDDD:BB:DD.F, like 0000:01:00.0"
DRIVER_FIX = "is not a kernel driver name (letters, digits, _ . + -, like vfio-pci); nothing was changed"
UNIT_FIX = "give a systemd service name (letters, digits, ':', '_', '.', '-') ending in .service"
TWO = [{"address": LAB_PF, "num_vfs": 2}]

CASES: List[Case] = [
    Case("pfs-string", {"sriov_pfs": LAB_PF}, [SPEC, "'sriov_pfs' is of type str", "to dict"]),
    Case("address-traversal", {"sriov_pfs": [{"address": "../../../etc", "num_vfs": 1}]},
         ["pfs[0].address '../../../etc'", ADDRESS_FIX]),
    Case("address-wildcard", {"sriov_pfs": [{"address": "0000:01:00.*", "num_vfs": 1}]},
         ["pfs[0].address '0000:01:00.*'", ADDRESS_FIX]),
    Case("num-vfs-word", {"sriov_pfs": [{"address": LAB_PF, "num_vfs": "many"}]},
         [SPEC, "argument 'num_vfs' is of type str found in 'sriov_pfs'"]),
    # an AWX string where a number belongs: normalised, then refused against the PF's limit
    Case("num-vfs-string-normalised", {"sriov_pfs": [{"address": LAB_PF, "num_vfs": "9999"}]},
         ["9999 VFs asked for, but its sriov_totalvfs is 4; ask for at most 4"]),
    Case("num-vfs-negative", {"sriov_pfs": [{"address": LAB_PF, "num_vfs": -1}]},
         ["pfs[0].num_vfs -1 for %s: give a whole number from 0 to 65535" % LAB_PF]),
    # issue 17: these wrote sriov_numvfs, waited for the VFs, and only then failed on the driver
    Case("vf-driver-shell", {"sriov_pfs": [dict(TWO[0], vf_driver="vfio-pci; reboot")]},
         ['vf_driver "vfio-pci; reboot"', DRIVER_FIX]),
    Case("vf-driver-traversal", {"sriov_pfs": [dict(TWO[0], vf_driver="../../tmp/x")]},
         ['vf_driver "../../tmp/x"', DRIVER_FIX]),
    Case("vf-driver-newline", {"sriov_pfs": [dict(TWO[0], vf_driver="vfio-pci\n")]}, ['"vfio-pci\\n"', DRIVER_FIX]),
    Case("unit-name-traversal", {"sriov_pfs": TWO, "sriov_unit_name": "../../../tmp/x.service"},
         ["unit_name '../../../tmp/x.service'", UNIT_FIX]),
    Case("unit-name-newline", {"sriov_pfs": TWO, "sriov_unit_name": "a.service\nExecStart=/bin/sh"},
         ["unit_name 'a.service\\nExecStart=/bin/sh'", UNIT_FIX]),
    Case("timeout-negative", {"sriov_pfs": TWO, "sriov_timeout": -5}, ["timeout -5: give a number of seconds above 0"]),
    Case("missing-num-vfs", {"sriov_pfs": [{"address": LAB_PF}]},
         [SPEC, "missing required arguments: num_vfs found in sriov_pfs"]),
]


test_sriov_role_refuses = role_refusal_test(ROLE, CASES, ROLE_ROOTS[ROLE])
