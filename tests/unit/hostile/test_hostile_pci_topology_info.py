"""Hostile input against pci_topology_info and pcie_acs: filters and corrupt sysfs trees are refused naming
the value or file and the fix, and the lab-like tree (tests/lib/fake_sysfs.py) stays byte-identical."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Callable, List, Tuple

import pytest
from fake_sysfs import build_tree, lab_like_host

ADDRESS_FIX = "is not DDDD:BB:DD.F or BB:DD.F (hex, like 0000:3b:00.0)"
PCI_ID_FIX = "is not vendor:device in hex (like 10de:2330 or 10de:*)"

# (case id, option, value, fragments after the module's prefix)
FILTERS: List[Tuple[str, str, str, List[str]]] = [
    ("address-traversal", "addresses", "../../../etc", ["address '../../../etc'", ADDRESS_FIX]),
    ("address-wildcard-function", "addresses", "0000:01:00.*", ["address '0000:01:00.*'", ADDRESS_FIX]),
    ("address-wildcard", "addresses", "*", ["address '*'", ADDRESS_FIX]),
    ("address-short", "addresses", "0000:1:0.0", ["address '0000:1:0.0'", ADDRESS_FIX]),
    ("address-shell", "addresses", "01:00.0; reboot", ["address '01:00.0; reboot'", ADDRESS_FIX]),
    ("address-function-8", "addresses", "0000:01:00.8", ["address '0000:01:00.8'", ADDRESS_FIX]),
    ("address-overlong", "addresses", "a" * 4096, ["address 'aaaa", ADDRESS_FIX]),
    ("address-embedded-newline", "addresses", "01:00.0\n02:00.0", ["address '01:00.0\\n02:00.0'", ADDRESS_FIX]),
    ("address-empty-domain", "addresses", ":01:00.0", ["address ':01:00.0'", ADDRESS_FIX]),
    ("address-nul", "addresses", "01:00.0\x00", ["address '01:00.0\\x00'", ADDRESS_FIX]),
    ("address-two", "addresses", "01:00.0 02:00.0", ["address '01:00.0 02:00.0'", ADDRESS_FIX]),
    ("pci-id-wildcard-vendor", "pci_ids", "*:2330", ["pci_id '*:2330'", PCI_ID_FIX]),
    ("pci-id-two", "pci_ids", "10de:2330 10de:2331", ["pci_id '10de:2330 10de:2331'", PCI_ID_FIX]),
    ("pci-id-traversal", "pci_ids", "../10de:2330", ["pci_id '../10de:2330'", PCI_ID_FIX]),
    ("pci-id-subshell", "pci_ids", "10de:$(id)", ["pci_id '10de:$(id)'", PCI_ID_FIX]),
    ("pci-id-not-hex", "pci_ids", "zzzz:2330", ["pci_id 'zzzz:2330'", PCI_ID_FIX]),
    ("pci-id-vendor-only", "pci_ids", "10de", ["pci_id '10de'", PCI_ID_FIX]),
    ("pci-id-three-parts", "pci_ids", "10de:2330:1", ["pci_id '10de:2330:1'", PCI_ID_FIX]),
    ("pci-id-shell", "pci_ids", "10de:2330;id", ["pci_id '10de:2330;id'", PCI_ID_FIX]),
    ("pci-id-five-digits", "pci_ids", "10de:23300", ["pci_id '10de:23300'", PCI_ID_FIX]),
]


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("topology") / "root"
    build_tree(root, lab_like_host())
    return root


@pytest.mark.parametrize("module, prefix", [("pci_topology_info", "invalid filter: "),
                                            ("pcie_acs", "invalid input: ")])
@pytest.mark.parametrize("option, value, fragments", [case[1:] for case in FILTERS],
                         ids=[case[0] for case in FILTERS])
def test_filter_refused(refuses, lab: Path, module: str, prefix: str, option: str, value: str,
                        fragments: List[str]) -> None:
    refuses(module, {"root": str(lab), option: [value]}, lab, prefix + fragments[0], *fragments[1:])


def sys_loop(root: Path) -> None:
    shutil.rmtree(root / "sys")
    os.symlink("sys", root / "sys")


def devices_loop(root: Path) -> None:
    devices = root / "sys/bus/pci/devices"
    shutil.rmtree(devices)
    os.symlink("devices", devices)


# corrupt trees: (case id, change, fragments)
TREES: List[Tuple[str, Callable[[Path], None], List[str]]] = [
    ("sys-symlink-loop", sys_loop, ["/sys/bus/pci/devices"]),
    ("devices-symlink-loop", devices_loop, ["/sys/bus/pci/devices"]),
]


@pytest.mark.parametrize("corrupt, fragments", [case[1:] for case in TREES], ids=[case[0] for case in TREES])
def test_topology_refuses_corrupt_tree(refuses, lab: Path, tmp_path: Path, corrupt: Callable[[Path], None],
                                       fragments: List[str]) -> None:
    top = tmp_path / "host"
    shutil.copytree(lab, top / "root", symlinks=True)
    corrupt(top / "root")
    refuses("pci_topology_info", {"root": str(top / "root")}, top, *fragments)
