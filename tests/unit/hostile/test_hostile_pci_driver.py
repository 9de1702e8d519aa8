"""Hostile input against pci_driver: each case is refused naming the option or device and the fix, and the
lab VM tree (tests/lib/host_critical_tree.py) stays byte-identical."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Tuple

import pytest
from host_critical_tree import lab_vm

MODULE = "pci_driver"
ADDRESS_FIX = "is not a PCI address; write it as DDDD:BB:DD.F or BB:DD.F"
PCI_ID_FIX = "is not vendor:device in hex (like 10de:2330, or 10de:* for a vendor)"
DRIVER_FIX = "is not a kernel driver name (like vfio-pci)"

# (case id, module arguments, fragments the refusal must hold)
CASES: List[Tuple[str, Dict[str, Any], List[str]]] = [
    ("address-traversal", {"addresses": ["../../../etc"]}, ["addresses: '../../../etc'", ADDRESS_FIX]),
    ("address-sysfs-path", {"addresses": ["/sys/bus/pci/devices/0000:01:00.0"]}, ["addresses:", ADDRESS_FIX]),
    ("address-wildcard-function", {"addresses": ["0000:01:00.*"]}, ["'0000:01:00.*'", ADDRESS_FIX]),
    ("address-wildcard", {"addresses": ["*"]}, ["addresses: '*'", ADDRESS_FIX]),
    ("address-short-fields", {"addresses": ["0000:1:0.0"]}, ["'0000:1:0.0'", ADDRESS_FIX]),
    ("address-function-8", {"addresses": ["0000:01:00.8"]}, ["'0000:01:00.8'", ADDRESS_FIX]),
    ("address-shell", {"addresses": ["01:00.0; reboot"]}, ["'01:00.0; reboot'", ADDRESS_FIX]),
    ("address-subshell", {"addresses": ["$(reboot)"]}, ["'$(reboot)'", ADDRESS_FIX]),
    ("address-embedded-newline", {"addresses": ["01:00.0\n02:00.0"]}, [ADDRESS_FIX]),
    ("address-overlong", {"addresses": ["a" * 4096]}, ["addresses: 'aaaa", ADDRESS_FIX]),
    ("address-absent", {"addresses": ["ffff:ff:1f.7"]}, ["no PCI function ffff:ff:1f.7 on this host",
                                                         "see pci_topology_info"]),
    ("address-absent-device", {"addresses": ["0000:01:1f.0"]}, ["no PCI function 0000:01:1f.0"]),
    ("pci-id-not-hex", {"pci_ids": ["zzzz:2330"]}, ["pci_ids: 'zzzz:2330'", PCI_ID_FIX]),
    ("pci-id-vendor-only", {"pci_ids": ["10de"]}, ["pci_ids: '10de'", PCI_ID_FIX]),
    ("pci-id-three-parts", {"pci_ids": ["10de:2330:1"]}, ["'10de:2330:1'", PCI_ID_FIX]),
    ("pci-id-shell", {"pci_ids": ["10de:2330;id"]}, ["'10de:2330;id'", PCI_ID_FIX]),
    ("pci-id-five-digits", {"pci_ids": ["10de:23300"]}, ["'10de:23300'", PCI_ID_FIX]),
    ("pci-id-wildcard-vendor", {"pci_ids": ["*:2330"]}, ["'*:2330'", PCI_ID_FIX]),
    ("role-unknown", {"roles": ["gpu; id"]}, ["roles", "gpu; id"]),
    ("group-not-a-number", {"iommu_groups": ["1; id"]}, ["iommu_groups"]),
    ("group-negative", {"iommu_groups": [-1]}, ["iommu_groups: -1 is not an IOMMU group number"]),
    ("group-absent", {"iommu_groups": [99999]}, ["no IOMMU group 99999 on this host",
                                                 "see /sys/kernel/iommu_groups"]),
    ("driver-traversal", {"addresses": ["05:00.0"], "driver": "../../x"}, ["driver: '../../x'", DRIVER_FIX]),
    ("driver-shell", {"addresses": ["05:00.0"], "driver": "vfio-pci; id"}, ["'vfio-pci; id'", DRIVER_FIX]),
    ("driver-subshell", {"addresses": ["05:00.0"], "driver": "nvme$(id)"}, ["'nvme$(id)'", DRIVER_FIX]),
    ("driver-embedded-newline", {"addresses": ["05:00.0"], "driver": "vfio-pci\nx"}, [DRIVER_FIX]),
    # before: '^...$' with re.match let the trailing newline through, into driverctl.d and the udev rule
    ("driver-trailing-newline", {"addresses": ["05:00.0"], "driver": "vfio-pci\n"}, ["'vfio-pci\\n'", DRIVER_FIX]),
    ("driver-space", {"addresses": ["05:00.0"], "driver": "vfio pci"}, ["'vfio pci'", DRIVER_FIX]),
    # before: a traceback (BindError from load_driver was not caught)
    ("driver-not-loaded-in-tree-check", {"addresses": ["05:00.0"], "driver": "a" * 300, "_ansible_check_mode": True},
     ["driver aaaa", "is not loaded in", "modprobe runs only on the live host (root /)"]),
    # before: a real run wrote the driverctl/udev/helper files naming the driver, then failed on it
    ("driver-not-loaded-in-tree", {"addresses": ["05:00.0"], "driver": "a" * 300},
     ["driver aaaa", "is not loaded in", "modprobe runs only on the live host (root /)", "nothing was changed"]),
    ("driver-not-loaded-nvidia", {"addresses": ["05:00.0"], "driver": "nvidia"},
     ["driver nvidia is not loaded in", "nothing was changed"]),
    ("bindings-driver-traversal", {"bindings": [{"addresses": ["05:00.0"], "driver": "../../x"}]},
     ["bindings[0]: driver: '../../x'", DRIVER_FIX]),
    ("bindings-address-shell", {"bindings": [{"addresses": ["05:00.0"]}, {"addresses": ["01:00.0; reboot"]}]},
     ["bindings[1]: addresses: '01:00.0; reboot'", ADDRESS_FIX]),
    # the module alone: ansible-core's own check of elements: dict refuses it (its message does not name the
    # option); in a task the action plugin refuses it first and names it (test_hostile_entry_mappings.py)
    ("bindings-item-not-a-dict", {"bindings": ["05:00.0"]}, ["dictionary requested, could not parse JSON"]),
    ("bindings-and-top-selection", {"addresses": ["05:00.0"], "bindings": [{"addresses": ["01:00.1"]}]},
     ["give the selection either at the top", "or in each item of bindings, not both"]),
    # the second binding's driver is missing: the first binding's files are not written either
    ("bindings-later-driver-not-loaded", {"bindings": [{"addresses": ["05:00.0"]},
                                                       {"addresses": ["01:00.1"], "driver": "nvidia"}]},
     ["driver nvidia is not loaded in", "nothing was changed"]),
    ("timeout-negative", {"addresses": ["05:00.0"], "timeout": -1}, ["timeout must be more than 0 seconds, not -1"]),
    ("timeout-zero", {"addresses": ["05:00.0"], "timeout": 0}, ["timeout must be more than 0 seconds"]),
    ("allow-wildcard", {"addresses": ["05:00.0"], "allow_host_critical": ["*"]},
     ["allow_host_critical: '*'", ADDRESS_FIX]),
    ("allow-traversal", {"addresses": ["05:00.0"], "allow_host_critical": ["../x"]},
     ["allow_host_critical: '../x'", ADDRESS_FIX]),
    ("nothing-selected", {"addresses": []}, ["no devices selected: give addresses, pci_ids, roles or iommu_groups"]),
    ("host-critical-boot-disk", {"addresses": ["00:03.0"]},
     ["0000:00:03.0", "controls the disk holding /", "allow_host_critical: ['0000:00:03.0']"]),
    ("host-critical-management-nic", {"addresses": ["00:04.0"]},
     ["0000:00:04.0", "carries the default route (interface enp0s4)", "allow_host_critical: ['0000:00:04.0']"]),
    ("host-critical-console-gpu", {"addresses": ["06:00.0"]},
     ["0000:06:00.0", "fbcon draws the active console", "allow_host_critical: ['0000:06:00.0']"]),
    ("host-critical-by-role", {"roles": ["storage"]}, ["host-critical", "allow_host_critical"]),
    ("non-viable-host-bridge", {"addresses": ["00:00.0"]},
     ["IOMMU group 0 is not viable", "a host bridge: the host needs it"]),
    ("bridge-selected", {"addresses": ["00:10.0"]},
     ["0000:00:10.0 is a bridge (driver pcieport): bridges stay with the host", "select the endpoints below it"]),
    ("non-viable-lpc-group", {"addresses": ["00:1f.2"]}, ["IOMMU group 7 is not viable"]),
]


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One lab VM tree for all cases: each case asserts that it left the tree as it found it."""
    return lab_vm(tmp_path_factory.mktemp("pci_driver") / "root")


@pytest.mark.parametrize("args, fragments", [case[1:] for case in CASES], ids=[case[0] for case in CASES])
def test_pci_driver_refuses(refuses, lab: Path, args: Dict[str, Any], fragments: List[str]) -> None:
    refuses(MODULE, dict(args, root=str(lab)), lab, *fragments)
