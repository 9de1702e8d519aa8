# Copyright: contributors to confidential_gpu.host
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""PCI functions a host cannot lose: its boot disk's controller, its default-route NIC, its console.

Read through :class:`HostRoot` (so a captured or synthetic tree works too):

- **boot disk**: the mounts of ``/``, ``/boot`` and ``/boot/efi`` in
  ``/proc/self/mountinfo`` (``/proc/mounts`` when it is missing) give a device
  number, ``/sys/dev/block/<major:minor>`` its block device; the PCI function is
  the last one in that device's sysfs path (a partition's path runs through
  its disk).  Device-mapper and md devices (LVM, LUKS, RAID) are followed
  through ``slaves/`` down to their disks; an NVMe multipath head through its
  subsystem to the controllers;
- **default-route NIC**: interfaces with a default route in ``/proc/net/route``
  (destination and mask 0, route up) and ``/proc/net/ipv6_route`` (::/0, not
  ``lo``), then ``/sys/class/net/<if>``'s sysfs path; bonds, VLANs and bridges
  through their ``lower_*`` links, ``brif/`` and ``bonding/slaves``;
- **console**: when fbcon is bound to a virtual console
  (``/sys/class/vtconsole/vtcon*/name`` says "frame buffer device" and ``bind``
  is 1, or does not answer within BIND_READ_SECONDS), the framebuffers it maps consoles to (``fbcon=map:`` on the kernel
  command line, else fb0 and the boot VGA device's framebuffer, which fbcon
  takes as primary) and the PCI function under
  ``/sys/class/graphics/fbN``; for a firmware framebuffer (efifb,
  simple-framebuffer, vesafb: not below a PCI function) the device with
  ``boot_vga`` 1, whose memory it is; and the boot VGA device when the VGA text
  console (vgacon) is bound.

A critical VF makes its PF critical too: unbinding the PF's driver removes the VFs.

Standard library only: this runs on target hosts with Python >= 3.8.
"""

from __future__ import annotations

import os
import re
from typing import Any, Dict, List, Optional, Sequence, Set, Tuple

from ansible_collections.confidential_gpu.host.plugins.module_utils.host_write import read_attributes
from ansible_collections.confidential_gpu.host.plugins.module_utils.pci_device import VFIO_DRIVERS
from ansible_collections.confidential_gpu.host.plugins.module_utils.pci_topology import split_sysfs_path
from ansible_collections.confidential_gpu.host.plugins.module_utils.sysfs import HostRoot

# Mounts whose disk the host needs to run and to boot again.
BOOT_MOUNTS = ("/", "/boot", "/boot/efi")
# How long the vtconsole ``bind`` reads may wait for the console lock (see bound_consoles).
BIND_READ_SECONDS = 5


def _unescape(field: str) -> str:
    """Mount point as written in /proc/self/mountinfo (octal escapes like \\040 for a space)."""
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


def read_mounts(host: HostRoot) -> List[Tuple[str, Optional[str], str]]:
    """(mount point, major:minor or None, source) of every mount; mountinfo first, /proc/mounts else."""
    mounts: List[Tuple[str, Optional[str], str]] = []
    text = host.read_text("/proc/self/mountinfo")
    if text:
        for line in text.splitlines():
            fields = line.split()
            if " - " not in line or len(fields) < 5:
                continue
            tail = line.split(" - ", 1)[1].split()
            mounts.append((_unescape(fields[4]), fields[2], tail[1] if len(tail) > 1 else ""))
        return mounts
    for line in (host.read_text("/proc/mounts") or "").splitlines():
        fields = line.split()
        if len(fields) >= 2:
            mounts.append((_unescape(fields[1]), None, fields[0]))
    return mounts


def block_device_of(host: HostRoot, majmin: Optional[str], source: str) -> Optional[str]:
    """Kernel name of the block device behind a mount (``vda1``, ``dm-0``), None when it has none."""
    if majmin and host.exists("/sys/dev/block/%s" % majmin):
        return os.path.basename(host.realpath("/sys/dev/block/%s" % majmin))
    if source.startswith("/dev/"):
        name = os.path.basename(host.realpath(source))
        if host.exists("/sys/class/block/%s" % name):
            return name
    return None


def last_pci_address(host_path: str) -> Optional[str]:
    chain, _root_complex = split_sysfs_path(host_path)
    return chain[-1] if chain else None


def nvme_subsystem_controllers(host: HostRoot, path: str) -> List[str]:
    """PCI functions of the controllers of an NVMe multipath subsystem that holds a namespace head."""
    head = path.split("/nvme-subsystem/", 1)
    subsystem = head[0] + "/nvme-subsystem/" + head[1].split("/", 1)[0]
    found = []
    for entry in host.listdir(subsystem):
        if re.match(r"^nvme\d+$", entry):
            address = last_pci_address(host.realpath("%s/%s" % (subsystem, entry)))
            if address:
                found.append(address)
    return found


def block_controllers(host: HostRoot, name: str, seen: Optional[Set[str]] = None) -> List[str]:
    """PCI functions that hold a block device: its controller, or those of its slaves (dm, md, LVM)."""
    seen = set() if seen is None else seen
    if name in seen:
        return []
    seen.add(name)
    path = host.realpath("/sys/class/block/%s" % name)
    address = last_pci_address(path)
    if address:
        return [address]
    if "/nvme-subsystem/" in path:
        return nvme_subsystem_controllers(host, path)
    base = os.path.dirname(path) if host.exists(path + "/partition") else path
    found: List[str] = []
    for slave in host.listdir(base + "/slaves"):
        found += block_controllers(host, slave, seen)
    if not found:
        host.warn("cannot tell which PCI device holds /dev/%s (%s); it is not checked as host-critical"
                  % (name, path))
    return found


def boot_disk_controllers(host: HostRoot) -> Dict[str, List[str]]:
    """PCI address -> reasons, for the controllers of the disks of ``/``, ``/boot`` and ``/boot/efi``."""
    visible: Dict[str, Tuple[Optional[str], str]] = {}
    for mountpoint, majmin, source in read_mounts(host):
        if mountpoint in BOOT_MOUNTS:
            visible[mountpoint] = (majmin, source)
    critical: Dict[str, List[str]] = {}
    if "/" not in visible:
        host.warn("no mount of / in /proc/self/mountinfo or /proc/mounts: the boot disk's controller is not "
                  "checked as host-critical")
    for mountpoint in BOOT_MOUNTS:
        if mountpoint not in visible:
            continue
        majmin, source = visible[mountpoint]
        name = block_device_of(host, majmin, source)
        if name is None:
            if mountpoint == "/":
                host.warn("cannot find the block device of / (%s, %s): the boot disk's controller is not "
                          "checked as host-critical" % (source or "no source", majmin or "no device number"))
            continue
        for address in block_controllers(host, name):
            critical.setdefault(address, []).append(
                "it controls the disk holding %s (/dev/%s)" % (mountpoint, name))
    return critical


def default_route_interfaces(host: HostRoot) -> List[str]:
    """Interfaces that carry a default route, IPv4 (/proc/net/route) or IPv6 (/proc/net/ipv6_route)."""
    names: List[str] = []
    for line in (host.read_text("/proc/net/route") or "").splitlines()[1:]:
        fields = line.split()
        if len(fields) >= 8 and fields[1] == "00000000" and fields[7] == "00000000" and int(fields[3], 16) & 1:
            names.append(fields[0])
    for line in (host.read_text("/proc/net/ipv6_route") or "").splitlines():
        fields = line.split()
        if len(fields) >= 10 and fields[0] == "0" * 32 and fields[1] == "00" and fields[9] != "lo" \
                and int(fields[8], 16) & 1:
            names.append(fields[9])
    return sorted(set(names))


def interface_devices(host: HostRoot, name: str, seen: Optional[Set[str]] = None) -> List[str]:
    """PCI functions under a network interface: its own, or its lower devices' (bond, VLAN, bridge)."""
    seen = set() if seen is None else seen
    if name in seen:
        return []
    seen.add(name)
    base = "/sys/class/net/%s" % name
    address = last_pci_address(host.realpath(base))
    if address:
        return [address]
    lower = [entry[len("lower_"):] for entry in host.listdir(base) if entry.startswith("lower_")]
    lower += host.listdir(base + "/brif")
    lower += (host.read_text(base + "/bonding/slaves") or "").split()
    found: List[str] = []
    for port in sorted(set(lower)):
        found += interface_devices(host, port, seen)
    return found


def default_route_nics(host: HostRoot) -> Dict[str, List[str]]:
    critical: Dict[str, List[str]] = {}
    for name in default_route_interfaces(host):
        for address in interface_devices(host, name):
            critical.setdefault(address, []).append("it carries the default route (interface %s)" % name)
    return critical


def fbcon_map(host: HostRoot) -> Optional[List[int]]:
    """Framebuffers named by ``fbcon=map:`` on the kernel command line; None without it."""
    for token in (host.read_text("/proc/cmdline") or "").split():
        if not token.startswith("fbcon="):
            continue
        for option in token[len("fbcon="):].split(","):
            if option.startswith("map:") and option[4:].isdigit():
                return sorted({int(digit) for digit in option[4:]})
    return None


def console_framebuffer_numbers(host: HostRoot, boot_vga: Sequence[str]) -> List[int]:
    """Framebuffers fbcon draws consoles on.

    ``fbcon=map:`` when given; else fb0 (the first one registered) and the
    framebuffer of the boot VGA device, which fbcon prefers as primary when the
    kernel has CONFIG_FRAMEBUFFER_CONSOLE_DETECT_PRIMARY (fb_is_primary_device: the boot VGA device).
    """
    mapped = fbcon_map(host)
    if mapped is not None:
        return mapped
    numbers = {0}
    for entry in host.listdir("/sys/class/graphics"):
        if entry.startswith("fb") and entry[2:].isdigit() and \
                last_pci_address(host.realpath("/sys/class/graphics/" + entry)) in boot_vga:
            numbers.add(int(entry[2:]))
    return sorted(numbers)


def bound_consoles(host: HostRoot) -> Tuple[bool, bool, str]:
    """(fbcon bound, VGA text console bound, a note for the reasons), from /sys/class/vtconsole/vtcon*/{name,bind}.

    Without vtconsole entries, fbcon counts as bound when /sys/class/graphics/fbcon exists.  Reading ``bind``
    takes the console lock (show_bind() in drivers/tty/vt/vt.c, since Linux 5.3: commit 61d51456f357 "vt: Grab
    console_lock around con_is_bound in show_bind"), which a task stuck in a display driver can hold for ever
    (seen on the lab guest's Linux 6.1 during a DRM modeset deadlock).  So the reads run in a child with a time
    limit (host_write.read_attributes), and consoles whose ``bind`` does not answer count as bound, with a note
    saying so.
    """
    entries = host.listdir("/sys/class/vtconsole")
    if not entries:
        return host.exists("/sys/class/graphics/fbcon"), False, ""
    names = {entry: host.read_text("/sys/class/vtconsole/%s/name" % entry) or "" for entry in entries}
    consoles = [entry for entry in entries if "frame buffer" in names[entry] or "VGA" in names[entry]]
    if not consoles:
        return False, False, ""
    paths = ["/sys/class/vtconsole/%s/bind" % entry for entry in consoles]
    binds = read_attributes(host, paths, BIND_READ_SECONDS)
    note = "" if binds is not None else (
        " (counted as bound: reading %s did not answer within %d s, so the console lock is held)"
        % (" and ".join(paths), BIND_READ_SECONDS))
    bound = [names[entry] for index, entry in enumerate(consoles) if binds is None or binds[index] == "1"]
    return any("frame buffer" in name for name in bound), any("VGA" in name for name in bound), note


def boot_vga_devices(host: HostRoot, devices: Sequence[Dict[str, Any]]) -> List[Dict[str, Any]]:
    return [dev for dev in devices if (dev["class_id"] or "").startswith("03")
            and host.read_text("/sys/bus/pci/devices/%s/boot_vga" % dev["address"]) == "1"]


def console_devices(host: HostRoot, devices: Sequence[Dict[str, Any]]) -> Dict[str, List[str]]:
    """PCI functions the active console is drawn by.

    - each framebuffer fbcon maps consoles to (``/sys/class/graphics/fbN``,
      see :func:`console_framebuffer_numbers`) whose sysfs path is below a PCI
      function;
    - the boot VGA device (``boot_vga`` 1) when such a framebuffer is a firmware
      one (efifb, simple-framebuffer, vesafb: it lives in that device's memory),
      when fbcon is bound but none of its framebuffers exists, or when the VGA
      text console (vgacon) is bound.
    """
    fbcon, vga, note = bound_consoles(host)
    critical: Dict[str, List[str]] = {}
    if not (fbcon or vga):
        return critical
    boot_vga = boot_vga_devices(host, devices)
    found_fb = False
    numbers = console_framebuffer_numbers(host, [dev["address"] for dev in boot_vga]) if fbcon else []
    for number in numbers:
        path = "/sys/class/graphics/fb%d" % number
        if not host.exists(path):
            continue
        found_fb = True
        label = host.read_text(path + "/name") or "fb%d" % number
        address = last_pci_address(host.realpath(path))
        if address:
            critical.setdefault(address, []).append(
                "fbcon draws the active console on its framebuffer fb%d (%s)" % (number, label))
            continue
        for dev in boot_vga:
            critical.setdefault(dev["address"], []).append(
                "the active console is on the firmware framebuffer fb%d (%s), which lives in this boot VGA "
                "device's memory" % (number, label))
    if fbcon and not found_fb:
        for dev in boot_vga:
            if dev["driver"] and dev["driver"] not in VFIO_DRIVERS:
                critical.setdefault(dev["address"], []).append(
                    "fbcon is bound but no framebuffer it maps to exists; this boot VGA device (driver %s) most "
                    "likely shows the console" % dev["driver"])
    if vga:
        for dev in boot_vga:
            critical.setdefault(dev["address"], []).append("the VGA text console (vgacon) is drawn by this boot "
                                                           "VGA device")
    return {address: [reason + note for reason in reasons] for address, reasons in critical.items()}


# What makes a function host-critical, as discovery and pci_driver report it.
CRITICAL_KINDS = ("boot_disk", "default_route", "console")


def critical_functions(host: HostRoot, devices: Sequence[Dict[str, Any]]) -> Dict[str, List[Tuple[str, str]]]:
    """PCI address -> (kind, reason) pairs: why the host cannot lose it; kind is one of CRITICAL_KINDS.

    Mounts, routes and consoles are read once for all functions.  The PF of a
    critical VF is critical too (with its VF's first kind): unbinding a PF's
    driver removes its VFs.
    """
    critical: Dict[str, List[Tuple[str, str]]] = {}
    for kind, part in zip(CRITICAL_KINDS, (boot_disk_controllers(host), default_route_nics(host),
                                           console_devices(host, devices))):
        for address, reasons in part.items():
            critical.setdefault(address, []).extend((kind, reason) for reason in reasons)
    by_address = {dev["address"]: dev for dev in devices}
    for address in list(critical):
        pf = (by_address.get(address) or {}).get("physfn")
        if pf:
            vf_why = "; ".join(reason for _kind, reason in critical[address])
            critical.setdefault(pf, []).append((critical[address][0][0], "its virtual function %s is host-critical "
                                                "(%s); unbinding a PF's driver removes its VFs" % (address, vf_why)))
    return critical


def host_critical(host: HostRoot, devices: Sequence[Dict[str, Any]]) -> Dict[str, List[str]]:
    """PCI address -> why the host cannot lose it (boot disk, default-route NIC, console)."""
    return {address: [reason for _kind, reason in entries]
            for address, entries in critical_functions(host, devices).items()}


def mark_host_critical(host: HostRoot, topology: Dict[str, Any]) -> None:
    """Add ``host_critical`` to every function and IOMMU group of a read_topology result.

    A function gets its list of ``{kind, reason}`` (empty when the host can
    lose it); a group gets ``{address, kind, reason}`` of each critical member.
    """
    critical = critical_functions(host, topology["devices"])
    for dev in topology["devices"]:
        dev["host_critical"] = [{"kind": kind, "reason": reason} for kind, reason in critical.get(dev["address"], [])]
    for group in topology["iommu_groups"]:
        group["host_critical"] = [{"address": address, "kind": kind, "reason": reason}
                                  for address in group["devices"] for kind, reason in critical.get(address, [])]
