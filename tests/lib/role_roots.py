"""The fake root (and controller folders) of each role, for tests that run a role's entry point on this machine.

``ROLE_ROOTS[role](folder)`` builds the role's host tree below ``folder`` and returns the variables that point
the role at it (its ``<role>_root`` and the like). The hostile-input tests (tests/unit/hostile/test_hostile_role_*)
run their cases on these roots, and tests/unit/roles/test_survey_inputs.py runs every role's entry point on them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Dict

from fake_sriov import lab_tree
from gpu_cc_lab import fake_host
from host_critical_tree import lab_vm
from hugepages_tree import HugepagesTree
from prepare_run import prepared_lab

# kernel_args reads these instead of the host's facts: an SNP-capable AMD host.
AMD_SNP_HOST = {"cpu": {"vendor": "amd", "vendor_id": "AuthenticAMD", "cc_support": {"snp": True}},
                "iommu": {"acpi_table": "IVRS"}}


def attestation(folder: Path) -> Dict[str, Any]:
    (folder / "out").mkdir()
    return {"attestation_output_dir": str(folder / "out"), "attestation_work_dir": str(folder / "work")}


def capture(folder: Path) -> Dict[str, Any]:
    """The lab VM after prepare (the host of tests/unit/test_capture_playbook.py, without its TDX facts)."""
    return {"capture_root": str(prepared_lab(folder / "root")), "capture_dir": str(folder / "captures")}


def cc_host(folder: Path) -> Dict[str, Any]:
    """An AMD host tree without SEV-SNP firmware."""
    (folder / "root" / "proc").mkdir(parents=True)
    return {"cc_host_root": str(folder / "root")}


def discovery(folder: Path) -> Dict[str, Any]:
    return {"discovery_root": str(lab_vm(folder / "root"))}


def gpu_cc_mode(folder: Path) -> Dict[str, Any]:
    fake_host(folder / "root", 1)
    return {"gpu_cc_mode_root": str(folder / "root"), "gpu_cc_mode_release_dir": str(folder / "releases")}


def hugepages(folder: Path) -> Dict[str, Any]:
    return {"hugepages_root": str(HugepagesTree(folder / "root").root)}


def kata(folder: Path) -> Dict[str, Any]:
    (folder / "root").mkdir()
    return {"kata_root": str(folder / "root")}


def kernel_args(folder: Path) -> Dict[str, Any]:
    (folder / "root").mkdir()
    return {"kernel_args_root": str(folder / "root"), "kernel_args_host_facts": AMD_SNP_HOST}


def pcie_acs(folder: Path) -> Dict[str, Any]:
    return {"pcie_acs_root": str(lab_vm(folder / "root"))}


def reboot(folder: Path) -> Dict[str, Any]:
    return {}


def sriov(folder: Path) -> Dict[str, Any]:
    return {"sriov_root": str(lab_tree(folder / "root"))}


def validate(folder: Path) -> Dict[str, Any]:
    """The lab VM after prepare's reboot, no boot tools on the command path."""
    root = prepared_lab(folder / "root")
    return {"validate_root": str(root), "cc_host_technology": "none", "vfio_addresses": ["0000:02:00.0"],
            "kernel_args_command_path": [str(folder / "no-tools")]}


def validate_with_link(folder: Path) -> Dict[str, Any]:
    """``validate``'s root, and beside it ``link``, a link to the folder ``elsewhere``."""
    variables = validate(folder)
    (folder / "link").symlink_to(folder / "elsewhere", target_is_directory=True)
    (folder / "elsewhere").mkdir()
    return variables


def vfio(folder: Path) -> Dict[str, Any]:
    return {"vfio_root": str(lab_vm(folder / "root"))}


ROLE_ROOTS: Dict[str, Callable[[Path], Dict[str, Any]]] = {
    build.__name__: build for build in (attestation, capture, cc_host, discovery, gpu_cc_mode, hugepages, kata,
                                        kernel_args, pcie_acs, reboot, sriov, validate, vfio)}
