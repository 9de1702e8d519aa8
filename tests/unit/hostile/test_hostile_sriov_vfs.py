"""Hostile input against sriov_vfs: each case is refused naming the PF, option or file and the fix, and the
lab tree (tests/lib/fake_sriov.py: an NVMe PF 0000:01:00.0 with sriov_totalvfs 4) stays byte-identical."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any, Callable, Dict, List, Tuple

import pytest
from fake_sriov import LAB_PF, lab_tree
from tree_edits import replace_with_link

MODULE = "sriov_vfs"
PF_DIR = "sys/bus/pci/devices/%s" % LAB_PF
ADDRESS_FIX = "is not a PCI address; give it as DDDD:BB:DD.F, like 0000:01:00.0"
UNIT_FIX = "give a systemd service name (letters, digits, ':', '_', '.', '-') ending in .service"
ONE_VF = [{"address": "01:00.0", "num_vfs": 1}]

CASES: List[Tuple[str, Dict[str, Any], List[str]]] = [
    ("num-vfs-negative", {"pfs": [{"address": "01:00.0", "num_vfs": -1}]},
     ["pfs[0].num_vfs -1 for 0000:01:00.0: give a whole number from 0 to 65535"]),
    ("num-vfs-above-total", {"pfs": [{"address": "01:00.0", "num_vfs": 5}]},
     ["5 VFs asked for, but its sriov_totalvfs is 4; ask for at most 4"]),
    ("num-vfs-huge", {"pfs": [{"address": "01:00.0", "num_vfs": 2 ** 40}]},
     ["pfs[0].num_vfs 1099511627776", "give a whole number from 0 to 65535"]),
    ("num-vfs-65536", {"pfs": [{"address": "01:00.0", "num_vfs": 65536}]}, ["give a whole number from 0 to 65535"]),
    ("address-traversal", {"pfs": [{"address": "../01:00.0", "num_vfs": 1}]}, ["'../01:00.0'", ADDRESS_FIX]),
    ("address-wildcard", {"pfs": [{"address": "01:00.*", "num_vfs": 1}]}, ["'01:00.*'", ADDRESS_FIX]),
    ("address-shell", {"pfs": [{"address": "01:00.0;id", "num_vfs": 1}]}, ["'01:00.0;id'", ADDRESS_FIX]),
    ("address-overlong", {"pfs": [{"address": "0" * 2048, "num_vfs": 1}]}, ["pfs[0].address '0000", ADDRESS_FIX]),
    ("address-not-a-pf", {"pfs": [{"address": "00:03.0", "num_vfs": 1}]},
     ["0000:00:03.0: no such PCI device", "sriov is not null in confidential_gpu.host.pci_topology_info"]),
    ("address-twice", {"pfs": [{"address": "01:00.0", "num_vfs": 1}, {"address": "0000:01:00.0", "num_vfs": 2}]},
     ["0000:01:00.0"]),
    ("autoprobe-not-a-bool", {"pfs": [{"address": "01:00.0", "num_vfs": 1, "drivers_autoprobe": "maybe"}]},
     ["drivers_autoprobe"]),
    ("unit-trailing-newline", {"pfs": ONE_VF, "unit_name": "x.service\n"}, ["unit_name 'x.service\\n'", UNIT_FIX]),
    ("unit-traversal", {"pfs": ONE_VF, "unit_name": "../x.service"}, ["unit_name '../x.service'", UNIT_FIX]),
    ("unit-shell", {"pfs": ONE_VF, "unit_name": "x;id.service"}, ["unit_name 'x;id.service'", UNIT_FIX]),
    ("unit-space", {"pfs": ONE_VF, "unit_name": "x.service x"}, ["unit_name 'x.service x'", UNIT_FIX]),
    ("unit-not-a-service", {"pfs": ONE_VF, "unit_name": "x.timer"}, ["unit_name 'x.timer'", UNIT_FIX]),
    # before: accepted; systemd refuses unit names over 255 bytes
    ("unit-overlong", {"pfs": ONE_VF, "unit_name": "a" * 300 + ".service"}, ["unit_name 'aaaa", UNIT_FIX]),
    ("timeout-negative", {"pfs": ONE_VF, "timeout": -1}, ["timeout -1: give a number of seconds above 0"]),
    ("timeout-zero", {"pfs": ONE_VF, "timeout": 0}, ["timeout 0: give a number of seconds above 0"]),
    # before: accepted and waited up to 31 years per write; 1e9 arrives as the integer 1000000000
    ("timeout-1e9", {"pfs": ONE_VF, "timeout": 1e9}, ["timeout 1000000000", "at most 3600 (one hour)"]),
    ("timeout-3601", {"pfs": ONE_VF, "timeout": 3601}, ["timeout 3601", "at most 3600 (one hour)"]),
]


def garble(text: str) -> Callable[[Path], None]:
    def _write(root: Path) -> None:
        (root / PF_DIR / "sriov_totalvfs").write_text(text)
    return _write


def loop(root: Path) -> None:
    replace_with_link(root / PF_DIR / "sriov_numvfs", "sriov_numvfs")


def link_out(name: str) -> Callable[[Path], None]:
    """The PF's ``name`` attribute made a link to a file beside the root (outside it)."""
    def _link(root: Path) -> None:
        replace_with_link(root / PF_DIR / name, str(root.parent / "outside" / "totalvfs"))
    return _link


def pf_dir_out(root: Path) -> None:
    """The PF's device directory made a link to a copy of it beside the root: every attribute leads out."""
    device = root / PF_DIR
    real = device.resolve()
    shutil.copytree(real, root.parent / "outside" / "pf", symlinks=True)
    replace_with_link(device, str(root.parent / "outside" / "pf"))


# corrupt trees: (case id, change to the lab tree, fragments)
TREES: List[Tuple[str, Callable[[Path], None], List[str]]] = [
    ("totalvfs-garbage", garble("lots\n"), ["sriov_totalvfs", "0000:01:00.0"]),
    ("totalvfs-negative", garble("-4\n"), ["sriov_totalvfs", "0000:01:00.0"]),
    ("totalvfs-empty", garble(""), ["sriov_totalvfs", "0000:01:00.0"]),
    ("totalvfs-binary", garble("\x00\xff\n"), ["sriov_totalvfs", "0000:01:00.0"]),
    ("numvfs-symlink-loop", loop, ["sriov_numvfs", "0000:01:00.0"]),
    # before: read (and wrote) the file outside the root through these links
    ("numvfs-link-outside-root", link_out("sriov_numvfs"),
     ["0000:01:00.0: /sys/bus/pci/devices/0000:01:00.0/sriov_numvfs is a symbolic link to", "outside root",
      "Fix or remove the link"]),
    ("totalvfs-link-outside-root", link_out("sriov_totalvfs"),
     ["sriov_totalvfs is a symbolic link to", "outside root", "Fix or remove the link"]),
    ("autoprobe-link-outside-root", link_out("sriov_drivers_autoprobe"),
     ["sriov_drivers_autoprobe is a symbolic link to", "outside root"]),
    ("pf-device-link-outside-root", pf_dir_out,
     ["0000:01:00.0: /sys/bus/pci/devices/0000:01:00.0 is a symbolic link to", "outside root"]),
]


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One lab tree for the argument cases: each case asserts that it left the tree as it found it."""
    return lab_tree(tmp_path_factory.mktemp("sriov") / "root")


@pytest.mark.parametrize("args, fragments", [case[1:] for case in CASES], ids=[case[0] for case in CASES])
def test_sriov_vfs_refuses(refuses, lab: Path, args: Dict[str, Any], fragments: List[str]) -> None:
    refuses(MODULE, dict(args, root=str(lab), timeout=args.get("timeout", 5)), lab, *fragments)


@pytest.mark.parametrize("corrupt, fragments", [case[1:] for case in TREES], ids=[case[0] for case in TREES])
def test_sriov_vfs_refuses_corrupt_tree(refuses, lab: Path, tmp_path: Path, corrupt: Callable[[Path], None],
                                        fragments: List[str]) -> None:
    top = tmp_path / "host"
    shutil.copytree(lab, top / "root", symlinks=True)
    (top / "outside").mkdir()
    (top / "outside" / "totalvfs").write_text("64\n")
    corrupt(top / "root")
    refuses(MODULE, {"root": str(top / "root"), "timeout": 5, "pfs": ONE_VF}, top, *fragments)
