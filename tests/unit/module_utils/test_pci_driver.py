"""pci_driver and pci_bind on fake trees: selection, groups, safety refusals, files, runtime primitives.

The trees are the lab VM's layout (tests/lib/host_critical_tree.py) or a
synthetic GPU server (tests/lib/fake_sysfs.py).  A fake tree has no kernel
behind it: writing ``unbind`` or ``drivers_probe`` changes no ``driver`` link,
so the runtime tests observe the writes themselves and the time limits; a FIFO
stands in for an ``unbind`` that blocks (opening a FIFO with no reader for
writing blocks, as a real sysfs write does while a process holds the device).
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Dict, List

import pytest
from ansible_collections.confidential_gpu.host.plugins.module_utils import pci_bind
from ansible_collections.confidential_gpu.host.plugins.module_utils.host_critical import (
    BIND_READ_SECONDS,
    host_critical,
)
from ansible_collections.confidential_gpu.host.plugins.module_utils.host_write import ROOT_ENV, SYSTEM_PATH
from ansible_collections.confidential_gpu.host.plugins.module_utils.pci_driver import build_intent, gather_facts
from ansible_collections.confidential_gpu.host.plugins.module_utils.pci_driver_model import PciDriverError
from ansible_collections.confidential_gpu.host.plugins.module_utils.pci_driver_persist import (
    DRACUT_CONF,
    HELPER,
    INITRAMFS_TOOLS_HOOK,
    MODPROBE_CONF,
    UDEV_RULES,
    InitramfsRunner,
)
from ansible_collections.confidential_gpu.host.plugins.module_utils.pci_driver_plan import make_plan
from ansible_collections.confidential_gpu.host.plugins.module_utils.pci_topology import read_topology
from ansible_collections.confidential_gpu.host.plugins.module_utils.sysfs import HostRoot
from conftest import REPO

sys.path.insert(0, str(REPO / "tests" / "lib"))
from fake_sysfs import ServerShape, build_tree, gpu_server, lab_like_host  # noqa: E402
from host_critical_tree import (  # noqa: E402
    add_bond,
    add_disk,
    add_dm,
    add_framebuffer,
    add_interface,
    add_kernel_interface,
    add_mount,
    device_dir,
    lab_vm,
    lab_vm_functions,
    set_boot_vga,
    set_consoles,
    set_routes,
    shared_group_functions,
    snapshot,
    write,
)
from shipped_files import shipped_for  # noqa: E402

GPU_PAIR = ["0000:02:00.0", "0000:02:00.1"]

SHIPPED = shipped_for("pci_driver")  # the udev helper and the initramfs drop-ins, from the collection's files/
HELPER_SCRIPT = SHIPPED["pci-override.sh"]


def plan_for(root: Path, **params: Any) -> Dict[str, Any]:
    intent = build_intent(dict(params, _shipped_files=SHIPPED))
    return make_plan(gather_facts(HostRoot(str(root)), intent), intent)


def actions(plan: Dict[str, Any]) -> Dict[str, str]:
    return {entry["address"]: entry["action"] for entry in plan["devices"]}


def kinds(plan: Dict[str, Any]) -> List[str]:
    return [item["kind"] for item in plan["refused"]]


def critical_of(root: Path) -> Dict[str, List[str]]:
    host = HostRoot(str(root))
    return host_critical(host, read_topology(host)["devices"])


# --------------------------------------------------------------------------
# Selection and IOMMU groups
# --------------------------------------------------------------------------

def test_selectors_add_up_and_skip_bridges(tmp_path: Path) -> None:
    build_tree(tmp_path, gpu_server(ServerShape(gpus=2, nvswitches=2, sockets=1)))
    add_kernel_interface(tmp_path)
    gpus = plan_for(tmp_path, roles=["gpu"])
    assert [e["pci_id"] for e in gpus["devices"]] == ["10de:2330", "10de:2330"]
    assert all(e["action"] == "bind" and e["driver_before"] == "nvidia" for e in gpus["devices"])
    both = plan_for(tmp_path, roles=["gpu"], pci_ids=["10de:22a3"])
    assert sorted(e["pci_id"] for e in both["devices"]) == ["10de:22a3", "10de:22a3", "10de:2330", "10de:2330"]
    vendor = plan_for(tmp_path, pci_ids=["10de:*"])
    assert {e["address"] for e in vendor["devices"]} == {e["address"] for e in both["devices"]}
    assert plan_for(tmp_path, roles=["bridge"])["devices"] == [], "bridges are never selected by role"


def test_unknown_address_or_group_fails_naming_it(tmp_path: Path) -> None:
    lab_vm(tmp_path)
    with pytest.raises(PciDriverError, match=r"no PCI function 0000:09:00\.0 on this host"):
        plan_for(tmp_path, addresses=["09:00.0"])
    with pytest.raises(PciDriverError, match="no IOMMU group 99 on this host"):
        plan_for(tmp_path, iommu_groups=[99])


@pytest.mark.parametrize(("params", "message"), [
    ({"addresses": ["02:00"]}, "addresses: '02:00' is not a PCI address"),
    ({"pci_ids": ["10de-2330"]}, "pci_ids: '10de-2330' is not vendor:device"),
    ({"addresses": ["02:00.0"], "driver": "../../x"}, "driver: '../../x' is not a kernel driver name"),
    ({}, "no devices selected"),
    ({"roles": ["gpu"], "driver": "nvidia", "early_binding": True}, "early_binding needs a driver with an ids="),
    ({"roles": ["gpu"], "allow_host_critical": ["eth0"]}, "allow_host_critical: 'eth0' is not a PCI address"),
    ({"iommu_groups": [-1]}, "iommu_groups: -1 is not an IOMMU group number"),
    ({"roles": ["gpu"], "allow_group_members": ["13:00"]}, "allow_group_members: '13:00' is not a PCI address"),
])
def test_bad_input_fails_before_reading(params: Dict[str, Any], message: str) -> None:
    with pytest.raises(PciDriverError, match=message.replace("(", r"\(").replace(".", r"\.")):
        build_intent(params)


def test_whole_group_brings_the_audio_function(tmp_path: Path) -> None:
    lab_vm(tmp_path)
    plan = plan_for(tmp_path, addresses=["02:00.0"])
    assert actions(plan) == {"0000:02:00.0": "bind", "0000:02:00.1": "bind"}
    assert plan["groups"] == [{"id": 11, "devices": GPU_PAIR, "endpoints": GPU_PAIR, "bridges": [], "viable": True,
                               "reasons": []}]
    alone = plan_for(tmp_path, addresses=["02:00.0"], whole_group=False)
    assert actions(alone) == {"0000:02:00.0": "bind"}
    assert any("IOMMU group 11: 0000:02:00.1 (snd_hda_intel) stay on their drivers" in w for w in alone["warnings"])


def test_bridges_of_a_group_are_kept(tmp_path: Path) -> None:
    lab_vm(tmp_path)
    plan = plan_for(tmp_path, addresses=["05:00.0"])
    assert actions(plan) == {"0000:04:00.0": "keep", "0000:05:00.0": "bind"}
    kept = next(e for e in plan["devices"] if e["action"] == "keep")
    assert kept["driver_before"] == kept["driver_after"] == "pcieport"
    by_group = plan_for(tmp_path, iommu_groups=[13])
    assert actions(by_group) == actions(plan) and by_group["refused"] == []


def test_a_bridge_named_by_address_is_refused(tmp_path: Path) -> None:
    lab_vm(tmp_path)
    plan = plan_for(tmp_path, addresses=["00:10.0"])
    assert kinds(plan) == ["bridge"] and plan["file_changes"] == []
    assert "0000:00:10.0 is a bridge (driver pcieport)" in plan["refused"][0]["reason"]


def test_chipset_group_is_refused_with_every_member(tmp_path: Path) -> None:
    lab_vm(tmp_path)
    plan = plan_for(tmp_path, addresses=["00:1f.3"], whole_group=False)
    assert kinds(plan) == ["not_viable"] and plan["file_changes"] == []
    refusal = plan["refused"][0]
    assert refusal["group"] == 7
    assert [(m["address"], m["driver"]) for m in refusal["members"]] == [
        ("0000:00:1f.0", "lpc_ich"), ("0000:00:1f.2", "ahci"), ("0000:00:1f.3", "i801_smbus")]
    assert "ISA/LPC bridge" in refusal["members"][0]["why"]
    assert "would move to vfio-pci with the group" in refusal["members"][2]["why"]
    assert "0000:00:1f.2 (driver ahci)" in refusal["reason"]


def test_a_bridge_on_a_driver_vfio_does_not_accept_makes_the_group_not_viable(tmp_path: Path) -> None:
    functions = lab_vm_functions()
    for function in functions:
        if function.address == "0000:04:00.0":
            function.driver = "shpchp"
    lab_vm(tmp_path, functions)
    plan = plan_for(tmp_path, addresses=["05:00.0"])
    assert kinds(plan) == ["not_viable"]
    assert "bridge 0000:04:00.0 is bound to shpchp, which does not declare driver_managed_dma" \
        in plan["refused"][0]["reason"]


def test_no_iommu_group_is_refused_for_vfio(tmp_path: Path) -> None:
    functions = lab_vm_functions()
    for function in functions:
        function.iommu_group = None
    lab_vm(tmp_path, functions)
    plan = plan_for(tmp_path, addresses=["05:00.0"])
    assert kinds(plan) == ["no_iommu_group"] and "turn the IOMMU on" in plan["refused"][0]["fix"]
    both = plan_for(tmp_path, addresses=["00:04.0"])
    assert kinds(both) == ["no_iommu_group", "host_critical"], "every reason is reported, not the first"
    stub = plan_for(tmp_path, addresses=["05:00.0"], driver="pci-stub")
    assert stub["refused"] == [] and actions(stub) == {"0000:05:00.0": "bind"}


def test_already_bound_devices_are_left_alone(tmp_path: Path) -> None:
    lab_vm(tmp_path, lab_vm_functions(gpu_driver="vfio-pci", audio_driver="vfio-pci"))
    plan = plan_for(tmp_path, addresses=["02:00.1"])
    assert actions(plan) == {"0000:02:00.0": "none", "0000:02:00.1": "none"}
    assert all(e["driver_after"] == "vfio-pci" for e in plan["devices"])


def test_the_plan_is_a_pure_function_of_facts_and_intent(tmp_path: Path) -> None:
    lab_vm(tmp_path)
    before = snapshot(tmp_path)
    intent = build_intent({"addresses": ["02:00.0"], "early_binding": True, "_shipped_files": SHIPPED})
    facts = gather_facts(HostRoot(str(tmp_path)), intent)
    first, second = make_plan(facts, intent), make_plan(facts, intent)
    assert first == second and first["file_changes"]
    assert snapshot(tmp_path) == before, "reading facts and planning write nothing"


# --------------------------------------------------------------------------
# Group members nobody selected (shared_group_functions: GPU 12:00.0 + audio 12:00.1 and NIC 13:00.0 in group 20
# below ports without ACS; DPU NIC 20:00.0 + NVMe emulation 20:00.1 in group 22)
# --------------------------------------------------------------------------

SHARED_GPU = ["0000:12:00.0", "0000:12:00.1", "0000:13:00.0"]


def test_a_nic_in_another_slot_is_not_taken_without_being_named(tmp_path: Path) -> None:
    lab_vm(tmp_path, shared_group_functions())
    plan = plan_for(tmp_path, addresses=["12:00.0"])
    assert kinds(plan) == ["group_member"] and plan["file_changes"] == []
    refusal = plan["refused"][0]
    assert refusal["group"] == 20
    assert [(m["address"], m["role"], m["driver"]) for m in refusal["members"]] == [
        ("0000:13:00.0", "nic", "mlx5_core")], "the GPU's own audio function 12:00.1 needs no naming"
    assert "0000:13:00.0 (nic 15b3:1021, driver mlx5_core)" in refusal["reason"]
    for bridge in ("0000:00:11.0 (root_port 1022:14ab): no ACS capability",
                   "0000:11:00.0 (downstream_port 1000:c030): no ACS capability",
                   "0000:11:01.0 (downstream_port 1000:c030): no ACS capability"):
        assert bridge in refusal["members"][0]["why"]
    assert "0000:10:00.0" not in refusal["members"][0]["why"], "an upstream port needs no ACS"
    assert "allow_group_members: ['0000:13:00.0']" in refusal["fix"]
    assert "vfio_allow_group_members" in refusal["fix"]


def test_a_named_nic_goes_with_the_gpu_and_its_audio_function(tmp_path: Path) -> None:
    lab_vm(tmp_path, shared_group_functions())
    plan = plan_for(tmp_path, addresses=["12:00.0"], allow_group_members=["13:00.0"])
    assert plan["refused"] == [] and plan["warnings"] == []
    assert {a: x for a, x in actions(plan).items() if x != "keep"} == {a: "bind" for a in SHARED_GPU}
    written = changes_of(plan)
    assert [written["/etc/driverctl.d/pci-%s" % a].after for a in SHARED_GPU] == ["vfio-pci\n"] * 3


def test_members_already_on_the_driver_and_bridges_need_no_naming(tmp_path: Path) -> None:
    lab_vm(tmp_path, shared_group_functions(nic_driver="vfio-pci"))
    plan = plan_for(tmp_path, addresses=["12:00.0"])
    assert plan["refused"] == []
    assert actions(plan) == {"0000:00:11.0": "keep", "0000:10:00.0": "keep", "0000:11:00.0": "keep",
                             "0000:11:01.0": "keep", "0000:12:00.0": "bind", "0000:12:00.1": "bind",
                             "0000:13:00.0": "none"}


def test_storage_in_the_selected_slot_must_be_named_too(tmp_path: Path) -> None:
    lab_vm(tmp_path, shared_group_functions())
    plan = plan_for(tmp_path, addresses=["20:00.0"])
    assert kinds(plan) == ["group_member"] and plan["file_changes"] == []
    member = plan["refused"][0]["members"][0]
    assert (member["address"], member["role"], member["driver"]) == ("0000:20:00.1", "storage", "nvme")
    assert "another function of the device of 0000:20:00.0" in member["why"]
    allowed = plan_for(tmp_path, addresses=["20:00.0"], allow_group_members=["0000:20:00.1"])
    assert allowed["refused"] == [] and actions(allowed) == {"0000:20:00.0": "bind", "0000:20:00.1": "bind"}


def test_selected_members_absent_and_stray_names(tmp_path: Path) -> None:
    lab_vm(tmp_path, shared_group_functions())
    both = plan_for(tmp_path, addresses=["12:00.0", "13:00.0"])
    assert both["refused"] == [], "a NIC the user selected is not asked about again"
    released = plan_for(tmp_path, addresses=["12:00.0"], state="absent")
    assert released["refused"] == [], "state absent gives functions back; nothing is taken"
    stray = plan_for(tmp_path, addresses=["02:00.0"], allow_group_members=["13:00.0"])
    assert stray["refused"] == []
    assert "allow_group_members names 0000:13:00.0, which no selected group takes with it here" in stray["warnings"]


def test_a_non_viable_group_keeps_its_own_refusal(tmp_path: Path) -> None:
    lab_vm(tmp_path)
    plan = plan_for(tmp_path, addresses=["00:1f.3"])
    assert kinds(plan) == ["not_viable"], "naming the ICH9 SATA controller would not let the chipset group through"


# --------------------------------------------------------------------------
# Host-critical devices
# --------------------------------------------------------------------------

def test_lab_host_critical_devices(tmp_path: Path) -> None:
    lab_vm(tmp_path)
    assert critical_of(tmp_path) == {
        "0000:00:03.0": ["it controls the disk holding / (/dev/vda1)"],
        "0000:00:04.0": ["it carries the default route (interface enp0s4)"],
        "0000:06:00.0": ["fbcon draws the active console on its framebuffer fb0 (virtio_gpudrmfb)"],
    }


@pytest.mark.parametrize(("address", "words"), [
    ("00:03.0", "controls the disk holding /"),
    ("00:04.0", "carries the default route (interface enp0s4)"),
    ("06:00.0", "fbcon draws the active console on its framebuffer fb0"),
])
def test_each_host_critical_device_is_refused_and_the_override_lets_it_through(
        tmp_path: Path, address: str, words: str) -> None:
    lab_vm(tmp_path)
    plan = plan_for(tmp_path, addresses=[address])
    assert kinds(plan) == ["host_critical"] and plan["file_changes"] == []
    full = "0000:" + address
    assert words in plan["refused"][0]["reason"]
    assert "allow_host_critical: ['%s']" % full in plan["refused"][0]["fix"]
    allowed = plan_for(tmp_path, addresses=[address], allow_host_critical=[address])
    assert allowed["refused"] == [] and actions(allowed)[full] == "bind"


def test_group_member_pulled_in_is_checked_too(tmp_path: Path) -> None:
    lab_vm(tmp_path)
    (tmp_path / "sys/class/graphics/fb0").unlink()
    add_framebuffer(tmp_path, 0, "0000:02:00.1", "odd")
    plan = plan_for(tmp_path, addresses=["02:00.0"])
    assert kinds(plan) == ["host_critical"]
    assert "0000:02:00.1 (driver snd_hda_intel, in the same IOMMU group as a selected device)" \
        in plan["refused"][0]["reason"]


def test_boot_disk_through_lvm_and_a_separate_boot_partition(tmp_path: Path) -> None:
    lab_vm(tmp_path)
    (tmp_path / "proc/self/mountinfo").unlink()
    add_disk(tmp_path, "0000:01:00.0", "nvme0n1", "259:0", subpath="nvme/nvme0", partitions=["nvme0n1p1", "nvme0n1p2"])
    add_dm(tmp_path, "dm-0", "253:0", ["nvme0n1p2"], "vg-root")
    add_mount(tmp_path, "/", "253:0", "/dev/mapper/vg-root")
    add_mount(tmp_path, "/boot", "259:1", "/dev/nvme0n1p1")
    critical = critical_of(tmp_path)
    assert critical["0000:01:00.0"] == ["it controls the disk holding / (/dev/dm-0)",
                                        "it controls the disk holding /boot (/dev/nvme0n1p1)"]
    assert "0000:00:03.0" not in critical


def test_boot_disk_found_through_the_mount_source_when_the_device_number_is_virtual(tmp_path: Path) -> None:
    lab_vm(tmp_path)
    (tmp_path / "proc/self/mountinfo").unlink()
    add_dm(tmp_path, "dm-0", "253:0", ["vda1"], "vg-root")
    add_mount(tmp_path, "/", "0:27", "/dev/mapper/vg-root", fstype="btrfs")
    assert critical_of(tmp_path)["0000:00:03.0"] == ["it controls the disk holding / (/dev/dm-0)"]


def test_unknown_root_device_is_a_warning_not_a_guess(tmp_path: Path) -> None:
    lab_vm(tmp_path)
    (tmp_path / "proc/self/mountinfo").unlink()
    add_mount(tmp_path, "/", "0:31", "rpool/ROOT/debian", fstype="zfs")
    host = HostRoot(str(tmp_path))
    critical = host_critical(host, read_topology(host)["devices"])
    assert "0000:00:03.0" not in critical
    assert any("cannot find the block device of / (rpool/ROOT/debian, 0:31)" in w for w in host.warnings)


def test_default_route_through_a_bond_and_ipv6_only(tmp_path: Path) -> None:
    lab_vm(tmp_path)
    add_bond(tmp_path, "bond0", ["enp0s4"])
    set_routes(tmp_path, ["bond0"], [])
    assert critical_of(tmp_path)["0000:00:04.0"] == ["it carries the default route (interface bond0)"]
    set_routes(tmp_path, [], ["enp0s4"])
    assert critical_of(tmp_path)["0000:00:04.0"] == ["it carries the default route (interface enp0s4)"]
    set_routes(tmp_path, [], [])
    assert "0000:00:04.0" not in critical_of(tmp_path)


def test_a_critical_vf_makes_its_pf_critical(tmp_path: Path) -> None:
    lab_vm(tmp_path)
    add_interface(tmp_path, "ens1v0", "0000:01:00.1", subpath="")
    set_routes(tmp_path, ["ens1v0"])
    critical = critical_of(tmp_path)
    assert critical["0000:01:00.1"] == ["it carries the default route (interface ens1v0)"]
    assert critical["0000:01:00.0"][0].startswith("its virtual function 0000:01:00.1 is host-critical")


def test_fbcon_map_moves_the_console(tmp_path: Path) -> None:
    lab_vm(tmp_path)
    write(tmp_path, "/proc/cmdline", "root=LABEL=root ro fbcon=map:1\n")
    critical = critical_of(tmp_path)
    assert critical["0000:02:00.0"] == ["fbcon draws the active console on its framebuffer fb1 (bochs-drmdrmfb)"]
    assert "0000:06:00.0" not in critical


def test_the_boot_vga_devices_framebuffer_counts_as_primary_unless_mapped(tmp_path: Path) -> None:
    lab_vm(tmp_path)
    set_boot_vga(tmp_path, "0000:02:00.0")
    critical = critical_of(tmp_path)
    assert critical["0000:02:00.0"] == ["fbcon draws the active console on its framebuffer fb1 (bochs-drmdrmfb)"]
    assert "0000:06:00.0" in critical, "fb0 stays critical too"
    write(tmp_path, "/proc/cmdline", "root=LABEL=root ro fbcon=map:0\n")
    assert "0000:02:00.0" not in critical_of(tmp_path)


def test_firmware_framebuffer_makes_the_boot_vga_device_critical(tmp_path: Path) -> None:
    lab_vm(tmp_path)
    for fb in ("fb0", "fb1"):
        (tmp_path / "sys/class/graphics" / fb).unlink()
    add_framebuffer(tmp_path, 0, None, "simple")
    set_boot_vga(tmp_path, "0000:02:00.0")
    critical = critical_of(tmp_path)
    assert critical["0000:02:00.0"] == ["the active console is on the firmware framebuffer fb0 (simple), which lives "
                                        "in this boot VGA device's memory"]
    assert "0000:06:00.0" not in critical


def test_vga_text_console_and_no_console(tmp_path: Path) -> None:
    lab_vm(tmp_path)
    set_boot_vga(tmp_path, "0000:02:00.0")
    for entry in (tmp_path / "sys/class/vtconsole").iterdir():
        entry.unlink()
    set_consoles(tmp_path, fbcon=False, vga=True)
    critical = critical_of(tmp_path)
    assert critical["0000:02:00.0"] == ["the VGA text console (vgacon) is drawn by this boot VGA device"]
    assert "0000:06:00.0" not in critical, "fbcon is not bound: fb0 is not a console"
    for entry in (tmp_path / "sys/class/vtconsole").iterdir():
        entry.unlink()
    set_consoles(tmp_path, fbcon=False, vga=False)
    assert set(critical_of(tmp_path)) == {"0000:00:03.0", "0000:00:04.0"}, "serial console only"


def test_a_console_whose_bind_never_answers_counts_as_bound(tmp_path: Path) -> None:
    """Reading vtconsole's bind takes the console lock; a FIFO blocks the same way, in a real open()."""
    lab_vm(tmp_path)
    bind = tmp_path / "sys/devices/virtual/vtconsole/vtcon1/bind"
    assert "frame buffer" in (bind.parent / "name").read_text()
    bind.unlink()
    os.mkfifo(bind)
    started = time.monotonic()
    critical = critical_of(tmp_path)
    assert time.monotonic() - started < BIND_READ_SECONDS + 3, "the read has a time limit"
    assert critical["0000:06:00.0"] == [
        "fbcon draws the active console on its framebuffer fb0 (virtio_gpudrmfb) (counted as bound: reading "
        "/sys/class/vtconsole/vtcon1/bind did not answer within 5 s, so the console lock is held)"]


# --------------------------------------------------------------------------
# Persistent files
# --------------------------------------------------------------------------

def changes_of(plan: Dict[str, Any]) -> Dict[str, Any]:
    return {change.host_path: change for change in plan["file_changes"]}


def test_persistent_files_for_the_gpu_pair(tmp_path: Path) -> None:
    lab_vm(tmp_path)
    plan = plan_for(tmp_path, addresses=["02:00.0"], early_binding=True)
    changes = changes_of(plan)
    assert sorted(changes) == ["/etc/driverctl.d/pci-0000:02:00.0", "/etc/driverctl.d/pci-0000:02:00.1",
                               MODPROBE_CONF, UDEV_RULES, HELPER]
    assert changes["/etc/driverctl.d/pci-0000:02:00.0"].after == "vfio-pci\n"
    rules = changes[UDEV_RULES].after.splitlines()
    assert rules[-2:] == [
        'ACTION=="add", SUBSYSTEM=="pci", KERNEL=="0000:02:00.0", RUN+="%s $kernel"' % HELPER,
        'ACTION=="add", SUBSYSTEM=="pci", KERNEL=="0000:02:00.1", RUN+="%s $kernel"' % HELPER]
    assert changes[HELPER].mode == 0o755 and changes[HELPER].after == HELPER_SCRIPT
    conf = changes[MODPROBE_CONF].after.splitlines()
    assert "options vfio-pci ids=1234:1111,8086:293e" in conf
    assert [line for line in conf if line.startswith("softdep")] == [
        "softdep bochs pre: vfio-pci", "softdep snd_hda_intel pre: vfio-pci"], "module names, not driver names"


def test_early_binding_keeps_shared_ids_out_and_nvidia_gets_its_softdeps(tmp_path: Path) -> None:
    lab_vm(tmp_path)
    plan = plan_for(tmp_path, addresses=["01:00.1"], early_binding=True)
    assert MODPROBE_CONF not in changes_of(plan)
    assert any("1b36:0010 is left out of ids= because 0000:01:00.0, 0000:01:00.2 (not selected)" in w
               for w in plan["warnings"])
    server = tmp_path / "server"
    build_tree(server, gpu_server(ServerShape(gpus=2, sockets=1)))
    add_kernel_interface(server)
    conf = changes_of(plan_for(server, roles=["gpu"], early_binding=True))[MODPROBE_CONF].after
    assert "options vfio-pci ids=10de:2330\nsoftdep nouveau pre: vfio-pci\nsoftdep nvidia pre: vfio-pci\n" in conf


def test_files_are_idempotent_once_written(tmp_path: Path) -> None:
    lab_vm(tmp_path, lab_vm_functions(gpu_driver="vfio-pci", audio_driver="vfio-pci"))
    first = plan_for(tmp_path, addresses=["02:00.0"], early_binding=True)
    for change in first["file_changes"]:
        write(tmp_path, change.host_path, change.after)
    again = plan_for(tmp_path, addresses=["02:00.0"], early_binding=True)
    assert again["file_changes"] == [] and set(actions(again).values()) == {"none"}


def test_rules_of_other_runs_are_kept_and_absent_removes_only_its_own(tmp_path: Path) -> None:
    lab_vm(tmp_path)
    vf = plan_for(tmp_path, addresses=["01:00.1"])
    for change in vf["file_changes"]:
        write(tmp_path, change.host_path, change.after)
    write(tmp_path, "/etc/driverctl.d/pci-0000:05:00.0", "pci-stub\n")
    gpu = plan_for(tmp_path, addresses=["02:00.0"])
    rules = changes_of(gpu)[UDEV_RULES].after
    assert '"0000:01:00.1"' in rules and '"0000:02:00.0"' in rules and '"0000:02:00.1"' in rules
    for change in gpu["file_changes"]:
        write(tmp_path, change.host_path, change.after)
    gone = plan_for(tmp_path, addresses=["02:00.0", "05:00.0"], state="absent")
    changes = changes_of(gone)
    assert changes["/etc/driverctl.d/pci-0000:02:00.0"].after is None
    assert "/etc/driverctl.d/pci-0000:05:00.0" not in changes, "an override for another driver is not ours"
    assert rule_lines(changes[UDEV_RULES].after) == ["0000:01:00.1"]
    assert gone["refused"] == []


def rule_lines(text: str) -> List[str]:
    return [line.split('KERNEL=="')[1].split('"')[0] for line in text.splitlines() if line.startswith("ACTION")]


def test_absent_takes_ids_out_and_removes_the_last_files(tmp_path: Path) -> None:
    lab_vm(tmp_path, lab_vm_functions(gpu_driver="vfio-pci", audio_driver="vfio-pci"))
    for change in plan_for(tmp_path, addresses=["02:00.0"], early_binding=True)["file_changes"]:
        write(tmp_path, change.host_path, change.after)
    gone = plan_for(tmp_path, addresses=["02:00.0"], state="absent")
    assert {path: change.after for path, change in changes_of(gone).items()} == {
        "/etc/driverctl.d/pci-0000:02:00.0": None, "/etc/driverctl.d/pci-0000:02:00.1": None,
        MODPROBE_CONF: None, UDEV_RULES: None, HELPER: None}
    assert actions(gone) == {"0000:02:00.0": "release", "0000:02:00.1": "release"}


def with_generators(root: Path, *directories: str) -> Path:
    for directory in directories:
        (root / directory.lstrip("/")).mkdir(parents=True, exist_ok=True)
    return root


def test_early_binding_puts_the_driver_into_each_initramfs_the_host_builds(tmp_path: Path) -> None:
    with_generators(lab_vm(tmp_path), "/etc/initramfs-tools", "/etc/dracut.conf.d")
    plan = plan_for(tmp_path, addresses=["02:00.0"], early_binding=True)
    changes = changes_of(plan)
    hook = changes[INITRAMFS_TOOLS_HOOK]
    assert hook.mode == 0o755, "mkinitramfs runs only executable hooks"
    assert "\n. /usr/share/initramfs-tools/hook-functions\nmanual_add_modules vfio_pci vfio_iommu_type1\n" in hook.after
    assert 'prereqs) prereqs; exit 0 ;;' in hook.after
    assert changes[DRACUT_CONF].mode == 0o644
    assert 'force_drivers+=" vfio_pci vfio_iommu_type1 "' in changes[DRACUT_CONF].after.splitlines()
    assert not any("is not put into the initramfs" in warning for warning in plan["warnings"])


def test_only_the_generator_the_host_has_gets_a_drop_in(tmp_path: Path) -> None:
    with_generators(lab_vm(tmp_path), "/etc/dracut.conf.d")
    changes = changes_of(plan_for(tmp_path, addresses=["02:00.0"], early_binding=True, driver="pci-stub"))
    assert INITRAMFS_TOOLS_HOOK not in changes
    assert 'force_drivers+=" pci_stub "' in changes[DRACUT_CONF].after


def test_a_host_without_a_known_initramfs_generator_is_warned(tmp_path: Path) -> None:
    lab_vm(tmp_path)
    plan = plan_for(tmp_path, addresses=["02:00.0"], early_binding=True)
    assert INITRAMFS_TOOLS_HOOK not in changes_of(plan) and DRACUT_CONF not in changes_of(plan)
    assert ("early binding: the host has neither /etc/initramfs-tools nor /etc/dracut.conf.d, so vfio-pci is not put "
            "into the initramfs" in "\n".join(plan["warnings"]))
    assert "add vfio_pci vfio_iommu_type1 to your initramfs generator's modules" in "\n".join(plan["warnings"])


def test_no_drop_in_without_an_id_to_bind_early(tmp_path: Path) -> None:
    with_generators(lab_vm(tmp_path), "/etc/initramfs-tools")
    plan = plan_for(tmp_path, addresses=["01:00.1"], early_binding=True)
    assert MODPROBE_CONF not in changes_of(plan) and INITRAMFS_TOOLS_HOOK not in changes_of(plan), \
        "the VF's ID is shared with its PF, so nothing binds early"


def test_drop_ins_are_idempotent_and_go_with_the_last_id(tmp_path: Path) -> None:
    with_generators(lab_vm(tmp_path, lab_vm_functions(gpu_driver="vfio-pci", audio_driver="vfio-pci")),
                    "/etc/initramfs-tools", "/etc/dracut.conf.d")
    for change in plan_for(tmp_path, addresses=["02:00.0"], early_binding=True)["file_changes"]:
        write(tmp_path, change.host_path, change.after)
    assert plan_for(tmp_path, addresses=["02:00.0"], early_binding=True)["file_changes"] == []
    gone = changes_of(plan_for(tmp_path, addresses=["02:00.0"], state="absent"))
    assert gone[MODPROBE_CONF].after is None
    assert gone[INITRAMFS_TOOLS_HOOK].after is None and gone[DRACUT_CONF].after is None


def test_initramfs_tools_hook_is_posix_sh_and_answers_prereqs(tmp_path: Path) -> None:
    with_generators(lab_vm(tmp_path / "root"), "/etc/initramfs-tools")
    hook = changes_of(plan_for(tmp_path / "root", addresses=["02:00.0"], early_binding=True))[INITRAMFS_TOOLS_HOOK]
    assert subprocess.run(["sh", "-n"], input=hook.after, text=True, check=False).returncode == 0
    script = tmp_path / "hook"
    script.write_text(hook.after)
    proc = subprocess.run(["sh", str(script), "prereqs"], capture_output=True, text=True, check=False)
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, "\n", ""), "run_scripts asks each hook for its prereqs"


def test_dracut_drop_in_reads_as_dracut_reads_it(tmp_path: Path) -> None:
    """dracut sources each conf file with bash and then runs instmods on the words of force_drivers."""
    with_generators(lab_vm(tmp_path / "root"), "/etc/dracut.conf.d")
    conf = tmp_path / "drop-in.conf"
    conf.write_text(changes_of(plan_for(tmp_path / "root", addresses=["02:00.0"],
                                        early_binding=True))[DRACUT_CONF].after)
    script = 'force_drivers=" i915 "; . "$1"; printf "%s\\n" $force_drivers'
    proc = subprocess.run(["bash", "-c", script, "-", str(conf)], capture_output=True, text=True, check=True)
    assert proc.stdout.split() == ["i915", "vfio_pci", "vfio_iommu_type1"], "appends, keeps what other files set"


def test_persist_false_touches_no_file(tmp_path: Path) -> None:
    lab_vm(tmp_path)
    assert plan_for(tmp_path, addresses=["02:00.0"], persist=False, early_binding=True)["file_changes"] == []


# --------------------------------------------------------------------------
# Runtime primitives (pci_bind)
# --------------------------------------------------------------------------

def test_unbind_that_blocks_times_out_naming_the_device(tmp_path: Path) -> None:
    lab_vm(tmp_path)
    unbind = tmp_path / "sys/bus/pci/drivers/snd_hda_intel/unbind"
    unbind.unlink()
    os.mkfifo(unbind)
    started = time.monotonic()
    with pytest.raises(pci_bind.WriteTimeout) as error:
        pci_bind.unbind(HostRoot(str(tmp_path)), "0000:02:00.1", 0.5, group=11)
    assert time.monotonic() - started < 5
    message = str(error.value)
    assert message.startswith("0000:02:00.1: unbinding it from snd_hda_intel did not finish within 0.5 s")
    assert "a process holds the device" in message and "fuser -v" in message


@pytest.mark.parametrize(("driver", "group", "hint"), [
    ("nvidia", 5, "fuser -v /dev/nvidia*"),
    ("vfio-pci", 5, "fuser -v /dev/vfio/5"),
])
def test_holder_hints_point_at_the_device_nodes(driver: str, group: int, hint: str) -> None:
    assert hint in pci_bind.holder_hint("0000:03:00.0", driver, group)


def test_bind_writes_the_kernel_sequence_then_waits_for_the_driver(tmp_path: Path) -> None:
    lab_vm(tmp_path)
    host = HostRoot(str(tmp_path))
    with pytest.raises(pci_bind.BindError, match=r"0000:02:00.1: not bound to vfio-pci within 0.3 s \(driver now: "
                                                 r"snd_hda_intel\)"):
        pci_bind.bind(host, "0000:02:00.1", "vfio-pci", 0.3, 11)
    assert (device_dir(tmp_path, "0000:02:00.1") / "driver_override").read_text() == "vfio-pci"
    assert (tmp_path / "sys/bus/pci/drivers/snd_hda_intel/unbind").read_text() == "0000:02:00.1"
    assert (tmp_path / "sys/bus/pci/drivers_probe").read_text() == "0000:02:00.1"


def test_release_clears_the_override_and_probes(tmp_path: Path) -> None:
    lab_vm(tmp_path, lab_vm_functions(vf_driver="vfio-pci"))
    override = device_dir(tmp_path, "0000:01:00.1") / "driver_override"
    override.write_text("vfio-pci\n")
    host = HostRoot(str(tmp_path))
    assert pci_bind.driver_override(host, "0000:01:00.1") == "vfio-pci"
    after = pci_bind.release(host, "0000:01:00.1", "vfio-pci", 0.3, 9)
    assert override.read_text() == "\n" and pci_bind.driver_override(host, "0000:01:00.1") is None
    assert (tmp_path / "sys/bus/pci/drivers/vfio-pci/unbind").read_text() == "0000:01:00.1"
    assert (tmp_path / "sys/bus/pci/drivers_probe").read_text() == "0000:01:00.1"
    assert after == "vfio-pci", "a fake tree has no kernel to move the driver link"


def test_sysfs_writes_never_create_files(tmp_path: Path) -> None:
    lab_vm(tmp_path)
    (device_dir(tmp_path, "0000:05:00.0") / "driver_override").unlink()
    host = HostRoot(str(tmp_path))
    with pytest.raises(pci_bind.BindError, match="cannot open /sys/bus/pci/devices/0000:05:00.0/driver_override"):
        pci_bind.bind(host, "0000:05:00.0", "vfio-pci", 0.3)
    assert not (device_dir(tmp_path, "0000:05:00.0") / "driver_override").exists()
    (tmp_path / "sys/bus/pci/drivers_probe").unlink()
    with pytest.raises(pci_bind.BindError, match="probing a driver for it failed"):
        pci_bind.probe(host, "0000:05:00.0", 2)


def test_a_missing_driver_is_loaded_only_on_the_live_host(tmp_path: Path) -> None:
    lab_vm(tmp_path)
    host = HostRoot(str(tmp_path))
    runner = InitramfsRunner(SYSTEM_PATH, False, host.root)  # the runner pci_driver gives load_driver
    pci_bind.load_driver(host, "vfio-pci", 1, runner)
    assert runner.commands == [], "vfio-pci is there"
    with pytest.raises(pci_bind.BindError, match="driver pci-stub is not loaded in .* modprobe runs only on the live"):
        pci_bind.load_driver(host, "pci-stub", 1, runner)
    assert pci_bind.driver_module(host, "bochs-drm") == "bochs" and pci_bind.driver_module(host, "pcieport") is None


# --------------------------------------------------------------------------
# The udev helper, run with sh against a tree
# --------------------------------------------------------------------------

def run_helper(tmp_path: Path, root: Path, address: str) -> subprocess.CompletedProcess:
    helper = tmp_path / "pci-override"
    helper.write_text(HELPER_SCRIPT)
    helper.chmod(0o755)
    return subprocess.run(["sh", str(helper), address], env=dict(os.environ, **{ROOT_ENV: str(root)}),
                          capture_output=True, text=True, timeout=30, check=False)


def test_without_the_collections_files_the_plan_fails_naming_the_file(tmp_path: Path) -> None:
    """The module called bare (no action plugin) has no helper to install: it says so and writes nothing."""
    lab_vm(tmp_path)
    intent = build_intent({"addresses": ["02:00.0"]})
    with pytest.raises(PciDriverError, match="file pci-override.sh did not reach the module: run it as a task"):
        make_plan(gather_facts(HostRoot(str(tmp_path)), intent), intent)


def test_helper_script_is_posix_sh() -> None:
    proc = subprocess.run(["sh", "-n"], input=HELPER_SCRIPT, capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr


def test_helper_binds_a_bound_device_from_its_driverctl_file(tmp_path: Path) -> None:
    root = lab_vm(tmp_path / "root")
    write(root, "/etc/driverctl.d/pci-0000:02:00.1", "vfio-pci\n")
    proc = run_helper(tmp_path, root, "0000:02:00.1")
    assert proc.returncode == 0, proc.stderr
    assert (device_dir(root, "0000:02:00.1") / "driver_override").read_text() == "vfio-pci"
    assert (root / "sys/bus/pci/drivers/snd_hda_intel/unbind").read_text() == "0000:02:00.1"


def test_helper_probes_an_unbound_device_and_ignores_others(tmp_path: Path) -> None:
    root = lab_vm(tmp_path / "root")
    write(root, "/etc/driverctl.d/pci-0000:01:00.1", "vfio-pci")
    assert run_helper(tmp_path, root, "0000:01:00.1").returncode == 0
    assert (device_dir(root, "0000:01:00.1") / "driver_override").read_text() == "vfio-pci"
    assert (root / "sys/bus/pci/drivers_probe").read_text() == "0000:01:00.1"
    before = snapshot(root)
    assert run_helper(tmp_path, root, "0000:02:00.0").returncode == 0, "no override file: nothing to do"
    write(root, "/etc/driverctl.d/pci-0000:00:10.0", "pcieport\n")
    assert run_helper(tmp_path, root, "0000:00:10.0").returncode == 0, "already on its driver: nothing to do"
    after = snapshot(root)
    del after["etc/driverctl.d/pci-0000:00:10.0"]
    assert after == before


def test_helper_binds_a_device_whose_driver_leaves_on_its_own(tmp_path: Path) -> None:
    """At boot a VF of the lab's NVMe PF is taken by nvme, whose probe fails late and releases it
    ("Removing after probe failure status: -19"): the helper's unbind then fails (here: nvme has no unbind
    file) while the driver is leaving. It waits for the link to go and probes again, instead of exiting 1
    and leaving the VF on no driver (what the lab's devices scenario saw after its reboot)."""
    root = lab_vm(tmp_path / "root")
    write(root, "/etc/driverctl.d/pci-0000:01:00.1", "vfio-pci\n")
    link = device_dir(root, "0000:01:00.1") / "driver"
    link.symlink_to("../../../../bus/pci/drivers/nvme-leaving")
    timer = threading.Timer(0.5, link.unlink)
    timer.start()
    try:
        proc = run_helper(tmp_path, root, "0000:01:00.1")
    finally:
        timer.join()
    assert proc.returncode == 0, proc.stderr
    assert (root / "sys/bus/pci/drivers_probe").read_text() == "0000:01:00.1"


def test_helper_fails_when_the_driver_stays(tmp_path: Path) -> None:
    root = lab_vm(tmp_path / "root")
    write(root, "/etc/driverctl.d/pci-0000:01:00.1", "vfio-pci\n")
    (device_dir(root, "0000:01:00.1") / "driver").symlink_to("../../../../bus/pci/drivers/nvme-stuck")
    proc = run_helper(tmp_path, root, "0000:01:00.1")
    assert proc.returncode == 1
    assert "pci-override: 0000:01:00.1 stays on nvme-stuck: unbind failed" in proc.stderr
    assert not (root / "sys/bus/pci/drivers_probe").read_text()


def test_lab_like_tree_from_fake_sysfs_works_too(tmp_path: Path) -> None:
    build_tree(tmp_path, lab_like_host(), drivers=("vfio-pci",))
    add_kernel_interface(tmp_path)
    host = HostRoot(str(tmp_path))
    intent = build_intent({"addresses": ["01:00.0"], "_shipped_files": SHIPPED})
    plan = make_plan(gather_facts(host, intent), intent)
    assert actions(plan) == {"0000:01:00.0": "bind", "0000:01:00.1": "bind"} and plan["refused"] == []
    assert any("no mount of / in /proc/self/mountinfo" in w for w in host.warnings), \
        "a tree without mounts says that the boot disk was not checked"
