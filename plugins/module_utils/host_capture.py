# Copyright: contributors to confidential_gpu.host
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Capture what the info modules read from a host, as a replayable archive.

One list of what is read (the constants below) and one writer, used by the
``host_capture`` module (``playbooks/capture.yml``) and by
``scripts/capture-host``.  The archive holds

  root/         the subset of /sys, /proc, /lib/modules and /dev that
                ``pci_topology_info`` and ``cc_host_info`` read, sysfs links
                kept as links, so that both run on it with ``root`` set to
                the archive's top directory exactly as on the host; and the
                boot configuration and managed files of /etc, /boot and
                /usr/local that ``prepare.yml --check`` reads besides;
  commands/     lspci and nvidia-smi output (live host only), as oracles;
  CAPTURE.json  the manifest: host, time, kernel, collection version, the
                sha256 of every file and the target of every link, and what
                was left out.

Nothing else: no key, no /etc file but those prepare reads (named below), no mount
table, route or console state (host_critical is what only the live host can
say: a replay names no host-critical device).  Device nodes and ACPI tables
are written as empty files: the modules ask only whether they exist.

Standard library only, Python >= 3.8: this runs on target hosts.
"""

from __future__ import annotations

import glob
import hashlib
import io
import json
import os
import re
import shutil
import subprocess
import tarfile
import time
from typing import Any, Dict, List, Optional, Sequence

# What pci_topology_info reads of a PCI function (module_utils/pci_topology.py): config space, NUMA node and
# boot_vga, and the identity attributes it falls back to where config space is cut short (unprivileged readers
# see 64 bytes); besides the links below and the virtfnN links of an SR-IOV PF.
PCI_FILES = ("config", "numa_node", "boot_vga", "vendor", "device", "class", "subsystem_vendor", "subsystem_device",
             # prepare --check besides: the override (module_utils/pci_bind.py), an SR-IOV PF's (module_utils/sriov.py)
             "driver_override", "sriov_totalvfs", "sriov_numvfs", "sriov_offset", "sriov_stride",
             "sriov_drivers_autoprobe")
PCI_LINKS = ("driver", "iommu_group", "physfn")
# Kernel modules whose presence cc_host_info tests (module_utils/cc_host.py), and the parameters it reads.
MODULES = ("kvm_amd", "kvm_intel", "vfio_pci", "ccp", "nvidia", "nouveau")
# The lines of modules.dep and /boot/config-<release> that cc_host_info reads (cc_host.py, KERNEL_MODULE_FILES as
# their files are named, KERNEL_CONFIG_OPTIONS).
KERNEL_MODULE_NEEDLES = ("vfio", "iommufd", "ccp")
KERNEL_CONFIG_OPTIONS = ("CONFIG_IOMMUFD", "CONFIG_VFIO_DEVICE_CDEV", "CONFIG_KVM_AMD_SEV", "CONFIG_INTEL_TDX_HOST")
MODULE_PARAMETERS = {"kvm_amd": ("sev", "sev_es", "sev_snp"), "kvm_intel": ("tdx",)}
# The counts cc_host_info reads of each hugepages-<N>kB pool, of the system and of each NUMA node.
HUGEPAGE_COUNTS = ("nr_hugepages", "free_hugepages", "resv_hugepages", "surplus_hugepages")
PROC_FILES = ("cmdline", "cpuinfo", "meminfo", "interrupts", "sys/kernel/osrelease")
DEV_NODES = ("kvm", "iommu", "sev", "vfio", "nvidiactl", "nvidia-uvm")
ACPI_TABLES = "/sys/firmware/acpi/tables"
# What prepare.yml's roles read in check mode on a GRUB host, beyond the info modules' files (the audit of
# tests/unit/test_capture_playbook.py lists them): the distribution, the boot configuration
# (module_utils/boot_grub.py, kernel_cmdline.py) and the files the roles write and read back, each under the name
# its module gives it (hugepages.py, sriov.py, pci_driver_persist.py; the test checks the names are theirs).
# Copied, as every file, with its mode and mtime: the roles compare a file's mode, kernel_args grub.cfg's mtime
# with its drop-in's.
PREPARE_FILES = ("/etc/os-release", "/etc/default/grub", "/boot/grub/grub.cfg",
                 "/etc/confidential-gpu/hugepages.conf", "/usr/local/sbin/confidential-gpu-hugepages",
                 "/etc/confidential-gpu/sriov.conf", "/usr/local/libexec/confidential-gpu/sriov-apply",
                 "/etc/udev/rules.d/70-confidential-gpu-vfio.rules", "/usr/local/libexec/confidential-gpu/pci-override",
                 "/etc/modprobe.d/confidential-gpu-vfio.conf", "/etc/initramfs-tools/hooks/confidential-gpu-vfio",
                 "/etc/dracut.conf.d/confidential-gpu-vfio.conf", "/etc/modprobe.d/confidential-gpu-kvm-amd.conf",
                 "/etc/modules-load.d/confidential-gpu.conf")
# Where cc_host_info lists the .conf files by name (kernel.module_config_files); the others' content is not read.
MODULE_CONFIG_DIRS = ("/etc/modprobe.d", "/etc/modules-load.d")
# Directories whose entries of these names prepare reads: GRUB's drop-ins (all sourced), driverctl's overrides, the
# collection's units and their enablement links (module_utils/systemd_units.py).
PREPARE_DIRS = {"/etc/default/grub.d": r"[^.].*\.cfg", "/etc/driverctl.d": r"pci-[0-9a-f:.]+",
                "/etc/systemd/system": r"confidential-gpu-[a-z]+\.service",
                "/etc/systemd/system/*.wants": r"confidential-gpu-[a-z]+\.service",
                "/etc/systemd/system/*.requires": r"confidential-gpu-[a-z]+\.service"}
# Run on the live host only (a root other than / is not the machine these commands would describe).
COMMANDS = {
    "lspci-xxxx.txt": ["lspci", "-D", "-xxxx"],
    "lspci-vvv.txt": ["lspci", "-D", "-vvv"],
    "lspci-tv.txt": ["lspci", "-D", "-tv"],
    "lspci-nnk.txt": ["lspci", "-D", "-nnk"],
    "nvidia-smi-q.xml": ["nvidia-smi", "-q", "-x"],
    "nvidia-smi-q.txt": ["nvidia-smi", "-q"],
    "nvidia-smi-topo-m.txt": ["nvidia-smi", "topo", "-m"],
    "nvidia-smi-conf-compute-f.txt": ["nvidia-smi", "conf-compute", "-f"],
    "nvidia-smi-conf-compute-grs.txt": ["nvidia-smi", "conf-compute", "-grs"],
    "uname-a.txt": ["uname", "-a"],
}
# What pci_topology_info reads to find host-critical devices (module_utils/host_critical.py) and a capture leaves
# out on purpose: mounts, routes, interfaces and consoles are the live host's, and say more about it than a support
# engineer needs to replay its GPUs.
NOT_CAPTURED = ("/proc/self/mountinfo", "/proc/mounts", "/proc/net/", "/sys/class/block/", "/sys/dev/block/",
                "/sys/class/net/", "/sys/class/graphics/", "/sys/class/vtconsole/")
MANIFEST = "CAPTURE.json"
SMALL_FILE = 1 << 20


class Capture:
    """An archive being written from the files below ``root``: files, links and directories below ``root/``."""

    def __init__(self, tar: tarfile.TarFile, root: str = "/") -> None:
        self.tar = tar
        self.prefix = "" if os.path.abspath(root) == "/" else os.path.abspath(root)
        self.seen: set = set()
        self.files: Dict[str, str] = {}
        self.links: Dict[str, str] = {}
        self.left_out: List[str] = []
        self.now = time.time()

    def local(self, host_path: str) -> str:
        return self.prefix + host_path

    def host_path_of(self, local_path: str) -> Optional[str]:
        """The host path of a resolved local path, ``None`` when it lies outside the root."""
        if not self.prefix:
            return local_path
        if local_path.startswith(self.prefix + "/"):
            return local_path[len(self.prefix):]
        return None

    def tar_info(self, name: str, kind: bytes, mode: int) -> tarfile.TarInfo:
        info = tarfile.TarInfo(name)
        info.type = kind
        info.mode = mode
        info.mtime = int(self.now)
        return info

    def add_dirs(self, arc_path: str) -> None:
        parts = arc_path.split("/")
        for depth in range(1, len(parts)):
            name = "/".join(parts[:depth])
            if name not in self.seen:
                self.seen.add(name)
                self.tar.addfile(self.tar_info(name, tarfile.DIRTYPE, 0o755))

    def add_bytes(self, arc_path: str, data: bytes, stat: Optional[os.stat_result] = None) -> None:
        """A file; with the ``stat`` of the host file, its mode and mtime (prepare compares both)."""
        if arc_path in self.seen:
            return
        self.add_dirs(arc_path)
        self.seen.add(arc_path)
        info = self.tar_info(arc_path, tarfile.REGTYPE, 0o644 if stat is None else stat.st_mode & 0o7777)
        info.size = len(data)
        if stat is not None:
            info.mtime = stat.st_mtime  # a float: pax keeps the fraction (grub.cfg and its drop-in may share a second)
        self.tar.addfile(info, io.BytesIO(data))
        self.files[arc_path] = hashlib.sha256(data).hexdigest()

    def add_link(self, arc_path: str, target: str) -> None:
        if arc_path in self.seen:
            return
        self.add_dirs(arc_path)
        self.seen.add(arc_path)
        info = self.tar_info(arc_path, tarfile.SYMTYPE, 0o777)
        info.linkname = target
        self.tar.addfile(info)
        self.links[arc_path] = target

    def copy(self, host_path: str, limit: int = SMALL_FILE) -> None:
        """A host file (or symlink, kept as one) into root/, quietly skipping what is absent."""
        local = self.local(host_path)
        arc = "root" + host_path
        if os.path.islink(local):
            self.add_link(arc, os.readlink(local))
            return
        if not os.path.isfile(local) or not os.stat(local).st_mode & 0o444:
            return
        try:
            with open(local, "rb") as handle:
                data = handle.read(limit)
                stat = os.fstat(handle.fileno())
        except OSError as exc:
            self.left_out.append("%s (%s)" % (host_path, exc.strerror or exc))
            return
        self.add_bytes(arc, data, stat)

    def resolve(self, host_path: str) -> Optional[str]:
        """The host path a link leads to, ``None`` (and left out) when it leads outside the root."""
        resolved = self.host_path_of(os.path.realpath(self.local(host_path)))
        if resolved is None:
            self.left_out.append("%s (a link leading outside the root)" % host_path)
        return resolved

    def listdir(self, host_path: str) -> List[str]:
        try:
            return sorted(os.listdir(self.local(host_path)))
        except OSError:
            return []


def capture_pci(capture: Capture) -> int:
    """Every PCI function: its /sys/bus/pci/devices link, its attributes, its links, its parent directories."""
    base = "/sys/bus/pci/devices"
    addresses = capture.listdir(base)
    for address in addresses:
        link = base + "/" + address
        capture.copy(link)
        real = capture.resolve(link)
        if real is None:
            continue
        for name in PCI_FILES + PCI_LINKS:
            capture.copy(real + "/" + name)
        for entry in capture.listdir(real):
            if entry.startswith("virtfn"):
                capture.copy(real + "/" + entry)
        parent = os.path.dirname(real)
        while parent.startswith("/sys/devices/pci"):
            capture.add_dirs("root" + parent + "/x")
            parent = os.path.dirname(parent)
    return len(addresses)


def capture_pci_drivers(capture: Capture) -> None:
    """Driver directories with their bound-device links (how drivers are read)."""
    base = "/sys/bus/pci/drivers"
    for driver in capture.listdir(base):
        directory = base + "/" + driver
        capture.add_dirs("root" + directory + "/x")
        for entry in capture.listdir(directory):
            if ":" in entry:
                capture.copy(directory + "/" + entry)


def capture_iommu(capture: Capture) -> None:
    """IOMMU groups (type, member links) and the IOMMU units of /sys/class/iommu (links)."""
    groups = "/sys/kernel/iommu_groups"
    for group in capture.listdir(groups):
        capture.copy("%s/%s/type" % (groups, group))
        for member in capture.listdir("%s/%s/devices" % (groups, group)):
            capture.copy("%s/%s/devices/%s" % (groups, group, member))
        capture.add_dirs("root%s/%s/devices/x" % (groups, group))
    for unit in capture.listdir("/sys/class/iommu"):  # listed only: their names say the IOMMU is on
        capture.copy("/sys/class/iommu/" + unit)


def kernel_release(capture: Capture) -> str:
    try:
        with open(capture.local("/proc/sys/kernel/osrelease"), encoding="utf-8") as handle:
            return handle.read().strip()
    except OSError:
        return ""


def capture_system(capture: Capture) -> None:
    """Module parameters, NUMA nodes, hugepage pools, /proc files and the kernel's module lists."""
    for module in MODULES:
        directory = "/sys/module/" + module
        if os.path.isdir(capture.local(directory)):
            capture.add_dirs("root" + directory + "/x")
            for parameter in MODULE_PARAMETERS.get(module, ()):
                capture.copy("%s/parameters/%s" % (directory, parameter))
    nodes = "/sys/devices/system/node"
    capture.copy(nodes + "/online")
    for node in capture.listdir(nodes):
        if re.match(r"node\d+$", node):
            capture.copy("%s/%s/cpulist" % (nodes, node))
            capture.copy("%s/%s/meminfo" % (nodes, node))
            capture_hugepage_pools(capture, "%s/%s/hugepages" % (nodes, node))
    capture_hugepage_pools(capture, "/sys/kernel/mm/hugepages")
    for name in PROC_FILES:
        capture.copy("/proc/" + name)
    release = kernel_release(capture)
    if release:
        capture.copy("/lib/modules/%s/modules.builtin" % release)
        capture_filtered(capture, "/lib/modules/%s/modules.dep" % release, KERNEL_MODULE_NEEDLES)
        capture_filtered(capture, "/boot/config-%s" % release, KERNEL_CONFIG_OPTIONS)


def capture_hugepage_pools(capture: Capture, directory: str) -> None:
    for pool in capture.listdir(directory):
        capture.add_dirs("root%s/%s/x" % (directory, pool))
        for count in HUGEPAGE_COUNTS:
            capture.copy("%s/%s/%s" % (directory, pool, count))


def capture_acpi_table_names(capture: Capture) -> None:
    """The firmware's ACPI tables as empty files: cc_host_info asks only which exist (DMAR, IVRS)."""
    for name in capture.listdir(ACPI_TABLES):
        if os.path.isfile(capture.local(ACPI_TABLES + "/" + name)):
            capture.add_bytes("root%s/%s" % (ACPI_TABLES, name), b"")


def capture_module_config_names(capture: Capture) -> None:
    """The .conf files of MODULE_CONFIG_DIRS as empty files (cc_host_info lists their names), but the collection's
    own, which PREPARE_FILES copies."""
    for directory in MODULE_CONFIG_DIRS:
        for name in capture.listdir(directory):
            host_path = "%s/%s" % (directory, name)
            if name.endswith(".conf") and host_path not in PREPARE_FILES:
                capture.add_bytes("root" + host_path, b"")


def capture_filtered(capture: Capture, host_path: str, needles: Sequence[str]) -> None:
    """Only the lines naming one of ``needles`` of a large file (modules.dep runs to megabytes)."""
    wanted = [needle.encode() for needle in needles]
    try:
        with open(capture.local(host_path), "rb") as handle:
            lines = [line for line in handle if any(needle in line for needle in wanted)]
    except OSError:
        return
    capture.add_bytes("root" + host_path, b"".join(lines))
    capture.left_out.append("%s: only the lines naming %s" % (host_path, ", ".join(needles)))


def capture_dev(capture: Capture) -> None:
    """Device nodes as empty files: the modules only ask whether they exist."""
    for name in DEV_NODES:
        path = "/dev/" + name
        if os.path.isdir(capture.local(path)):
            for entry in capture.listdir(path):
                sub = path + "/" + entry
                if os.path.isdir(capture.local(sub)):
                    for leaf in capture.listdir(sub):
                        capture.add_bytes("root%s/%s" % (sub, leaf), b"")
                    capture.add_dirs("root" + sub + "/x")
                else:
                    capture.add_bytes("root" + sub, b"")
        elif os.path.lexists(capture.local(path)):
            capture.add_bytes("root" + path, b"")


def capture_prepare_files(capture: Capture) -> None:
    """The boot configuration and managed files prepare --check reads (PREPARE_FILES, PREPARE_DIRS)."""
    for host_path in PREPARE_FILES:
        capture.copy(host_path)
    for pattern, names in PREPARE_DIRS.items():
        for directory in sorted(glob.glob(glob.escape(capture.prefix) + pattern)):
            host_directory = capture.host_path_of(directory)
            for name in capture.listdir(host_directory or "/nonexistent"):
                if re.fullmatch(names, name):
                    capture.copy("%s/%s" % (host_directory, name))


def capture_commands(capture: Capture, names: Sequence[str]) -> Dict[str, Optional[int]]:
    """Each command's stdout (and stderr when any) under commands/; its exit status, None when it did not run."""
    status: Dict[str, Optional[int]] = {}
    for name in names:
        argv = COMMANDS[name]
        if shutil.which(argv[0]) is None:
            status[name] = None
            capture.left_out.append("commands/%s (%s not installed)" % (name, argv[0]))
            continue
        try:
            proc = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, timeout=120, check=False)
        except subprocess.TimeoutExpired:
            status[name] = None
            capture.left_out.append("commands/%s (timed out)" % name)
            continue
        status[name] = proc.returncode
        capture.add_bytes("commands/" + name, proc.stdout)
        if proc.stderr:
            capture.add_bytes("commands/" + name + ".stderr", proc.stderr)
    return status


def capture_host(tar: tarfile.TarFile, root: str, name: str, commands: Sequence[str],
                 collection_version: Optional[str] = None) -> Dict[str, object]:
    """Write the capture of the host below ``root`` into ``tar``; returns the manifest (also written)."""
    capture = Capture(tar, root)
    functions = capture_pci(capture)
    capture_pci_drivers(capture)
    capture_iommu(capture)
    capture_system(capture)
    capture_acpi_table_names(capture)
    capture_module_config_names(capture)
    capture_dev(capture)
    capture_prepare_files(capture)
    if capture.prefix and commands:
        capture.left_out.append("commands/ (root %s is not this host: lspci and nvidia-smi would describe this "
                                "host instead)" % capture.prefix)
        commands = []
    status = capture_commands(capture, commands)
    manifest: Dict[str, object] = {
        "name": name,
        "captured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(capture.now)),
        "kernel": kernel_release(capture),
        "collection_version": collection_version,
        "as_root": os.geteuid() == 0,
        "root": capture.prefix or "/",
        "pci_functions": functions,
        "commands": status,
        "left_out": capture.left_out,
        "files": dict(sorted(capture.files.items())),
        "links": dict(sorted(capture.links.items())),
    }
    data = json.dumps(manifest, indent=2, sort_keys=True).encode() + b"\n"
    info = capture.tar_info(MANIFEST, tarfile.REGTYPE, 0o644)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))
    return manifest


def write_capture(output: str, root: str, name: str, commands: Sequence[str],
                  collection_version: Optional[str] = None) -> Dict[str, object]:
    """The capture as an xz-compressed tarball at ``output`` (written beside it, then renamed into place)."""
    partial = output + ".partial"
    # A new file, never through a link planted at that name (this runs as root in shared directories).
    descriptor = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        with os.fdopen(descriptor, "wb") as handle, tarfile.open(fileobj=handle, mode="w:xz") as tar:
            manifest = capture_host(tar, root, name, commands, collection_version)
        os.rename(partial, output)
    finally:
        if os.path.exists(partial):
            os.unlink(partial)
    return manifest


class _Discard(io.RawIOBase):
    """A sink for the tar stream of a check-mode run: what would be written, without writing it."""

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        return len(data)


def plan_capture(root: str, name: str, collection_version: Optional[str] = None) -> Dict[str, object]:
    """The manifest a capture of ``root`` would have, without commands and without writing anything."""
    with tarfile.open(fileobj=_Discard(), mode="w|") as tar:
        return capture_host(tar, root, name, [], collection_version)
