"""pci_topology_info run as a module process: real host, fake trees, bad input."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO, warning_text

sys.path.insert(0, str(REPO / "tests" / "lib"))
from fake_sysfs import ConfigBuilder, FakeFunction, ServerShape, build_tree, gpu_server  # noqa: E402
from lspci_oracle import mismatches, parse_lspci, run_lspci  # noqa: E402

MODULE = "pci_topology_info"


@pytest.mark.skipif(not os.path.isdir("/sys/bus/pci/devices"), reason="this machine has no PCI sysfs")
@pytest.mark.skipif(shutil.which("lspci") is None, reason="lspci missing: run ./scripts/setup")
def test_real_host_agrees_with_lspci(run_module) -> None:
    result = run_module(MODULE, {})
    assert result["rc"] == 0 and result["changed"] is False, result
    assert result["summary"]["functions"] == len(os.listdir("/sys/bus/pci/devices"))
    ours = {dev["address"]: dev for dev in result["devices"]}
    assert mismatches(ours, parse_lspci(run_lspci())) == []
    for dev in result["devices"]:
        real = os.path.realpath("/sys/bus/pci/devices/" + dev["address"])
        assert real.endswith("/".join(dev["path"]))


def test_check_mode_reports_the_same(run_module, tmp_path: Path) -> None:
    build_tree(tmp_path / "host", gpu_server(ServerShape(gpus=2, sockets=1)))
    normal = run_module(MODULE, {"root": str(tmp_path / "host")})
    checked = run_module(MODULE, {"root": str(tmp_path / "host"), "_ansible_check_mode": True})
    assert normal["rc"] == checked["rc"] == 0
    assert normal["devices"] == checked["devices"] and checked["changed"] is False
    assert normal["summary"] == {"functions": 13, "gpus": 2, "nvswitches": 0, "nics": 2, "iommu_groups": 13,
                                 "groups_not_viable": 0, "host_critical": 0, "groups_host_critical": 0}


def test_filters(run_module, tmp_path: Path) -> None:
    build_tree(tmp_path / "host", gpu_server(ServerShape(gpus=2, nvswitches=1, sockets=1)))
    result = run_module(MODULE, {"root": str(tmp_path / "host"), "roles": ["gpu"], "pci_ids": ["10de:2330"],
                                 "addresses": ["00:00.0", "0000:03:00.0", "0000:07:00.0"]})
    assert [dev["address"] for dev in result["devices"]] == ["0000:03:00.0", "0000:07:00.0"]
    assert [group["id"] for group in result["iommu_groups"]] == [dev["iommu_group"] for dev in result["devices"]]


def test_missing_root_fails_clearly(run_module, tmp_path: Path) -> None:
    result = run_module(MODULE, {"root": str(tmp_path / "nowhere")})
    assert result["rc"] != 0 and result["failed"] is True
    assert str(tmp_path / "nowhere") in result["msg"] and "root" in result["msg"]


@pytest.mark.parametrize("args, named", [
    ({"addresses": ["3b:00"]}, "3b:00"),
    ({"pci_ids": ["10de"]}, "10de"),
    ({"pci_ids": ["nvidia:*"]}, "nvidia:*"),
])
def test_bad_filters_fail_and_name_the_value(run_module, tmp_path: Path, args, named: str) -> None:
    result = run_module(MODULE, dict(args, root=str(tmp_path)))
    assert result["rc"] != 0 and named in result["msg"]


def test_bad_role_is_refused(run_module, tmp_path: Path) -> None:
    result = run_module(MODULE, {"root": str(tmp_path), "roles": ["fpga"]})
    assert result["rc"] != 0 and "fpga" in result["msg"]


def test_short_and_unreadable_config_give_partial_data_and_warnings(run_module, tmp_path: Path) -> None:
    gpu = ConfigBuilder(0x10DE, 0x2330, 0x030200).express("endpoint", 32.0, 16)
    short = FakeFunction("0000:01:00.0", gpu.bytes(64), iommu_group=1)
    broken = FakeFunction("0000:02:00.0", gpu.bytes(), iommu_group=2)
    root = build_tree(tmp_path / "host", [short, broken])
    config = root / "sys/bus/pci/devices/0000:02:00.0/config"
    config.unlink()
    config.mkdir()  # reading it fails even for root
    (root / "sys/bus/pci/devices/0000:02:00.0/class").write_text("banana\n")
    result = run_module(MODULE, {"root": str(root)})
    assert result["rc"] == 0, result
    devices = {dev["address"]: dev for dev in result["devices"]}
    assert devices["0000:01:00.0"]["role"] == "gpu" and devices["0000:01:00.0"]["pcie"] is None
    assert devices["0000:02:00.0"]["vendor_id"] == "10de" and devices["0000:02:00.0"]["class_id"] is None
    warnings = "\n".join(result["warnings"])
    assert "config space of 1 function(s) readable only in part (not root?): 0000:01:00.0 (64 bytes)" in warnings
    assert "0000:02:00.0: cannot read" in warnings
    assert "0000:02:00.0" in warnings and "banana" in warnings


def test_garbage_numa_node_warns_for_that_device(run_module, tmp_path: Path) -> None:
    nic = ConfigBuilder(0x15B3, 0x1021, 0x020000).express("endpoint", 32.0, 16)
    root = build_tree(tmp_path / "host", [FakeFunction("0000:41:00.0", nic.bytes(), numa_node="zero"),
                                          FakeFunction("0000:42:00.0", nic.bytes(), numa_node="1")])
    result = run_module(MODULE, {"root": str(root)})
    assert result["rc"] == 0
    assert [dev["numa_node"] for dev in result["devices"]] == [None, 1]
    assert any("0000:41:00.0: " in warning and "numa_node" in warning and "zero" in warning
               for warning in result["warnings"])


def nobody_can_run_modules() -> str:
    """Why the module cannot be run as an unprivileged user here ('' when it can)."""
    if os.geteuid() != 0:
        return "needs root to switch to user nobody"
    if shutil.which("runuser") is None or not os.path.exists("/usr/bin/python3"):
        return "needs runuser and /usr/bin/python3"
    probe = subprocess.run(["runuser", "-u", "nobody", "--", "test", "-r", str(REPO / "plugins/modules")],
                           check=False)
    return "" if probe.returncode == 0 else "the checkout is not readable by user nobody"


@pytest.mark.skipif(not os.path.isdir("/sys/bus/pci/devices"), reason="this machine has no PCI sysfs")
def test_real_host_as_non_root_gives_identity_and_one_warning(run_module) -> None:
    """The kernel gives a non-root reader 64 bytes of config space: partial data, one warning, no crash."""
    why = nobody_can_run_modules()
    if why:
        pytest.skip(why)
    as_root = run_module(MODULE, {})
    venv_site = next(iter(Path(sys.prefix).glob("lib/python3*/site-packages")))
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": "%s:%s" % (venv_site, REPO / ".collections")}
    proc = subprocess.run(["runuser", "-u", "nobody", "--", "env", *("%s=%s" % item for item in env.items()),
                           "/usr/bin/python3", str(REPO / "plugins/modules/pci_topology_info.py")],
                          input=json.dumps({"ANSIBLE_MODULE_ARGS": {}}), capture_output=True, text=True, timeout=120,
                          check=False)
    assert proc.returncode == 0 and proc.stdout.strip(), proc.stdout + proc.stderr
    result = json.loads(proc.stdout)
    mine = {dev["address"]: dev for dev in result["devices"]}
    assert sorted(mine) == sorted(dev["address"] for dev in as_root["devices"])
    for dev in as_root["devices"]:
        seen = mine[dev["address"]]
        assert (seen["vendor_id"], seen["class_id"]) == (dev["vendor_id"], dev["class_id"])
        assert seen["pcie"] is None
    texts = [warning_text(warning) for warning in result["warnings"]]
    assert len(texts) == 1 and "readable only in part (not root?)" in texts[0] and "run the module as root" in texts[0]


def test_discovery_names_host_critical_functions_and_groups(run_module, tmp_path: Path) -> None:
    """The lab VM tree of tests/lib/host_critical_tree.py: / on virtio-blk 00:03.0, the default route on
    virtio-net 00:04.0, fbcon's fb0 on virtio-gpu 06:00.0.  Discovery says so per function and per group, in
    the very words pci_driver refuses them with (one implementation, host_critical.py)."""
    from host_critical_tree import lab_vm

    root = lab_vm(tmp_path / "lab")
    result = run_module(MODULE, {"root": str(root)})
    assert result["rc"] == 0, result
    devices = {dev["address"]: dev for dev in result["devices"]}
    kinds = {address: [entry["kind"] for entry in dev["host_critical"]]
             for address, dev in devices.items() if dev["host_critical"]}
    assert kinds == {"0000:00:03.0": ["boot_disk"], "0000:00:04.0": ["default_route"], "0000:06:00.0": ["console"]}
    groups = {group["id"]: group for group in result["iommu_groups"]}
    assert groups[14]["viable"] is True, "VFIO could take the group; the host would lose its console"
    assert [(entry["address"], entry["kind"]) for entry in groups[14]["host_critical"]] == [("0000:06:00.0", "console")]
    assert groups[11]["host_critical"] == [], "fb1 on the bochs display is not a console"
    assert (result["summary"]["host_critical"], result["summary"]["groups_host_critical"]) == (3, 3)
    refused = run_module("pci_driver", {"root": str(root), "addresses": sorted(kinds), "driver": "vfio-pci",
                                        "_ansible_check_mode": True})
    said = {item["address"]: item["reason"] for item in refused["refused"] if item["kind"] == "host_critical"}
    assert sorted(said) == sorted(kinds)
    for address, text in said.items():
        reasons = [entry["reason"] for entry in devices[address]["host_critical"]]
        assert text.endswith("is host-critical: " + "; ".join(reasons))


def test_discovery_filters_keep_host_critical(run_module, tmp_path: Path) -> None:
    from host_critical_tree import lab_vm

    root = lab_vm(tmp_path / "lab")
    result = run_module(MODULE, {"root": str(root), "addresses": ["00:04.0"]})
    assert [dev["host_critical"][0]["reason"] for dev in result["devices"]] == [
        "it carries the default route (interface enp0s4)"]
    assert result["iommu_groups"][0]["host_critical"][0]["kind"] == "default_route"


def test_a_sys_that_is_a_symlink_loop_fails_and_names_it(run_module, tmp_path: Path) -> None:
    """It used to return ok with no device at all (and only a warning), as if the host had no PCI."""
    root = tmp_path / "root"
    root.mkdir()
    (root / "sys").symlink_to("sys")
    result = run_module(MODULE, {"root": str(root)})
    assert result["failed"] is True, result
    assert "cannot list /sys/bus/pci/devices below %s: Too many levels of symbolic links" % root in result["msg"]
