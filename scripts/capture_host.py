# Copyright: contributors to confidential_gpu.host
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Capture what this collection reads from a real host, as a replayable fixture.

    scripts/capture-host OUTPUT.tar.xz [--name NAME]     (or: python3 scripts/capture_host.py ...)

Writes one archive holding
  root/      the subset of /sys, /proc, /lib/modules and /dev that the info
             modules read, with sysfs symlinks kept as links, so that
             ``pci_topology_info`` and ``cc_host_info`` run on it with
             ``root: <dir>/root`` exactly as on the host;
  commands/  the output of lspci -D (-xxxx, -vvv, -tv, -nnk), nvidia-smi
             (-q -x, -q, topo -m, conf-compute) and uname, each with its
             exit status, as oracles for the replay;
  CAPTURE.json  what was captured, when, and what was left out.

Run it as root: unprivileged readers see only the first 64 bytes of a
function's config space.  Device nodes under /dev and the firmware's ACPI
tables are recorded as empty regular files (their presence is what the
modules read).  Standard library
only, Python >= 3.8, so it runs on any target host.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tarfile
import time
from typing import Dict, Iterable, List, Optional

PCI_FILES = (
    "config", "class", "vendor", "device", "subsystem_vendor", "subsystem_device",
    "revision", "numa_node", "local_cpulist", "current_link_speed", "current_link_width",
    "max_link_speed", "max_link_width", "sriov_totalvfs", "sriov_numvfs", "sriov_offset",
    "sriov_stride", "sriov_vf_device", "sriov_drivers_autoprobe", "driver_override",
    "enable", "boot_vga", "reset_method", "d3cold_allowed", "resource", "irq",
)
PCI_LINKS = ("driver", "iommu_group", "physfn")
MODULES = ("kvm", "kvm_amd", "kvm_intel", "vfio", "vfio_pci", "vfio_pci_core", "vfio_iommu_type1",
           "iommufd", "nvidia", "nvidia_uvm", "nouveau", "ccp", "irqbypass")
PROC_FILES = ("cmdline", "cpuinfo", "meminfo", "interrupts", "modules", "sys/kernel/osrelease")
DEV_NODES = ("kvm", "iommu", "sev", "vfio", "nvidiactl", "nvidia-uvm")
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
    "os-release.txt": ["cat", "/etc/os-release"],
}
SMALL_FILE = 1 << 20


class Capture:
    """An archive being written: files, links and directories below ``root/``."""

    def __init__(self, tar: tarfile.TarFile) -> None:
        self.tar = tar
        self.seen: set = set()
        self.left_out: List[str] = []
        self.now = time.time()

    def _info(self, name: str, kind: bytes, mode: int) -> tarfile.TarInfo:
        info = tarfile.TarInfo(name)
        info.type = kind
        info.mode = mode
        info.mtime = self.now
        return info

    def add_dirs(self, arc_path: str) -> None:
        parts = arc_path.split("/")
        for depth in range(1, len(parts)):
            name = "/".join(parts[:depth])
            if name not in self.seen:
                self.seen.add(name)
                self.tar.addfile(self._info(name, tarfile.DIRTYPE, 0o755))

    def add_bytes(self, arc_path: str, data: bytes) -> None:
        if arc_path in self.seen:
            return
        self.add_dirs(arc_path)
        self.seen.add(arc_path)
        info = self._info(arc_path, tarfile.REGTYPE, 0o644)
        info.size = len(data)
        self.tar.addfile(info, io.BytesIO(data))

    def add_link(self, arc_path: str, target: str) -> None:
        if arc_path in self.seen:
            return
        self.add_dirs(arc_path)
        self.seen.add(arc_path)
        info = self._info(arc_path, tarfile.SYMTYPE, 0o777)
        info.linkname = target
        self.tar.addfile(info)

    def copy(self, host_path: str, limit: int = SMALL_FILE) -> None:
        """A host file (or symlink) into root/, quietly skipping what is absent."""
        arc = "root" + host_path
        if os.path.islink(host_path):
            self.add_link(arc, os.readlink(host_path))
            return
        if not os.path.isfile(host_path) or not os.stat(host_path).st_mode & 0o444:
            return
        try:
            with open(host_path, "rb") as handle:
                data = handle.read(limit)
        except OSError as exc:
            self.left_out.append("%s (%s)" % (host_path, exc.strerror or exc))
            return
        self.add_bytes(arc, data)

    def copy_tree(self, host_dir: str, depth: int = 4) -> None:
        """Regular files and links below a small directory (hugepage pools, parameters)."""
        if depth < 0 or not os.path.isdir(host_dir) or os.path.islink(host_dir):
            return
        for entry in sorted(os.listdir(host_dir)):
            path = os.path.join(host_dir, entry)
            if os.path.islink(path) or os.path.isfile(path):
                self.copy(path)
            else:
                self.copy_tree(path, depth - 1)


def capture_pci(capture: Capture) -> int:
    """Every PCI function: its /sys/bus/pci/devices link, its attributes, its links."""
    base = "/sys/bus/pci/devices"
    addresses = sorted(os.listdir(base)) if os.path.isdir(base) else []
    for address in addresses:
        link = os.path.join(base, address)
        capture.copy(link)
        real = os.path.realpath(link)
        for name in PCI_FILES:
            capture.copy(os.path.join(real, name))
        for name in PCI_LINKS:
            capture.copy(os.path.join(real, name))
        for entry in sorted(os.listdir(real)):
            if entry.startswith("virtfn"):
                capture.copy(os.path.join(real, entry))
        parent = os.path.dirname(real)
        while parent.startswith("/sys/devices/pci") and parent != "/sys/devices":
            capture.add_dirs("root" + parent + "/x")
            parent = os.path.dirname(parent)
    return len(addresses)


def capture_pci_drivers(capture: Capture) -> None:
    """Driver directories with their bound-device links (how drivers are read)."""
    base = "/sys/bus/pci/drivers"
    if not os.path.isdir(base):
        return
    for driver in sorted(os.listdir(base)):
        directory = os.path.join(base, driver)
        capture.add_dirs("root" + directory + "/x")
        for entry in sorted(os.listdir(directory)):
            if ":" in entry:
                capture.copy(os.path.join(directory, entry))


def capture_iommu(capture: Capture) -> None:
    groups = "/sys/kernel/iommu_groups"
    if os.path.isdir(groups):
        for group in sorted(os.listdir(groups)):
            capture.copy(os.path.join(groups, group, "type"))
            capture.copy_tree(os.path.join(groups, group, "devices"), depth=0)
            capture.add_dirs("root" + os.path.join(groups, group, "devices", "x"))
    capture.copy_tree("/sys/class/iommu", depth=0)


def capture_system(capture: Capture) -> None:
    for module in MODULES:
        directory = "/sys/module/" + module
        if os.path.isdir(directory):
            capture.add_dirs("root" + directory + "/x")
            capture.copy_tree(directory + "/parameters", depth=0)
    nodes = "/sys/devices/system/node"
    capture.copy(nodes + "/online")
    if os.path.isdir(nodes):
        for node in sorted(os.listdir(nodes)):
            if re.match(r"node\d+$", node):
                capture.copy(os.path.join(nodes, node, "cpulist"))
                capture.copy(os.path.join(nodes, node, "meminfo"))
                capture.copy_tree(os.path.join(nodes, node, "hugepages"), depth=2)
    capture.copy_tree("/sys/kernel/mm/hugepages", depth=2)
    for name in PROC_FILES:
        capture.copy("/proc/" + name)
    release = platform.release()
    capture.copy("/lib/modules/%s/modules.builtin" % release)
    capture_filtered("/lib/modules/%s/modules.dep" % release, "vfio", capture)


def capture_acpi_table_names(capture: Capture) -> None:
    """The names of the firmware's ACPI tables as empty files: cc_host_info asks only which exist (DMAR, IVRS)."""
    tables = "/sys/firmware/acpi/tables"
    if os.path.isdir(tables):
        for name in sorted(os.listdir(tables)):
            if os.path.isfile(os.path.join(tables, name)):
                capture.add_bytes("root" + os.path.join(tables, name), b"")


def capture_filtered(host_path: str, needle: str, capture: Capture) -> None:
    """Only the lines naming ``needle`` of a large file (modules.dep runs to megabytes)."""
    try:
        with open(host_path, "rb") as handle:
            lines = [line for line in handle if needle.encode() in line]
    except OSError:
        return
    capture.add_bytes("root" + host_path, b"".join(lines))
    capture.left_out.append("%s: only the lines naming %s" % (host_path, needle))


def capture_dev(capture: Capture) -> None:
    """Device nodes as empty files: the modules only ask whether they exist."""
    for name in DEV_NODES:
        path = "/dev/" + name
        if os.path.isdir(path):
            for entry in sorted(os.listdir(path)):
                sub = os.path.join(path, entry)
                if os.path.isdir(sub):
                    for leaf in sorted(os.listdir(sub)):
                        capture.add_bytes("root" + os.path.join(sub, leaf), b"")
                    capture.add_dirs("root" + sub + "/x")
                else:
                    capture.add_bytes("root" + sub, b"")
        elif os.path.exists(path):
            capture.add_bytes("root" + path, b"")


def capture_commands(capture: Capture, commands: Dict[str, List[str]]) -> Dict[str, Optional[int]]:
    status: Dict[str, Optional[int]] = {}
    for name, argv in commands.items():
        if shutil.which(argv[0]) is None:
            status[name] = None
            capture.left_out.append("commands/%s (%s not installed)" % (name, argv[0]))
            continue
        try:
            proc = subprocess.run(argv, capture_output=True, timeout=120, check=False)
        except subprocess.TimeoutExpired:
            status[name] = None
            capture.left_out.append("commands/%s (timed out)" % name)
            continue
        status[name] = proc.returncode
        capture.add_bytes("commands/" + name, proc.stdout)
        if proc.stderr:
            capture.add_bytes("commands/" + name + ".stderr", proc.stderr)
    return status


def write_capture(output: str, name: str, commands: Iterable[str]) -> Dict[str, object]:
    with tarfile.open(output, "w:xz") as tar:
        capture = Capture(tar)
        functions = capture_pci(capture)
        capture_pci_drivers(capture)
        capture_iommu(capture)
        capture_system(capture)
        capture_acpi_table_names(capture)
        capture_dev(capture)
        status = capture_commands(capture, {key: COMMANDS[key] for key in commands})
        summary: Dict[str, object] = {
            "name": name,
            "captured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(capture.now)),
            "kernel": platform.release(),
            "as_root": os.geteuid() == 0,
            "pci_functions": functions,
            "commands": status,
            "left_out": capture.left_out,
        }
        capture.add_bytes("CAPTURE.json", json.dumps(summary, indent=2, sort_keys=True).encode() + b"\n")
    return summary


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", maxsplit=1)[0])
    parser.add_argument("output", help="archive to write (.tar.xz)")
    parser.add_argument("--name", default=platform.node(), help="a name for the host (default: hostname)")
    parser.add_argument("--no-commands", action="store_true", help="capture files only")
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        print("capture-host: not root, so config space past 64 bytes is unreadable; "
              "the capture will be partial", file=sys.stderr)
    summary = write_capture(args.output, args.name, [] if args.no_commands else list(COMMANDS))
    print(json.dumps(summary, indent=2, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
