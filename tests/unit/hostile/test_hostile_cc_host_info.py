"""Hostile host trees against cc_host_info, an info module: it changes nothing, ever, and never crashes. A
corrupt or hostile file (garbage /proc/cpuinfo, junk in kvm_amd/kvm_intel parameters, binary bytes, symlink
loops, links leading outside the root) is reported as what a user gets: the fact unknown or false, with a
reason or a warning naming the file, and the tree byte-identical afterwards (run with diff on)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Callable, Dict, List, Tuple

import pytest
from tree_edits import replace_with_bytes, replace_with_link
from tree_state import changed_entries, tree_state

MODULE = "cc_host_info"
CPUINFO = ("processor\t: 0\nvendor_id\t: AuthenticAMD\ncpu family\t: 25\nmodel\t\t: 17\n"
           "model name\t: AMD EPYC 9124 16-Core Processor\nflags\t\t: fpu svm sev sev_es sev_snp\n\n")
FILES = {
    "proc/cpuinfo": CPUINFO,
    "proc/cmdline": "BOOT_IMAGE=/boot/vmlinuz-6.11.0 root=LABEL=root ro amd_iommu=on\n",
    "proc/sys/kernel/osrelease": "6.11.0\n",
    "proc/meminfo": "MemTotal:       65536000 kB\n",
    "proc/interrupts": "  0:   44   IR-IO-APIC    2-edge      timer\n",
    "sys/module/kvm_amd/parameters/sev": "Y\n",
    "sys/module/kvm_amd/parameters/sev_es": "Y\n",
    "sys/module/kvm_amd/parameters/sev_snp": "Y\n",
    "sys/module/vfio_pci/parameters/ids": "\n",
    "sys/devices/system/node/online": "0\n",
    "sys/devices/system/node/node0/meminfo": "Node 0 MemTotal:       65536000 kB\n",
    "sys/kernel/mm/hugepages/hugepages-2048kB/nr_hugepages": "0\n",
    "sys/kernel/iommu_groups/0/type": "DMA\n",
    "dev/kvm": "",
    "dev/sev": "",
}


def amd_snp_host(root: Path) -> Path:
    """An AMD EPYC host with SEV-SNP enabled in kvm_amd and the IOMMU on (one IOMMU group)."""
    for relative, content in FILES.items():
        (root / relative).parent.mkdir(parents=True, exist_ok=True)
        (root / relative).write_text(content)
    (root / "sys/class/iommu").mkdir(parents=True)
    (root / "sys/devices/virtual/iommu/ivhd0").mkdir(parents=True)
    os.symlink("../../devices/virtual/iommu/ivhd0", root / "sys/class/iommu/ivhd0")
    return root


def write(relative: str, data: bytes) -> Callable[[Path], None]:
    def _write(root: Path) -> None:
        replace_with_bytes(root / relative, data)
    return _write


def loop(relative: str) -> Callable[[Path], None]:
    def _loop(root: Path) -> None:
        replace_with_link(root / relative, (root / relative).name)
    return _loop


def outside(relative: str) -> Callable[[Path], None]:
    """``relative`` made a link to a file beside the root, holding what a real host would (outside root)."""
    def _outside(root: Path) -> None:
        replace_with_link(root / relative, str(root.parent / "outside" / "Y"))
    return _outside


# (case id, change to the tree, what the user must get): the check takes the result and returns nothing,
# asserting on the facts, the reasons and the warnings
Check = Callable[[Dict[str, Any]], None]


def says(*fragments: str) -> Check:
    """Every fragment appears in the user-facing text: the readiness reasons or the warnings."""
    def _check(result: Dict[str, Any]) -> None:
        text = json.dumps({"verdicts": result.get("verdicts"), "warnings": result.get("warnings")})
        for fragment in fragments:
            assert fragment in text, (fragment, text[:3000])
    return _check


def snp_not_ready(*fragments: str) -> Check:
    def _check(result: Dict[str, Any]) -> None:
        assert result["verdicts"]["snp_ready"] is False, result["verdicts"]
        assert result["verdicts"]["snp_ready_reasons"], result["verdicts"]
        says(*fragments)(result)
    return _check


def snp_not_ready_not() -> Check:
    """Junk in a file the SNP verdict does not rest on: the verdict stays as on the clean host (ready)."""
    def _check(result: Dict[str, Any]) -> None:
        assert result["verdicts"]["snp_ready"] is True, result["verdicts"]
        assert result["verdicts"]["snp_ready_reasons"] == [], result["verdicts"]
    return _check


CASES: List[Tuple[str, Callable[[Path], None], Check]]
LOOP = "Too many levels of symbolic links"
CASES = [
    ("cpuinfo-garbage", write("proc/cpuinfo", b"\x00\xff garbage\n:::\n"), snp_not_ready("vendor_id unknown")),
    ("cpuinfo-empty", write("proc/cpuinfo", b""), snp_not_ready("CPU is not AMD (vendor_id unknown)")),
    ("cpuinfo-symlink-loop", loop("proc/cpuinfo"),
     snp_not_ready("vendor_id unknown", "cannot read /proc/cpuinfo: " + LOOP)),
    ("kvm-amd-sev-snp-garbage", write("sys/module/kvm_amd/parameters/sev_snp", b"maybe\xff\n"),
     snp_not_ready("/sys/module/kvm_amd/parameters/sev_snp holds 'maybe", "not Y/N or 1/0; ignored")),
    ("kvm-amd-sev-snp-binary", write("sys/module/kvm_amd/parameters/sev_snp", b"\x00\x01\x02"),
     snp_not_ready("/sys/module/kvm_amd/parameters/sev_snp holds", "not Y/N or 1/0")),
    ("kvm-amd-sev-snp-symlink-loop", loop("sys/module/kvm_amd/parameters/sev_snp"),
     snp_not_ready("cannot read /sys/module/kvm_amd/parameters/sev_snp: " + LOOP)),
    ("kvm-intel-tdx-garbage", write("sys/module/kvm_intel/parameters/tdx", b"\x00\x01"),
     says("/sys/module/kvm_intel/parameters/tdx holds '\\\\x00\\\\x01', not Y/N or 1/0; ignored")),
    ("dev-sev-symlink-loop", loop("dev/sev"), snp_not_ready("/dev/sev is missing")),
    ("osrelease-symlink-loop", loop("proc/sys/kernel/osrelease"),
     says("cannot read /proc/sys/kernel/osrelease: " + LOOP)),
    ("node-online-binary", write("sys/devices/system/node/online", b"0-\xff\n"),
     says("/sys/devices/system/node/online holds", "not a node list; using the node* directories")),
    ("hugepages-garbage", write("sys/kernel/mm/hugepages/hugepages-2048kB/nr_hugepages", b"lots\n"),
     says("/sys/kernel/mm/hugepages/hugepages-2048kB/nr_hugepages holds 'lots', not an integer; ignored")),
    ("iommu-groups-symlink-loop", loop("sys/kernel/iommu_groups"),
     says("cannot list /sys/kernel/iommu_groups: " + LOOP, "/sys/kernel/iommu_groups is empty")),
    ("sys-symlink-loop", loop("sys"),
     snp_not_ready("IOMMU is off", "kvm_amd is not loaded", "cannot list /sys/class/iommu: " + LOOP)),
    ("class-iommu-link-outside-root", outside("sys/class/iommu"),
     says("cannot list /sys/class/iommu: Not a directory")),
    ("acpi-ivrs-binary-junk", write("sys/firmware/acpi/tables/IVRS", b"\xff" * 64), snp_not_ready_not()),
    ("cmdline-binary-unbalanced-quote", write("proc/cmdline", b"\xff\xfe\x00 amd_iommu=\"on\n"),
     snp_not_ready_not()),
    ("interrupts-nul-bytes", write("proc/interrupts", b"\x00" * 100), snp_not_ready_not()),
    ("meminfo-binary", write("proc/meminfo", b"MemTotal: \xff kB\n"), snp_not_ready_not()),
    # a captured tree must not make the controller read its own files: the link is named, not followed
    ("kvm-amd-sev-snp-link-outside-root", outside("sys/module/kvm_amd/parameters/sev_snp"),
     snp_not_ready("/sys/module/kvm_amd/parameters/sev_snp is not read: it is a link to", "outside root")),
]


def run_case(run_module: Callable[[str, Dict[str, Any]], Dict[str, Any]], tmp_path: Path,
             corrupt: Callable[[Path], None], check: Check) -> None:
    top = tmp_path / "host"
    root = amd_snp_host(top / "root")
    (top / "outside").mkdir()
    (top / "outside" / "Y").write_text("Y\n")
    corrupt(root)
    before = tree_state(top)
    result = run_module(MODULE, {"root": str(root), "_ansible_diff": True})
    after = tree_state(top)
    assert after == before, changed_entries(before, after)
    assert result["rc"] == 0 and not result.get("failed") and not result.get("changed"), result
    assert "Traceback" not in json.dumps(result), result
    check(result)


@pytest.mark.parametrize("corrupt, check", [case[1:] for case in CASES], ids=[case[0] for case in CASES])
def test_cc_host_info_reports_and_changes_nothing(run_module, tmp_path: Path, corrupt: Callable[[Path], None],
                                                  check: Check) -> None:
    run_case(run_module, tmp_path, corrupt, check)
