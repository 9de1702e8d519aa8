"""pci_driver's ``bindings``: several selections, each to its own driver, in one run, as a process on lab trees.

The oracle is the module itself run once per binding, in a row, on a copy of the same tree: one run with
``bindings`` must leave the tree exactly as those runs leave it (the lab tree of tests/lib/host_critical_tree.py,
its NVMe VF 01:00.1 and GPU pair 02:00.0/02:00.1 already on vfio-pci so that nothing waits for a kernel).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Dict, List

import pytest
from conftest import REPO

sys.path.insert(0, str(REPO / "tests" / "lib"))
from host_critical_tree import add_kernel_interface, bound_lab, lab_vm, lab_vm_functions, snapshot  # noqa: E402

MODULE = "pci_driver"
RULES = "etc/udev/rules.d/70-confidential-gpu-vfio.rules"
VF = "0000:01:00.1"
GPU = "0000:02:00.0"


def run_all(run_module, root: Path, bindings: List[Dict[str, Any]], **extra: Any) -> Dict[str, Any]:
    return run_module(MODULE, dict({"root": str(root), "bindings": bindings}, **extra))


def test_one_run_leaves_the_tree_as_one_run_per_binding_does(run_module, tmp_path: Path) -> None:
    bindings = [{"addresses": [VF]},
                {"addresses": [GPU], "early_binding": True}]
    in_a_row = bound_lab(tmp_path / "row", vf_driver="vfio-pci")
    for binding in bindings:
        result = run_module(MODULE, dict({"root": str(in_a_row), "initramfs_command": ""}, **binding))
        assert result["rc"] == 0, result
    together = bound_lab(tmp_path / "together", vf_driver="vfio-pci")
    result = run_all(run_module, together, bindings, initramfs_command="", _ansible_diff=True)
    assert result["rc"] == 0 and result["changed"] is True, result
    assert snapshot(together) == snapshot(in_a_row)
    rules = (together / RULES).read_text()
    assert 'KERNEL=="%s"' % VF in rules and 'KERNEL=="%s"' % GPU in rules, "one rule file holds both bindings"
    assert result["files"].count("/" + RULES) == 1 and len(result["diff"]) == len(result["files"])
    assert [(d["address"], d["action"]) for d in result["devices"]] == [
        (VF, "none"), (GPU, "none"), ("0000:02:00.1", "none")]
    assert result["vfio_nodes"] == ["/dev/vfio/11", "/dev/vfio/devices/vfio0", "/dev/vfio/devices/vfio1"]
    again = run_all(run_module, together, bindings, initramfs_command="")
    assert again["changed"] is False and again["files"] == [], again


def test_check_mode_plans_every_binding_and_writes_nothing(run_module, tmp_path: Path) -> None:
    root = lab_vm(tmp_path / "root")
    before = snapshot(root)
    result = run_all(run_module, root, [{"addresses": [VF]}, {"addresses": [GPU]}], _ansible_check_mode=True)
    assert result["rc"] == 0 and result["changed"] is True, result
    assert snapshot(root) == before
    assert [(d["address"], d["driver_before"], d["driver_after"], d["action"]) for d in result["devices"]] == [
        (VF, None, "vfio-pci", "bind"), (GPU, "bochs-drm", "vfio-pci", "bind"),
        ("0000:02:00.1", "snd_hda_intel", "vfio-pci", "bind")]
    assert [group["id"] for group in result["groups"]] == [9, 11]


def test_a_function_two_bindings_give_different_drivers_is_refused(run_module, tmp_path: Path) -> None:
    root = bound_lab(tmp_path / "root", vf_driver="vfio-pci")
    before = snapshot(root)
    result = run_all(run_module, root, [{"addresses": [GPU]}, {"addresses": [GPU], "driver": "pci-stub"}])
    assert result["failed"] is True and [item["kind"] for item in result["refused"]] == ["conflict", "conflict"]
    assert "0000:02:00.0 is in two bindings of this run: an earlier one puts it on vfio-pci, a later one on pci-stub" \
        in result["msg"]
    assert snapshot(root) == before


def test_a_refused_later_binding_keeps_the_earlier_one_from_being_written(run_module, tmp_path: Path) -> None:
    root = lab_vm(tmp_path / "root", lab_vm_functions(vf_driver="vfio-pci"))
    before = snapshot(root)
    result = run_all(run_module, root, [{"addresses": [VF]}, {"addresses": ["00:04.0"]}])
    assert result["failed"] is True and [item["kind"] for item in result["refused"]] == ["host_critical"]
    assert snapshot(root) == before, "the VF's binding is not written either"


@pytest.mark.parametrize(("params", "message"), [
    ({"addresses": [GPU], "bindings": [{"addresses": [VF]}]},
     "give the selection either at the top (addresses, pci_ids, roles, iommu_groups) or in each item of bindings"),
    ({"bindings": [{"addresses": [VF]}, {"addresses": [GPU], "driver": "../x"}]},
     "bindings[1]: driver: '../x' is not a kernel driver name"),
    ({"bindings": [{"driver": "vfio-pci"}]}, "bindings[0]: no devices selected"),
    ({"bindings": [{"addresses": [VF], "early_binding": True, "driver": "mlx5_core"}]},
     "bindings[0]: early_binding needs a driver with an ids= option"),
])
def test_bad_bindings_change_nothing(run_module, tmp_path: Path, params: Dict[str, Any], message: str) -> None:
    root = lab_vm(tmp_path / "root")
    before = snapshot(root)
    result = run_module(MODULE, dict({"root": str(root)}, **params))
    assert result["failed"] is True and message in result["msg"], result
    assert snapshot(root) == before


def test_a_second_early_binding_driver_is_refused(run_module, tmp_path: Path) -> None:
    """The modprobe.d file holds one driver's ids=: a second driver would silently drop the first one's IDs."""
    root = bound_lab(tmp_path / "root", vf_driver="vfio-pci")
    add_kernel_interface(root, ("pci-stub",))
    before = snapshot(root)
    two = [{"addresses": [GPU], "early_binding": True},
           {"addresses": ["05:00.0"], "early_binding": True, "driver": "pci-stub"}]
    result = run_all(run_module, root, two, initramfs_command="")
    expected = ("early binding: /etc/modprobe.d/confidential-gpu-vfio.conf serves one driver and already holds "
                "vfio-pci's ids=; bind these devices to pci-stub at runtime")
    assert result["failed"] is True and expected in result["msg"], result
    assert snapshot(root) == before
    first = run_module(MODULE, dict(two[0], root=str(root), initramfs_command=""))
    assert first["rc"] == 0 and first["changed"] is True, first
    written = snapshot(root)
    second = run_module(MODULE, dict(two[1], root=str(root), initramfs_command=""))
    assert second["failed"] is True and expected in second["msg"], "the same across two runs"
    assert snapshot(root) == written
    runtime_only = dict(two[1], root=str(root), early_binding=False, _ansible_check_mode=True)
    assert run_module(MODULE, runtime_only)["rc"] == 0, "the fix the message names is accepted"


def test_options_a_binding_leaves_out_come_from_the_top(run_module, tmp_path: Path) -> None:
    root = bound_lab(tmp_path / "root", vf_driver="vfio-pci")
    result = run_all(run_module, root, [{"addresses": [VF]}, {"addresses": [GPU], "persist": True}], persist=False)
    assert result["rc"] == 0, result
    assert result["files"] == ["/etc/driverctl.d/pci-0000:02:00.0", "/etc/driverctl.d/pci-0000:02:00.1", "/" + RULES,
                               "/usr/local/libexec/confidential-gpu/pci-override"]
    assert not (root / ("etc/driverctl.d/pci-%s" % VF)).exists(), "persist: false from the top for the VF's binding"
