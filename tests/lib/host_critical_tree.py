"""Fake host trees for pci_driver: the lab VM's PCI layout plus what makes devices host-critical.

Builds on tests/lib/fake_sysfs.py (functions, groups, drivers) and adds what a
driver change and the host-critical checks read on a real host:

- the kernel's driver interface files: ``driver_override`` per function
  (``(null)``), ``/sys/bus/pci/drivers_probe``, ``bind``/``unbind`` per driver
  and each driver's ``module`` link (``bochs-drm`` -> module ``bochs``);
- mounts (``/proc/self/mountinfo``), block devices (``/sys/class/block``,
  ``/sys/dev/block``), device-mapper slaves and ``/dev/mapper`` links;
- routes (``/proc/net/route``, ``/proc/net/ipv6_route``) and interfaces
  (``/sys/class/net``, ``lower_*`` links of bonds);
- framebuffers (``/sys/class/graphics/fbN``, ``fbcon``), virtual consoles
  (``/sys/class/vtconsole``) and ``boot_vga``.

Symlinks are relative, as in sysfs, so that resolving them stays in the tree.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Dict, List, Optional, Sequence

from fake_sysfs import ConfigBuilder, FakeFunction, bridge_function, build_tree, virtual_function
from tree_state import tree_state

# The pci_driver tests compare trees before and after with this name.
snapshot = tree_state

# Kernel driver name -> module name, where they differ or matter (None: built in).
DRIVER_MODULES: Dict[str, Optional[str]] = {
    "bochs-drm": "bochs", "snd_hda_intel": "snd_hda_intel", "virtio-pci": "virtio_pci", "nvme": "nvme",
    "ahci": "ahci", "lpc_ich": "lpc_ich", "i801_smbus": "i2c_i801", "vfio-pci": "vfio_pci", "nvidia": "nvidia",
    "nvidia-nvswitch": "nvidia", "mlx5_core": "mlx5_core", "pcieport": None,
}


def endpoint(address: str, vendor: int, device: int, class_code: int, driver: Optional[str], group: int,
             multifunction: bool = False, sriov: Optional[Dict[str, int]] = None) -> FakeFunction:
    config = ConfigBuilder(vendor, device, class_code, multifunction=multifunction).express("endpoint", 8.0, 4)
    if sriov:
        config.sriov(**sriov)
    return FakeFunction(address, config.bytes(), driver=driver, iommu_group=group)


def lab_vm_functions(gpu_driver: Optional[str] = "bochs-drm", audio_driver: Optional[str] = "snd_hda_intel",
                     vf_driver: Optional[str] = None) -> List[FakeFunction]:
    """The lab VM of docs/lab.md: q35, virtio disk and NIC, ICH9 group, NVMe PF with 2 VFs, display + HDA, a switch."""
    host_bridge = FakeFunction("0000:00:00.0", ConfigBuilder(0x8086, 0x29C0, 0x060000).bytes(), iommu_group=0)
    functions = [
        host_bridge,
        endpoint("0000:00:03.0", 0x1AF4, 0x1001, 0x010000, "virtio-pci", 1),
        endpoint("0000:00:04.0", 0x1AF4, 0x1000, 0x020000, "virtio-pci", 2),
    ]
    ports = [("0000:00:10.0", 1, 1, 3), ("0000:00:10.1", 2, 2, 4), ("0000:00:10.2", 3, 6, 5), ("0000:00:10.3", 7, 7, 6)]
    for address, secondary, subordinate, group in ports:
        port = bridge_function(address, 0x1B36, 0x000C, "root_port", secondary, subordinate)
        port.iommu_group = group
        functions.append(port)
    functions += [
        FakeFunction("0000:00:1f.0", ConfigBuilder(0x8086, 0x2918, 0x060100, multifunction=True).bytes(),
                     driver="lpc_ich", iommu_group=7),
        FakeFunction("0000:00:1f.2", ConfigBuilder(0x8086, 0x2922, 0x010601).bytes(), driver="ahci", iommu_group=7),
        FakeFunction("0000:00:1f.3", ConfigBuilder(0x8086, 0x2930, 0x0C0500).bytes(), driver="i801_smbus",
                     iommu_group=7),
        endpoint("0000:01:00.0", 0x1B36, 0x0010, 0x010802, "nvme", 8,
                 sriov={"total_vfs": 4, "num_vfs": 2, "vf_offset": 1, "vf_stride": 1, "vf_device": 0x0010}),
    ]
    for index in range(2):
        vf = virtual_function("0000:01:00.%d" % (index + 1), "0000:01:00.0", 0x1B36, 0x0010, 0x010802, vf_driver)
        vf.iommu_group = 9 + index
        functions.append(vf)
    upstream = bridge_function("0000:03:00.0", 0x104C, 0x8232, "upstream_port", 4, 6, acs=False)
    upstream.iommu_group = 12
    down0 = bridge_function("0000:04:00.0", 0x104C, 0x8233, "downstream_port", 5, 5, acs=False)
    down1 = bridge_function("0000:04:01.0", 0x104C, 0x8233, "downstream_port", 6, 6, acs=False)
    down0.iommu_group, down1.iommu_group = 13, 14
    functions += [
        endpoint("0000:02:00.0", 0x1234, 0x1111, 0x038000, gpu_driver, 11, multifunction=True),
        endpoint("0000:02:00.1", 0x8086, 0x293E, 0x040300, audio_driver, 11),
        upstream, down0, down1,
        endpoint("0000:05:00.0", 0x1234, 0x11E8, 0x00FF00, None, 13),
        endpoint("0000:06:00.0", 0x1AF4, 0x1050, 0x038000, "virtio-pci", 14),
    ]
    return functions


def link(link_path: Path, target: Path) -> None:
    link_path.parent.mkdir(parents=True, exist_ok=True)
    if link_path.is_symlink():
        link_path.unlink()
    os.symlink(os.path.relpath(target, link_path.parent), link_path)


def device_dir(root: Path, address: str) -> Path:
    return Path(os.path.realpath(root / "sys/bus/pci/devices" / address))


def add_kernel_interface(root: Path, drivers: Sequence[str] = ("vfio-pci",)) -> None:
    """driver_override per function, drivers_probe, bind/unbind and the module link per driver."""
    pci = root / "sys/bus/pci"
    for name in drivers:
        (pci / "drivers" / name).mkdir(parents=True, exist_ok=True)
    (pci / "drivers_probe").write_text("")
    (pci / "rescan").write_text("")
    for entry in (pci / "devices").iterdir():
        (device_dir(root, entry.name) / "driver_override").write_text("(null)\n")
    for driver in (pci / "drivers").iterdir():
        for name in ("bind", "unbind", "new_id", "remove_id"):
            (driver / name).write_text("")
        module = DRIVER_MODULES.get(driver.name, driver.name.replace("-", "_"))
        if module:
            (root / "sys/module" / module).mkdir(parents=True, exist_ok=True)
            link(driver / "module", root / "sys/module" / module)


def add_disk(root: Path, address: str, disk: str, majmin: str, subpath: str = "virtio0",
             partitions: Sequence[str] = ()) -> None:
    """A disk below a PCI function (``<function>/<subpath>/block/<disk>``), with partitions."""
    disk_dir = device_dir(root, address) / subpath / "block" / disk
    disk_dir.mkdir(parents=True, exist_ok=True)
    (disk_dir / "dev").write_text(majmin + "\n")
    link(root / "sys/class/block" / disk, disk_dir)
    link(root / "sys/dev/block" / majmin, disk_dir)
    major, minor = majmin.split(":")
    for number, part in enumerate(partitions, start=1):
        part_dir = disk_dir / part
        part_dir.mkdir(parents=True, exist_ok=True)
        (part_dir / "partition").write_text("%d\n" % number)
        part_majmin = "%s:%d" % (major, int(minor) + number)
        (part_dir / "dev").write_text(part_majmin + "\n")
        link(root / "sys/class/block" / part, part_dir)
        link(root / "sys/dev/block" / part_majmin, part_dir)


def add_dm(root: Path, name: str, majmin: str, slaves: Sequence[str], mapper_name: str) -> None:
    """A device-mapper device (LVM volume, LUKS) over other block devices."""
    dm_dir = root / "sys/devices/virtual/block" / name
    (dm_dir / "slaves").mkdir(parents=True, exist_ok=True)
    (dm_dir / "dev").write_text(majmin + "\n")
    for slave in slaves:
        link(dm_dir / "slaves" / slave, Path(os.path.realpath(root / "sys/class/block" / slave)))
    link(root / "sys/class/block" / name, dm_dir)
    link(root / "sys/dev/block" / majmin, dm_dir)
    link(root / "dev/mapper" / mapper_name, root / "dev" / name)
    (root / "dev" / name).touch()


def add_mount(root: Path, mountpoint: str, majmin: str, source: str, fstype: str = "ext4") -> None:
    mountinfo = root / "proc/self/mountinfo"
    mountinfo.parent.mkdir(parents=True, exist_ok=True)
    lines = mountinfo.read_text().splitlines() if mountinfo.exists() else []
    number = 20 + len(lines)
    lines.append("%d 1 %s / %s rw,relatime shared:1 - %s %s rw" % (number, majmin, mountpoint, fstype, source))
    mountinfo.write_text("\n".join(lines) + "\n")


def add_interface(root: Path, name: str, address: Optional[str], subpath: str = "virtio1") -> Path:
    """A network interface below a PCI function, or a virtual one (address None)."""
    if address is None:
        net_dir = root / "sys/devices/virtual/net" / name
    else:
        net_dir = device_dir(root, address) / subpath / "net" / name
    net_dir.mkdir(parents=True, exist_ok=True)
    link(root / "sys/class/net" / name, net_dir)
    return net_dir


def add_bond(root: Path, name: str, slaves: Sequence[str]) -> None:
    net_dir = add_interface(root, name, None)
    for slave in slaves:
        link(net_dir / ("lower_" + slave), Path(os.path.realpath(root / "sys/class/net" / slave)))
    (net_dir / "bonding").mkdir(exist_ok=True)
    (net_dir / "bonding/slaves").write_text(" ".join(slaves) + "\n")


def set_routes(root: Path, ipv4_default: Sequence[str] = (), ipv6_default: Sequence[str] = ()) -> None:
    """/proc/net/route and /proc/net/ipv6_route with default routes through these interfaces."""
    header = "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n"
    lines = ["%s\t00000000\t0202000A\t0003\t0\t0\t100\t00000000\t0\t0\t0" % name for name in ipv4_default]
    lines.append("lo\t0000007F\t00000000\t0001\t0\t0\t0\t000000FF\t0\t0\t0")
    (root / "proc/net").mkdir(parents=True, exist_ok=True)
    (root / "proc/net/route").write_text(header + "\n".join(lines) + "\n")
    zero = "0" * 32
    six = ["%s 00 %s 00 fe800000000000000000000000000001 00000400 00000001 00000000 00000003 %8s"
           % (zero, zero, name) for name in ipv6_default]
    six.append("%s 00 %s 00 %s ffffffff 00000001 00000000 00200200 %8s" % (zero, zero, zero, "lo"))
    (root / "proc/net/ipv6_route").write_text("\n".join(six) + "\n")


def add_framebuffer(root: Path, number: int, address: Optional[str], name: str) -> None:
    """fbN below a PCI function, or a firmware framebuffer on the platform bus (address None)."""
    if address is None:
        fb_dir = root / "sys/devices/platform/simple-framebuffer.0/graphics" / ("fb%d" % number)
    else:
        fb_dir = device_dir(root, address) / "graphics" / ("fb%d" % number)
    fb_dir.mkdir(parents=True, exist_ok=True)
    (fb_dir / "name").write_text(name + "\n")
    link(root / "sys/class/graphics" / ("fb%d" % number), fb_dir)


def set_consoles(root: Path, fbcon: bool = True, vga: bool = False) -> None:
    """fbcon's class directory and the virtual console drivers with their binding."""
    consoles = [("(S) dummy device", not (fbcon or vga))]
    if vga:
        consoles.append(("(S) VGA+", True))
    if fbcon:
        (root / "sys/class/graphics/fbcon").mkdir(parents=True, exist_ok=True)
        consoles.append(("(M) frame buffer device", True))
    for index, (name, bound) in enumerate(consoles):
        vtcon = root / "sys/devices/virtual/vtconsole" / ("vtcon%d" % index)
        vtcon.mkdir(parents=True, exist_ok=True)
        (vtcon / "name").write_text(name + "\n")
        (vtcon / "bind").write_text("1\n" if bound else "0\n")
        link(root / "sys/class/vtconsole" / ("vtcon%d" % index), vtcon)


def set_boot_vga(root: Path, address: str) -> None:
    (device_dir(root, address) / "boot_vga").write_text("1\n")


def write(root: Path, host_path: str, text: str) -> None:
    path = root / host_path.lstrip("/")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def lab_vm(root: Path, functions: Optional[List[FakeFunction]] = None) -> Path:
    """The lab VM as pci_driver sees it: / on vda1 (00:03.0), default route on enp0s4 (00:04.0), the active console
    on fb0 (virtio-gpu 06:00.0), fb1 on the bochs display (02:00.0), Debian 12, /dev/vfio."""
    build_tree(root, functions if functions is not None else lab_vm_functions(), drivers=("vfio-pci",))
    add_kernel_interface(root)
    add_disk(root, "0000:00:03.0", "vda", "254:0", partitions=["vda1"])
    add_mount(root, "/", "254:1", "/dev/vda1")
    add_interface(root, "lo", None)
    add_interface(root, "enp0s4", "0000:00:04.0")
    set_routes(root, ["enp0s4"], ["enp0s4"])
    add_framebuffer(root, 0, "0000:06:00.0", "virtio_gpudrmfb")
    add_framebuffer(root, 1, "0000:02:00.0", "bochs-drmdrmfb")
    set_consoles(root)
    write(root, "/proc/cmdline", "BOOT_IMAGE=/boot/vmlinuz-6.1.0-28-amd64 root=LABEL=root ro console=ttyS0,115200n8 "
                                 "intel_iommu=on iommu=pt\n")
    write(root, "/etc/os-release", 'PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\nID=debian\nVERSION_ID="12"\n')
    (root / "dev/vfio").mkdir(parents=True, exist_ok=True)
    (root / "dev/vfio/vfio").touch()
    return root


def bound_lab(root: Path, vf_driver: Optional[str] = None) -> Path:
    """The lab with the GPU pair (and the NVMe VFs, given ``vf_driver``) on vfio-pci already, so that nothing waits
    for a kernel: the GPU group's node and the pair's VFIO cdev nodes too."""
    lab_vm(root, lab_vm_functions(gpu_driver="vfio-pci", audio_driver="vfio-pci", vf_driver=vf_driver))
    (root / "dev/vfio/11").touch()
    for index, address in enumerate(("0000:02:00.0", "0000:02:00.1")):
        (device_dir(root, address) / "vfio-dev" / ("vfio%d" % index)).mkdir(parents=True)
        (root / "dev/vfio/devices").mkdir(exist_ok=True)
        (root / "dev/vfio/devices" / ("vfio%d" % index)).touch()
    return root


def shared_group_functions(nic_driver: Optional[str] = "mlx5_core") -> List[FakeFunction]:
    """The lab VM plus what makes IOMMU groups take functions nobody selected.

    - Root port 00:11.0 without ACS, a switch (no ACS on its ports) below it: an NVIDIA GPU 12:00.0 with its
      audio function 12:00.1 and a ConnectX NIC 13:00.0 in another slot, all in group 20 with the ports, as the
      kernel groups them (every function joins the group of the bridges above it that do not isolate it).
    - Root port 00:12.0 with ACS (group 21) and a BlueField DPU in its slot: NIC function 20:00.0 and its NVMe
      emulation function 20:00.1 (storage), one group (22): a multi-function device without ACS.
    """
    functions = lab_vm_functions()
    root_port = bridge_function("0000:00:11.0", 0x1022, 0x14AB, "root_port", 0x10, 0x13, acs=False)
    upstream = bridge_function("0000:10:00.0", 0x1000, 0xC030, "upstream_port", 0x11, 0x13, acs=False)
    down_gpu = bridge_function("0000:11:00.0", 0x1000, 0xC030, "downstream_port", 0x12, 0x12, acs=False)
    down_nic = bridge_function("0000:11:01.0", 0x1000, 0xC030, "downstream_port", 0x13, 0x13, acs=False)
    for port in (root_port, upstream, down_gpu, down_nic):
        port.iommu_group = 20
    dpu_port = bridge_function("0000:00:12.0", 0x1022, 0x14AB, "root_port", 0x20, 0x20)
    dpu_port.iommu_group = 21
    return functions + [
        root_port, upstream, down_gpu, down_nic,
        endpoint("0000:12:00.0", 0x10DE, 0x26B9, 0x030200, "nvidia", 20, multifunction=True),
        endpoint("0000:12:00.1", 0x10DE, 0x22BA, 0x040300, "snd_hda_intel", 20),
        endpoint("0000:13:00.0", 0x15B3, 0x1021, 0x020000, nic_driver, 20),
        dpu_port,
        endpoint("0000:20:00.0", 0x15B3, 0xA2D6, 0x020000, "mlx5_core", 22, multifunction=True),
        endpoint("0000:20:00.1", 0x15B3, 0x6001, 0x010802, "nvme", 22),
    ]
