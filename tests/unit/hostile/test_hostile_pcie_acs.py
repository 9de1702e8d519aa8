"""Hostile input against pcie_acs: each case is refused naming the option, address or port and the fix, and the
lab-like tree of tests/lib/fake_sysfs.py (a GPU at 0000:04:00.0 below a downstream port without ACS) stays
byte-identical, also with runtime_write asked for."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Tuple

import pytest
from fake_sysfs import build_tree, lab_like_host

MODULE = "pcie_acs"
ADDRESS_FIX = "is not DDDD:BB:DD.F or BB:DD.F (hex, like 0000:3b:00.0)"
PCI_ID_FIX = "is not vendor:device in hex (like 10de:2330 or 10de:*)"
FLAGS_FIX = "is not 1 to 7 characters of 0, 1 and x, most significant bit first"
WRITE = {"profile": "confidential", "runtime_write": True}

CASES: List[Tuple[str, Dict[str, Any], List[str]]] = [
    ("address-traversal", {"addresses": ["../../etc"]}, ["address '../../etc'", ADDRESS_FIX]),
    ("address-wildcard", {"addresses": ["*"]}, ["address '*'", ADDRESS_FIX]),
    ("address-wildcard-function", {"addresses": ["0000:04:00.*"]}, ["address '0000:04:00.*'", ADDRESS_FIX]),
    ("address-shell", {"addresses": ["04:00.0;id"]}, ["address '04:00.0;id'", ADDRESS_FIX]),
    ("address-newline", {"addresses": ["04:00.0\n05:00.0"]}, [ADDRESS_FIX]),
    ("address-overlong", {"addresses": ["a" * 3000]}, ["address 'aaaa", ADDRESS_FIX]),
    ("address-short", {"addresses": ["4:0.0"]}, ["address '4:0.0'", ADDRESS_FIX]),
    ("address-absent", {"addresses": ["ffff:ff:1f.7"]},
     ["ffff:ff:1f.7 not found in /sys/bus/pci/devices", "lspci -D lists them"]),
    ("pci-id-not-hex", {"pci_ids": ["zzzz:1"]}, ["pci_id 'zzzz:1'", PCI_ID_FIX]),
    ("pci-id-shell", {"pci_ids": ["10de:*;id"]}, ["pci_id '10de:*;id'", PCI_ID_FIX]),
    ("flags-overlong", {"config_acs_flags": "1111111111"}, ["config_acs_flags '1111111111'", FLAGS_FIX]),
    ("flags-hex", {"config_acs_flags": "0x1d"}, ["config_acs_flags '0x1d'", FLAGS_FIX]),
    ("flags-shell", {"config_acs_flags": "1;id"}, ["config_acs_flags '1;id'", FLAGS_FIX]),
    ("runtime-write-report", {"runtime_write": True}, ["runtime_write needs profile confidential"]),
    ("profile-unknown", {"profile": "secure; id"}, ["profile", "secure; id"]),
    ("p2p-mode-unknown", {"p2p_mode": "all"}, ["p2p_mode", "all"]),
    ("port-without-acs", {"addresses": ["04:00.0"], "profile": "confidential", "fail_on_violation": True},
     ["0000:03:00.0 (downstream_port 104c:8233) above 0000:04:00.0 has no ACS capability"]),
    ("write-address-traversal", dict(WRITE, addresses=["../04:00.0"]), ["address '../04:00.0'", ADDRESS_FIX]),
]


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The lab-like host, for all cases (each asserts that it left the tree as it found it)."""
    return build_tree(tmp_path_factory.mktemp("pcie_acs") / "root", lab_like_host())


@pytest.mark.parametrize("args, fragments", [case[1:] for case in CASES], ids=[case[0] for case in CASES])
def test_pcie_acs_refuses(refuses, lab: Path, args: Dict[str, Any], fragments: List[str]) -> None:
    refuses(MODULE, dict(args, root=str(lab)), lab, *fragments)
