"""pci_driver run as a process, the way a host runs it, and the vfio role, on fake lab trees.

The lab VM's tree (tests/lib/host_critical_tree.py): / on virtio-blk 00:03.0,
the default route on virtio-net 00:04.0, the console on virtio-gpu 06:00.0,
the GPU stand-in 02:00.0 + 02:00.1 in group 11.  A tree has no kernel: the
runs that must finish bind nothing at runtime (the devices already show
vfio-pci), and those that must bind show the sysfs writes and the time limit.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any, Dict

import pytest
from conftest import REPO

sys.path.insert(0, str(REPO / "tests" / "lib"))
from host_critical_tree import (  # noqa: E402
    bound_lab,
    device_dir,
    lab_vm,
    lab_vm_functions,
    shared_group_functions,
    snapshot,
)

MODULE = "pci_driver"
HELPER = "usr/local/libexec/confidential-gpu/pci-override"
RULES = "etc/udev/rules.d/70-confidential-gpu-vfio.rules"
MODPROBE = "etc/modprobe.d/confidential-gpu-vfio.conf"


def args(root: Path, **extra: Any) -> Dict[str, Any]:
    return dict({"root": str(root)}, **extra)


def test_check_mode_returns_the_plan_and_writes_nothing(run_module, tmp_path: Path) -> None:
    root = lab_vm(tmp_path / "root")
    before = snapshot(root)
    result = run_module(MODULE, args(root, addresses=["02:00.0"], early_binding=True, _ansible_check_mode=True,
                                     _ansible_diff=True))
    assert result["rc"] == 0 and result["changed"] is True, result
    assert snapshot(root) == before
    assert [(d["address"], d["driver_before"], d["driver_after"], d["action"]) for d in result["devices"]] == [
        ("0000:02:00.0", "bochs-drm", "vfio-pci", "bind"), ("0000:02:00.1", "snd_hda_intel", "vfio-pci", "bind")]
    assert result["files"] == ["/etc/driverctl.d/pci-0000:02:00.0", "/etc/driverctl.d/pci-0000:02:00.1",
                               "/" + MODPROBE, "/" + RULES, "/" + HELPER]
    assert result["diff"][0] == {"before": "", "after": "vfio-pci\n",
                                 "before_header": "/etc/driverctl.d/pci-0000:02:00.0 (absent)",
                                 "after_header": "/etc/driverctl.d/pci-0000:02:00.0"}
    assert result["vfio_nodes"] == [] and result["initramfs_updated"] is False and result["refused"] == []
    assert any("root is %s: the initramfs is not updated" % root in w for w in result["warnings"])


@pytest.mark.parametrize(("params", "kind", "words"), [
    ({"addresses": ["00:04.0"]}, "host_critical", "carries the default route (interface enp0s4)"),
    ({"addresses": ["00:1f.2"]}, "not_viable", "0000:00:1f.0 (driver lpc_ich): an ISA/LPC bridge"),
    ({"addresses": ["00:1f.3"], "whole_group": False}, "not_viable", "0000:00:1f.3 (driver i801_smbus)"),
    ({"addresses": ["00:03.0"]}, "host_critical", "controls the disk holding / (/dev/vda1)"),
    ({"addresses": ["06:00.0"]}, "host_critical", "fbcon draws the active console on its framebuffer fb0"),
])
def test_refusals_fail_clearly_and_change_nothing(run_module, tmp_path: Path, params: Dict[str, Any], kind: str,
                                                  words: str) -> None:
    root = lab_vm(tmp_path / "root")
    before = snapshot(root)
    result = run_module(MODULE, args(root, **params))
    assert result["rc"] != 0 and result["failed"] is True
    assert result["msg"].startswith("refused, nothing was changed: ") and words in result["msg"]
    assert [item["kind"] for item in result["refused"]] == [kind]
    assert snapshot(root) == before


def test_refusals_are_all_reported_at_once(run_module, tmp_path: Path) -> None:
    root = lab_vm(tmp_path / "root")
    result = run_module(MODULE, args(root, addresses=["00:04.0", "00:1f.3", "02:00.0"]))
    assert sorted(item["kind"] for item in result["refused"]) == ["host_critical", "not_viable"]
    assert not (root / RULES).exists(), "the viable GPU pair is not bound either"


def test_persistent_files_then_idempotent(run_module, tmp_path: Path) -> None:
    root = bound_lab(tmp_path / "root")
    first = run_module(MODULE, args(root, addresses=["02:00.0"]))
    assert first["rc"] == 0 and first["changed"] is True, first
    assert "diff" not in first
    assert {d["action"] for d in first["devices"]} == {"none"}
    assert first["vfio_nodes"] == ["/dev/vfio/11", "/dev/vfio/devices/vfio0", "/dev/vfio/devices/vfio1"]
    assert (root / "etc/driverctl.d/pci-0000:02:00.1").read_text() == "vfio-pci\n"
    assert (root / HELPER).stat().st_mode & 0o777 == 0o755
    assert 'KERNEL=="0000:02:00.1", RUN+="/%s $kernel"' % HELPER in (root / RULES).read_text()
    assert not (root / MODPROBE).exists()
    before = snapshot(root)
    second = run_module(MODULE, args(root, addresses=["02:00.0"], _ansible_diff=True))
    assert second["changed"] is False and second["files"] == [] and second["diff"] == []
    assert snapshot(root) == before


@pytest.mark.parametrize("umask", [0o000, 0o077])
def test_created_directories_and_files_have_their_modes_whatever_the_umask(
        run_module, tmp_path: Path, umask: int) -> None:
    """Issue 17 point 7: under umask 000 usr/local/libexec and etc/udev came out 0777 (os.makedirs gives
    parents 0777 & ~umask); the udev helper that root runs lives there."""
    root = bound_lab(tmp_path / "root")
    dirs_before = {p for p in root.rglob("*") if p.is_dir()}
    files_before = {p for p in root.rglob("*") if not p.is_dir()}
    old = os.umask(umask)
    try:
        result = run_module(MODULE, args(root, addresses=["02:00.0"], early_binding=True))
    finally:
        os.umask(old)
    assert result["rc"] == 0 and result["changed"] is True, result
    created_dirs = {str(p.relative_to(root)): p.stat().st_mode & 0o7777
                    for p in root.rglob("*") if p.is_dir() and p not in dirs_before}
    assert {"usr/local/libexec", "usr/local/libexec/confidential-gpu", "etc/udev", "etc/udev/rules.d"} <= set(
        created_dirs), created_dirs
    assert created_dirs == {path: 0o755 for path in created_dirs}
    created_files = {str(p.relative_to(root)): p.stat().st_mode & 0o7777
                     for p in root.rglob("*") if not p.is_dir() and p not in files_before}
    assert created_files == {HELPER: 0o755, RULES: 0o644, MODPROBE: 0o644, "etc/driverctl.d/pci-0000:02:00.0": 0o644,
                             "etc/driverctl.d/pci-0000:02:00.1": 0o644}


def test_absent_removes_the_overrides(run_module, tmp_path: Path) -> None:
    bound = bound_lab(tmp_path / "bound")
    assert run_module(MODULE, args(bound, addresses=["02:00.0"], early_binding=True,
                                   initramfs_command=""))["changed"] is True
    root = lab_vm(tmp_path / "root")
    for part in ("etc", "usr"):
        shutil.copytree(bound / part, root / part, dirs_exist_ok=True)
    (root / "etc/driverctl.d/pci-0000:01:00.1").write_text("vfio-pci\n")
    gone = run_module(MODULE, args(root, addresses=["02:00.0"], state="absent", initramfs_command=""))
    assert gone["rc"] == 0 and gone["changed"] is True, gone
    assert {d["action"] for d in gone["devices"]} == {"none"}, "the kernel already gave them back"
    assert sorted(gone["files"]) == sorted(["/etc/driverctl.d/pci-0000:02:00.0", "/etc/driverctl.d/pci-0000:02:00.1",
                                            "/" + MODPROBE, "/" + RULES, "/" + HELPER])
    assert not (root / RULES).exists() and not (root / MODPROBE).exists()
    assert (root / "etc/driverctl.d/pci-0000:01:00.1").exists(), "not selected, not touched"
    again = run_module(MODULE, args(root, addresses=["02:00.0"], state="absent"))
    assert again["changed"] is False


def test_runtime_binding_on_a_tree_writes_the_sequence_and_times_out(run_module, tmp_path: Path) -> None:
    root = lab_vm(tmp_path / "root")
    result = run_module(MODULE, args(root, addresses=["05:00.0"], timeout=1))
    assert result["failed"] is True
    assert result["msg"].startswith("0000:05:00.0: not bound to vfio-pci within 1 s (driver now: none); the kernel "
                                    "log (dmesg) says why the probe failed. The persistent files were written before "
                                    "(/etc/driverctl.d/pci-0000:05:00.0, ")
    assert (device_dir(root, "0000:05:00.0") / "driver_override").read_text() == "vfio-pci"
    assert (root / "sys/bus/pci/drivers_probe").read_text() == "0000:05:00.0"
    assert (root / "etc/driverctl.d/pci-0000:05:00.0").exists(), "files come first, so a reboot finishes the job"


def test_an_unbind_that_blocks_fails_the_run_with_the_holder_hint(run_module, tmp_path: Path) -> None:
    root = lab_vm(tmp_path / "root")
    unbind = root / "sys/bus/pci/drivers/bochs-drm/unbind"
    unbind.unlink()
    os.mkfifo(unbind)
    result = run_module(MODULE, args(root, addresses=["02:00.0"], timeout=1))
    assert result["failed"] is True
    assert result["msg"].startswith("0000:02:00.0: unbinding it from bochs-drm did not finish within 1 s; a process "
                                    "holds the device")
    assert (root / "sys/bus/pci/drivers/snd_hda_intel/unbind").read_text() == "", "the group stops at the first"


def test_early_binding_updates_the_initramfs_only_when_the_file_changes(run_module, tmp_path: Path) -> None:
    root = bound_lab(tmp_path / "root")
    calls = tmp_path / "calls"
    command = "sh -c 'echo \"$CONFIDENTIAL_GPU_ROOT\" >> %s'" % calls
    first = run_module(MODULE, args(root, addresses=["02:00.0"], early_binding=True, initramfs_command=command))
    assert first["initramfs_updated"] is True
    assert first["commands"] == [["sh", "-c", 'echo "$CONFIDENTIAL_GPU_ROOT" >> %s' % calls]]
    assert calls.read_text() == "%s\n" % root
    assert "options vfio-pci ids=1234:1111,8086:293e" in (root / MODPROBE).read_text()
    second = run_module(MODULE, args(root, addresses=["02:00.0"], early_binding=True, initramfs_command=command))
    assert second["changed"] is False and second["initramfs_updated"] is False and second["commands"] == []
    assert calls.read_text() == "%s\n" % root


def test_a_failed_initramfs_update_puts_the_modprobe_file_back(run_module, tmp_path: Path) -> None:
    root = bound_lab(tmp_path / "root")
    result = run_module(MODULE, args(root, addresses=["02:00.0"], early_binding=True,
                                     initramfs_command="sh -c 'echo no space left >&2; exit 3'"))
    assert result["failed"] is True and result["msg"].startswith("sh -c echo no space left >&2; exit 3 failed (rc=3)")
    assert "no space left" in result["msg"]
    assert not (root / MODPROBE).exists(), "so that the next run updates the initramfs again"


def test_a_failed_initramfs_update_takes_the_new_hook_back_too(run_module, tmp_path: Path) -> None:
    root = bound_lab(tmp_path / "root")
    (root / "etc/initramfs-tools/hooks").mkdir(parents=True)
    hook = root / "etc/initramfs-tools/hooks/confidential-gpu-vfio"
    result = run_module(MODULE, args(root, addresses=["02:00.0"], early_binding=True, initramfs_command="false"))
    assert result["failed"] is True and not hook.exists() and not (root / MODPROBE).exists()
    done = run_module(MODULE, args(root, addresses=["02:00.0"], early_binding=True, initramfs_command="true"))
    assert done["initramfs_updated"] is True and hook.stat().st_mode & 0o777 == 0o755
    assert "/etc/initramfs-tools/hooks/confidential-gpu-vfio" in done["files"]


@pytest.mark.parametrize("check_mode", [False, True])
def test_a_nic_the_gpus_group_would_take_is_refused_unless_named(run_module, tmp_path: Path,
                                                                 check_mode: bool) -> None:
    """GPU 12:00.0 + audio 12:00.1 and a ConnectX NIC 13:00.0 in another slot share group 20 (no ACS above)."""
    root = lab_vm(tmp_path / "root", shared_group_functions())
    before = snapshot(root)
    result = run_module(MODULE, args(root, addresses=["12:00.0"], _ansible_check_mode=check_mode))
    assert result["rc"] != 0 and result["failed"] is True and result["changed"] is False
    assert result["msg"].startswith("refused, nothing was changed: IOMMU group 20 would take functions nobody "
                                    "selected to vfio-pci with 0000:12:00.0: 0000:13:00.0 (nic 15b3:1021, driver "
                                    "mlx5_core)")
    assert "0000:00:11.0 (root_port 1022:14ab): no ACS capability" in result["msg"]
    assert "name them: allow_group_members: ['0000:13:00.0']" in result["msg"]
    assert "0000:12:00.1" not in result["msg"], "the GPU's own audio function needs no naming"
    assert [item["kind"] for item in result["refused"]] == ["group_member"]
    assert snapshot(root) == before
    named = run_module(MODULE, args(root, addresses=["12:00.0"], allow_group_members=["0000:13:00.0"],
                                    _ansible_check_mode=True))
    assert named["rc"] == 0 and named["refused"] == [], named
    assert [(d["address"], d["driver_before"], d["action"]) for d in named["devices"] if d["action"] != "keep"] == [
        ("0000:12:00.0", "nvidia", "bind"), ("0000:12:00.1", "snd_hda_intel", "bind"),
        ("0000:13:00.0", "mlx5_core", "bind")]
    assert "/etc/driverctl.d/pci-0000:13:00.0" in named["files"]
    assert snapshot(root) == before


def test_storage_in_the_selected_slot_is_refused_and_named_it_is_bound(run_module, tmp_path: Path) -> None:
    """A BlueField DPU: NIC function 20:00.0 selected, its NVMe emulation function 20:00.1 in the same group."""
    root = lab_vm(tmp_path / "root", shared_group_functions())
    before = snapshot(root)
    refused = run_module(MODULE, args(root, addresses=["20:00.0"]))
    assert refused["failed"] is True and [item["kind"] for item in refused["refused"]] == ["group_member"]
    assert "0000:20:00.1 (storage 15b3:6001, driver nvme)" in refused["msg"]
    assert "another function of the device of 0000:20:00.0" in refused["msg"]
    assert snapshot(root) == before
    named = run_module(MODULE, args(root, addresses=["20:00.0"], allow_group_members=["20:00.1"],
                                    _ansible_check_mode=True))
    assert named["rc"] == 0 and [(d["address"], d["action"]) for d in named["devices"]] == [
        ("0000:20:00.0", "bind"), ("0000:20:00.1", "bind")]
    assert snapshot(root) == before


@pytest.mark.parametrize(("params", "message"), [
    ({"addresses": ["zz"]}, "addresses: 'zz' is not a PCI address"),
    ({"addresses": ["02:00.0"], "timeout": 0}, "timeout must be more than 0 seconds"),
    ({"roles": ["gpu"], "root": "/nonexistent/tree"}, "root '/nonexistent/tree' does not exist"),
])
def test_bad_input_changes_nothing(run_module, tmp_path: Path, params: Dict[str, Any], message: str) -> None:
    root = lab_vm(tmp_path / "root")
    before = snapshot(root)
    result = run_module(MODULE, dict({"root": str(root)}, **params))
    assert result["failed"] is True and message in result["msg"]
    assert snapshot(root) == before


# --------------------------------------------------------------------------
# The vfio role
# --------------------------------------------------------------------------

PLAY = """---
- name: Bind with the vfio role
  hosts: localhost
  gather_facts: false
  roles:
    - role: confidential_gpu.host.vfio
"""


def role(tmp_path: Path, extra: Dict[str, Any], *options: str) -> subprocess.CompletedProcess:
    play = tmp_path / "vfio.yml"
    play.write_text(PLAY)
    env = dict(os.environ, ANSIBLE_CONFIG=str(REPO / "ansible.cfg"), ANSIBLE_NOCOLOR="1")
    command = [str(Path(sys.executable).with_name("ansible-playbook")), str(play), "-e", json.dumps(extra),
               *options]
    return subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=300, check=False)


def recap_changed(proc: subprocess.CompletedProcess) -> int:
    line = next(li for li in proc.stdout.splitlines() if li.startswith("localhost") and "changed=" in li)
    return int(line.split("changed=")[1].split()[0])


def test_vfio_role_binds_summarises_and_refuses(tmp_path: Path) -> None:
    root = bound_lab(tmp_path / "root")
    first = role(tmp_path, {"vfio_root": str(root), "vfio_addresses": ["02:00.0"]})
    assert first.returncode == 0, first.stdout + first.stderr
    assert recap_changed(first) == 1
    assert "none    0000:02:00.1 8086:293e group=11 vfio-pci -> vfio-pci" in first.stdout
    assert "VFIO nodes: /dev/vfio/11 /dev/vfio/devices/vfio0 /dev/vfio/devices/vfio1" in first.stdout
    assert recap_changed(role(tmp_path, {"vfio_root": str(root), "vfio_addresses": ["02:00.0"]})) == 0
    refused = role(tmp_path, {"vfio_root": str(root), "vfio_addresses": ["00:04.0"]})
    assert refused.returncode != 0 and "carries the default route (interface enp0s4)" in refused.stdout
    nothing = role(tmp_path, {"vfio_root": str(root)})
    assert nothing.returncode == 0 and "no PCI function selected" in nothing.stdout, "vfio_roles [gpu]: no NVIDIA GPU"


def test_vfio_role_binds_other_bindings_in_its_one_call(tmp_path: Path) -> None:
    """prepare.yml hands role vfio the VFs of role sriov (vfio_other_bindings): one pci_driver task binds both."""
    root = tmp_path / "root"
    lab_vm(root, lab_vm_functions(gpu_driver="vfio-pci", audio_driver="vfio-pci", vf_driver="vfio-pci"))
    (root / "dev/vfio/11").touch()
    extra = {"vfio_root": str(root), "vfio_addresses": ["02:00.0"],
             "vfio_other_bindings": [{"addresses": ["0000:01:00.1", "0000:01:00.2"], "driver": "vfio-pci"}]}
    first = role(tmp_path, extra)
    assert first.returncode == 0, first.stdout + first.stderr
    assert first.stdout.count("TASK [confidential_gpu.host.vfio : Bind the selected PCI functions") == 1
    for address in ("0000:01:00.1", "0000:01:00.2", "0000:02:00.0", "0000:02:00.1"):
        assert (root / "etc/driverctl.d" / ("pci-" + address)).read_text() == "vfio-pci\n"
        assert re.search("none +%s .* vfio-pci -> vfio-pci" % address, first.stdout), first.stdout
    assert recap_changed(role(tmp_path, extra)) == 0
    released = role(tmp_path, dict(extra, vfio_state="absent"), "--check")
    assert released.returncode == 0, released.stdout + released.stderr
    assert "0000:01:00.1" not in released.stdout.split("Show what is bound")[1], "absent: the role's own selection"


def test_vfio_role_passes_the_group_members_it_may_take(tmp_path: Path) -> None:
    root = lab_vm(tmp_path / "root", shared_group_functions())
    before = snapshot(root)
    refused = role(tmp_path, {"vfio_root": str(root), "vfio_addresses": ["12:00.0"]}, "--check")
    assert refused.returncode != 0 and "allow_group_members: ['0000:13:00.0'] (role vfio: vfio_allow_group_members)" \
        in refused.stdout, refused.stdout
    named = role(tmp_path, {"vfio_root": str(root), "vfio_addresses": ["12:00.0"],
                            "vfio_allow_group_members": ["0000:13:00.0"]}, "--check")
    assert named.returncode == 0, named.stdout + named.stderr
    assert "bind    0000:13:00.0 15b3:1021 group=20 mlx5_core -> vfio-pci" in named.stdout
    assert snapshot(root) == before


# --------------------------------------------------------------------------
# This machine (root /), check mode: its own boot disk and NIC are refused
# --------------------------------------------------------------------------

PCI_ADDRESS = re.compile(r"[0-9a-f]{4}:[0-9a-f]{2}:[0-9a-f]{2}\.[0-7]")


def live_pci_function(sysfs_path: str, what: str) -> str:
    addresses = PCI_ADDRESS.findall(os.path.realpath(sysfs_path))
    if not addresses:
        pytest.skip("%s of this machine is not below a PCI function (%s): nothing host-critical to refuse"
                    % (what, os.path.realpath(sysfs_path)))
    return addresses[-1]


def test_live_default_route_nic_is_refused(run_module) -> None:
    ip = shutil.which("ip")
    if ip is None:
        pytest.skip("iproute2's ip is not installed: no independent view of the default route")
    words = subprocess.run([ip, "-o", "route", "show", "default"], capture_output=True, text=True, check=False,
                           timeout=30).stdout.split()
    if "dev" not in words:
        pytest.skip("this machine has no default route")
    interface = words[words.index("dev") + 1]
    address = live_pci_function("/sys/class/net/%s" % interface, "the default route's interface %s" % interface)
    result = run_module(MODULE, {"addresses": [address], "_ansible_check_mode": True})
    assert result["failed"] is True
    critical = [item for item in result["refused"] if item["kind"] == "host_critical"]
    assert critical and "it carries the default route (interface %s)" % interface in critical[0]["reason"]


def test_live_boot_disk_controller_is_refused(run_module) -> None:
    findmnt = shutil.which("findmnt")
    if findmnt is None:
        pytest.skip("util-linux's findmnt is not installed: no independent view of the root mount")
    majmin = subprocess.run([findmnt, "-n", "-o", "MAJ:MIN", "/"], capture_output=True, text=True, check=False,
                            timeout=30).stdout.strip()
    if not os.path.exists("/sys/dev/block/%s" % majmin):
        pytest.skip("/ is not on a block device here (%s: overlay or network file system)" % (majmin or "unknown"))
    address = live_pci_function("/sys/dev/block/%s" % majmin, "the disk of /")
    result = run_module(MODULE, {"addresses": [address], "_ansible_check_mode": True})
    assert result["failed"] is True
    critical = [item for item in result["refused"] if item["kind"] == "host_critical"]
    assert critical and "it controls the disk holding / (/dev/" in critical[0]["reason"]
