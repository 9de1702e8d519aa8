"""Build fake but faithful sysfs trees for tests and benchmarks.

A tree is laid out like the kernel's: ``sys/devices/pciDDDD:BB/<bridge>/.../<function>``
directories with a binary ``config`` file and the usual attributes,
``sys/bus/pci/devices/<address>`` symlinks to them, ``driver`` and
``iommu_group`` symlinks, ``sys/kernel/iommu_groups/N/devices`` and SR-IOV
``physfn``/``virtfnN`` links.  ``lspci -A linux-sysfs -O
sysfs.path=<tree>/sys/bus/pci`` reads such a tree like a real one, which is
what makes it usable as an oracle.

Input is either a list of :class:`FakeFunction` (config bytes usually made
with :class:`ConfigBuilder`) or an ``lspci -xxxx`` dump.
"""

from __future__ import annotations

import os
import re
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

DUMP_HEADER_RE = re.compile(r"^(?:([0-9a-fA-F]{4,}):)?([0-9a-fA-F]{2}):([0-9a-fA-F]{2})\.([0-7])\s")
DUMP_HEX_RE = re.compile(r"^([0-9a-f]{2,3}):((?: [0-9a-f]{2}){16})\s*$")

SPEED_CODES = {2.5: 1, 5.0: 2, 8.0: 3, 16.0: 4, 32.0: 5, 64.0: 6}
PORT_TYPE_CODES = {
    "endpoint": 0x0, "legacy_endpoint": 0x1, "root_port": 0x4, "upstream_port": 0x5,
    "downstream_port": 0x6, "pcie_to_pci_bridge": 0x7, "pci_to_pcie_bridge": 0x8,
    "rc_integrated_endpoint": 0x9, "rc_event_collector": 0xA,
}


@dataclass
class FakeFunction:
    """One PCI function to lay out in a fake tree."""

    address: str
    config: bytes
    driver: Optional[str] = None
    iommu_group: Optional[int] = None
    numa_node: str = "-1"
    physfn: Optional[str] = None
    parent: Optional[str] = None
    extra_files: Dict[str, bytes] = field(default_factory=dict)

    @property
    def domain_bus(self) -> Tuple[str, int]:
        domain, bus = self.address.split(":")[:2]
        return domain, int(bus, 16)

    @property
    def is_bridge(self) -> bool:
        return len(self.config) > 0x1A and self.config[0x0E] & 0x7F == 1


class ConfigBuilder:
    """Compose a 4 KiB configuration space: header, capabilities, extended capabilities."""

    def __init__(self, vendor: int, device: int, class_code: int, header_type: int = 0,
                 multifunction: bool = False, subsystem: Tuple[int, int] = (0, 0), revision: int = 1) -> None:
        self.space = bytearray(4096)
        struct.pack_into("<HH", self.space, 0, vendor, device)
        self.space[0x08] = revision
        self.space[0x09:0x0C] = bytes((class_code & 0xFF, (class_code >> 8) & 0xFF, (class_code >> 16) & 0xFF))
        self.space[0x0E] = header_type | (0x80 if multifunction else 0)
        if header_type == 0:
            struct.pack_into("<HH", self.space, 0x2C, *subsystem)
        self.next_cap = 0x40
        self.last_cap: Optional[int] = None
        self.next_ecap = 0x100
        self.last_ecap: Optional[int] = None

    def bridge_buses(self, primary: int, secondary: int, subordinate: int) -> ConfigBuilder:
        self.space[0x18:0x1B] = bytes((primary, secondary, subordinate))
        return self

    def capability(self, cap_id: int, body: bytes) -> int:
        """Append a standard capability (ID, next pointer, then ``body``); returns its offset."""
        offset = self.next_cap
        self.space[offset] = cap_id
        self.space[offset + 2:offset + 2 + len(body)] = body
        if self.last_cap is None:
            self.space[0x34] = offset
            struct.pack_into("<H", self.space, 0x06, struct.unpack_from("<H", self.space, 0x06)[0] | 0x10)
        else:
            self.space[self.last_cap + 1] = offset
        self.last_cap = offset
        self.next_cap = (offset + 2 + len(body) + 3) & ~3
        return offset

    def express(self, port_type: str, speed: Optional[float] = None, width: int = 0,
                max_speed: Optional[float] = None, max_width: int = 0, version: int = 2,
                port_number: int = 0) -> ConfigBuilder:
        body = bytearray(0x3C - 2)
        flags = version | (PORT_TYPE_CODES[port_type] << 4)
        struct.pack_into("<H", body, 0, flags)
        max_speed = speed if max_speed is None else max_speed
        link_cap = SPEED_CODES.get(max_speed or 0, 0) | ((max_width or width) << 4) | (port_number << 24)
        struct.pack_into("<I", body, 0x0C - 2, link_cap)
        struct.pack_into("<H", body, 0x12 - 2, SPEED_CODES.get(speed or 0, 0) | (width << 4))
        self.capability(0x10, bytes(body))
        return self

    def extended(self, cap_id: int, body: bytes, version: int = 1) -> int:
        """Append an extended capability (header, then ``body``); returns its offset."""
        offset = self.next_ecap
        struct.pack_into("<I", self.space, offset, cap_id | (version << 16))
        self.space[offset + 4:offset + 4 + len(body)] = body
        if self.last_ecap is not None:
            header = struct.unpack_from("<I", self.space, self.last_ecap)[0]
            struct.pack_into("<I", self.space, self.last_ecap, (header & 0xFFFFF) | (offset << 20))
        self.last_ecap = offset
        self.next_ecap = (offset + 4 + len(body) + 7) & ~7
        return offset

    def acs(self, capability: int, control: int, dword_registers: bool = False) -> ConfigBuilder:
        if dword_registers:
            self.extended(0x000D, struct.pack("<II", capability, control))
        else:
            self.extended(0x000D, struct.pack("<HH", capability, control))
        return self

    def ats(self, enabled: bool, queue_depth: int = 0, stu: int = 0) -> ConfigBuilder:
        self.extended(0x000F, struct.pack("<HH", queue_depth & 0x1F, (0x8000 if enabled else 0) | stu))
        return self

    def sriov(self, total_vfs: int, num_vfs: int = 0, vf_offset: int = 1, vf_stride: int = 1,
              vf_device: int = 0, initial_vfs: Optional[int] = None) -> ConfigBuilder:
        body = bytearray(0x40 - 4)
        control = 0x9 if num_vfs else 0
        struct.pack_into("<H", body, 0x08 - 4, control)
        struct.pack_into("<HHH", body, 0x0C - 4, total_vfs if initial_vfs is None else initial_vfs,
                         total_vfs, num_vfs)
        struct.pack_into("<HH", body, 0x14 - 4, vf_offset, vf_stride)
        struct.pack_into("<H", body, 0x1A - 4, vf_device)
        self.extended(0x0010, bytes(body))
        return self

    def ari(self, next_function: int = 0) -> ConfigBuilder:
        self.extended(0x000E, struct.pack("<HH", next_function << 8, 0))
        return self

    def bytes(self, size: int = 4096) -> bytes:
        return bytes(self.space[:size])


def parse_lspci_dump(text: str) -> List[Tuple[str, bytes]]:
    """(address, config bytes) for every function of an ``lspci -xxxx`` dump."""
    functions: List[Tuple[str, bytes]] = []
    address: Optional[str] = None
    data = bytearray()
    for line in text.splitlines():
        header = DUMP_HEADER_RE.match(line)
        if header:
            if address is not None:
                functions.append((address, bytes(data)))
            domain, bus, dev, fn = header.groups()
            address = "%s:%s:%s.%s" % ((domain or "0000").lower(), bus.lower(), dev.lower(), fn)
            data = bytearray()
            continue
        hex_line = DUMP_HEX_RE.match(line)
        if hex_line and address is not None and int(hex_line.group(1), 16) == len(data):
            data.extend(bytes.fromhex(hex_line.group(2)))
    if address is not None:
        functions.append((address, bytes(data)))
    return functions


def functions_from_dump(text: str, groups: str = "per_function") -> List[FakeFunction]:
    """FakeFunctions for a dump; ``groups`` is ``per_function`` or ``none`` (IOMMU off)."""
    functions = [FakeFunction(address=address, config=config) for address, config in parse_lspci_dump(text)]
    if groups == "per_function":
        for number, function in enumerate(functions):
            function.iommu_group = number
    return functions


def infer_parents(functions: Sequence[FakeFunction]) -> Dict[str, Optional[str]]:
    """Parent bridge of each function from bridges' secondary bus numbers (as lspci -t does)."""
    bridge_for_bus: Dict[Tuple[str, int], str] = {}
    for function in functions:
        if function.is_bridge:
            domain = function.domain_bus[0]
            secondary = function.config[0x19]
            bridge_for_bus.setdefault((domain, secondary), function.address)
    parents: Dict[str, Optional[str]] = {}
    for function in functions:
        parent = function.parent or bridge_for_bus.get(function.domain_bus)
        parents[function.address] = parent if parent != function.address else None
    return parents


def relative_link(link: Path, target: Path) -> None:
    link.parent.mkdir(parents=True, exist_ok=True)
    os.symlink(os.path.relpath(target, link.parent), link)


def write_attributes(directory: Path, function: FakeFunction) -> None:
    config = function.config
    (directory / "config").write_bytes(config)
    if len(config) >= 0x30:
        vendor, device = struct.unpack_from("<HH", config, 0)
        (directory / "vendor").write_text("0x%04x\n" % vendor)
        (directory / "device").write_text("0x%04x\n" % device)
        (directory / "class").write_text("0x%02x%02x%02x\n" % (config[0x0B], config[0x0A], config[0x09]))
        (directory / "revision").write_text("0x%02x\n" % config[0x08])
        sub_vendor, sub_device = struct.unpack_from("<HH", config, 0x2C)
        (directory / "subsystem_vendor").write_text("0x%04x\n" % sub_vendor)
        (directory / "subsystem_device").write_text("0x%04x\n" % sub_device)
    (directory / "numa_node").write_text(function.numa_node + "\n")
    (directory / "irq").write_text("0\n")
    (directory / "resource").write_text("0x0000000000000000 0x0000000000000000 0x0000000000000000\n" * 13)
    for name, content in function.extra_files.items():
        (directory / name).write_bytes(content)


def device_dirs(root: Path, functions: Sequence[FakeFunction]) -> Dict[str, Path]:
    """Where each function's directory goes: below its parent bridge, or its host bridge."""
    parents = infer_parents(functions)
    dirs: Dict[str, Path] = {}

    def place(address: str, trail: Tuple[str, ...] = ()) -> Path:
        if address in dirs:
            return dirs[address]
        parent = parents.get(address)
        if parent is None or parent not in parents or parent in trail:
            domain, bus = by_address[address].domain_bus
            base = root / "sys" / "devices" / ("pci%s:%02x" % (domain, bus))
        else:
            base = place(parent, trail + (address,))
        dirs[address] = base / address
        return dirs[address]

    by_address = {function.address: function for function in functions}
    for function in functions:
        place(function.address)
    return dirs


def build_tree(root: Path, functions: Sequence[FakeFunction], group_types: Optional[Dict[int, str]] = None,
               drivers: Iterable[str] = ()) -> Path:
    """Lay ``functions`` out below ``root`` (created); returns ``root``."""
    root.mkdir(parents=True, exist_ok=True)
    bus_devices = root / "sys" / "bus" / "pci" / "devices"
    bus_devices.mkdir(parents=True, exist_ok=True)
    groups_dir = root / "sys" / "kernel" / "iommu_groups"
    drivers_dir = root / "sys" / "bus" / "pci" / "drivers"
    for name in drivers:
        (drivers_dir / name).mkdir(parents=True, exist_ok=True)
    dirs = device_dirs(root, functions)
    for function in functions:
        directory = dirs[function.address]
        directory.mkdir(parents=True, exist_ok=True)
        write_attributes(directory, function)
        relative_link(bus_devices / function.address, directory)
        if function.driver:
            (drivers_dir / function.driver).mkdir(parents=True, exist_ok=True)
            relative_link(directory / "driver", drivers_dir / function.driver)
            relative_link(drivers_dir / function.driver / function.address, directory)
        if function.iommu_group is not None:
            group = groups_dir / str(function.iommu_group)
            (group / "devices").mkdir(parents=True, exist_ok=True)
            if not (group / "type").exists():
                (group / "type").write_text((group_types or {}).get(function.iommu_group, "DMA") + "\n")
            relative_link(directory / "iommu_group", group)
            relative_link(group / "devices" / function.address, directory)
    for function in functions:
        if function.physfn:
            pf_dir = dirs[function.physfn]
            relative_link(dirs[function.address] / "physfn", pf_dir)
            index = sum(1 for name in os.listdir(pf_dir) if name.startswith("virtfn"))
            relative_link(pf_dir / ("virtfn%d" % index), dirs[function.address])
    return root


# ---------------------------------------------------------------------------
# Synthetic GPU servers: the shape of an HGX-style node, at any size.

ACS_ALL = 0x5F  # SV TB RR CR UF DT
ACS_CONFIDENTIAL = 0x1D  # SV RR CR UF enabled


def address_of(domain: str, routing_id: int) -> str:
    return "%s:%02x:%02x.%d" % (domain, routing_id >> 8, (routing_id >> 3) & 0x1F, routing_id & 7)


def bridge_function(address: str, vendor: int, device: int, port_type: str, secondary: int, subordinate: int,
                    acs: bool = True, speed: float = 32.0, width: int = 16) -> FakeFunction:
    primary = int(address.split(":")[1], 16)
    config = ConfigBuilder(vendor, device, 0x060400, header_type=1).bridge_buses(primary, secondary, subordinate)
    config.express(port_type, speed, width)
    if acs:
        config.acs(ACS_ALL, ACS_CONFIDENTIAL)
    return FakeFunction(address=address, config=config.bytes(), driver="pcieport")


@dataclass
class ServerShape:
    """How many of each part a synthetic GPU server has."""

    gpus: int = 8
    nic_pfs_per_gpu: int = 1
    vfs_per_pf: int = 0
    nvswitches: int = 0
    sockets: int = 2


def virtual_function(address: str, physfn: str, vendor: int, device: int, class_code: int,
                     driver: Optional[str]) -> FakeFunction:
    """A VF as hardware shows it: Vendor/Device ID registers read 0xffff, sysfs knows the real IDs."""
    config = ConfigBuilder(0xFFFF, 0xFFFF, class_code, subsystem=(vendor, 0x0041)).express("endpoint", 32.0, 16)
    return FakeFunction(address=address, config=config.bytes(), driver=driver, physfn=physfn,
                        extra_files={"vendor": b"0x%04x\n" % vendor, "device": b"0x%04x\n" % device})


def gpu_slot(domain: str, root_bus: int, port_dev: int, first_bus: int, shape: ServerShape,
             numa: str) -> List[FakeFunction]:
    """Root port -> switch (upstream + 2 downstream ports) -> GPU and NIC PFs (+ VFs)."""
    usp_bus, dsp_bus, gpu_bus, nic_bus = first_bus, first_bus + 1, first_bus + 2, first_bus + 3
    root_port = "%s:%02x:%02x.0" % (domain, root_bus, port_dev)
    parts = [
        bridge_function(root_port, 0x1022, 0x14AB, "root_port", usp_bus, nic_bus),
        bridge_function("%s:%02x:00.0" % (domain, usp_bus), 0x1000, 0xC030, "upstream_port", dsp_bus, nic_bus),
        bridge_function("%s:%02x:00.0" % (domain, dsp_bus), 0x1000, 0xC030, "downstream_port", gpu_bus, gpu_bus),
        bridge_function("%s:%02x:01.0" % (domain, dsp_bus), 0x1000, 0xC030, "downstream_port", nic_bus, nic_bus),
    ]
    gpu = ConfigBuilder(0x10DE, 0x2330, 0x030200, subsystem=(0x10DE, 0x16C1)).express("endpoint", 32.0, 16)
    parts.append(FakeFunction(address="%s:%02x:00.0" % (domain, gpu_bus), config=gpu.bytes(), driver="nvidia"))
    for pf_index in range(shape.nic_pfs_per_gpu):
        nic = ConfigBuilder(0x15B3, 0x1021, 0x020000, multifunction=shape.nic_pfs_per_gpu > 1,
                            subsystem=(0x15B3, 0x0041)).express("endpoint", 32.0, 16)
        nic.ari(pf_index + 1 if pf_index + 1 < shape.nic_pfs_per_gpu else 0)
        pf_rid = (nic_bus << 8) | pf_index
        offset = shape.nic_pfs_per_gpu - pf_index + pf_index * shape.vfs_per_pf
        nic.sriov(max(shape.vfs_per_pf, 16), shape.vfs_per_pf, offset, 1, 0x101E)
        pf = FakeFunction(address=address_of(domain, pf_rid), config=nic.bytes(), driver="mlx5_core")
        parts.append(pf)
        for vf_index in range(shape.vfs_per_pf):
            parts.append(virtual_function(address_of(domain, pf_rid + offset + vf_index), pf.address,
                                          0x15B3, 0x101E, 0x020000, "mlx5_core"))
    for part in parts:
        part.numa_node = numa
    return parts


def nvswitch_slot(domain: str, root_bus: int, port_dev: int, bus: int, numa: str) -> List[FakeFunction]:
    root_port = bridge_function("%s:%02x:%02x.0" % (domain, root_bus, port_dev), 0x1022, 0x14AB, "root_port",
                                bus, bus)
    switch = ConfigBuilder(0x10DE, 0x22A3, 0x068000).express("endpoint", 16.0, 2)
    functions = [root_port, FakeFunction(address="%s:%02x:00.0" % (domain, bus), config=switch.bytes(),
                                         driver="nvidia-nvswitch")]
    for function in functions:
        function.numa_node = numa
    return functions


def gpu_server(shape: ServerShape) -> List[FakeFunction]:
    """Functions of a GPU server: per socket a root complex, GPUs behind switches, NVSwitches, each in its group."""
    functions: List[FakeFunction] = []
    per_socket = (shape.gpus + shape.sockets - 1) // shape.sockets
    for socket in range(shape.sockets):
        root_bus = 0x80 * socket
        host_bridge = ConfigBuilder(0x1022, 0x14A4, 0x060000).bytes()
        functions.append(FakeFunction(address="0000:%02x:00.0" % root_bus, config=host_bridge, numa_node=str(socket)))
        next_bus = root_bus + 1
        port = 1
        for _slot in range(min(per_socket, shape.gpus - socket * per_socket)):
            functions += gpu_slot("0000", root_bus, port, next_bus, shape, str(socket))
            next_bus += 4
            port += 1
        for index in range(shape.nvswitches):
            if index % shape.sockets == socket:
                functions += nvswitch_slot("0000", root_bus, port, next_bus, str(socket))
                next_bus += 1
                port += 1
    for number, function in enumerate(functions):
        function.iommu_group = number
    return functions


def lab_like_host() -> List[FakeFunction]:
    """The lab VM's shape in small: ICH9 chipset group, display + HDA in one group, a switch without ACS."""
    def endpoint(address: str, vendor: int, device: int, class_code: int, driver: str, group: int,
                 multifunction: bool = False) -> FakeFunction:
        config = ConfigBuilder(vendor, device, class_code, multifunction=multifunction).express("endpoint", 2.5, 1)
        return FakeFunction(address, config.bytes(), driver=driver, iommu_group=group)

    ich9 = [
        FakeFunction("0000:00:1f.0", ConfigBuilder(0x8086, 0x2918, 0x060100, multifunction=True).bytes(),
                     driver="lpc_ich", iommu_group=1),
        FakeFunction("0000:00:1f.2", ConfigBuilder(0x8086, 0x2922, 0x010601).bytes(), driver="ahci", iommu_group=1),
        FakeFunction("0000:00:1f.3", ConfigBuilder(0x8086, 0x2930, 0x0C0500).bytes(), driver="i801_smbus",
                     iommu_group=1),
    ]
    root_port = bridge_function("0000:00:10.0", 0x1B36, 0x000C, "root_port", 1, 1)
    root_port.iommu_group = 2
    display = endpoint("0000:01:00.0", 0x1234, 0x1111, 0x030000, "bochs-drm", 3, multifunction=True)
    audio = endpoint("0000:01:00.1", 0x8086, 0x293E, 0x040300, "snd_hda_intel", 3)
    switch_rp = bridge_function("0000:00:10.1", 0x1B36, 0x000C, "root_port", 2, 4)
    upstream = bridge_function("0000:02:00.0", 0x104C, 0x8232, "upstream_port", 3, 4, acs=False)
    downstream = bridge_function("0000:03:00.0", 0x104C, 0x8233, "downstream_port", 4, 4, acs=False)
    behind = endpoint("0000:04:00.0", 0x1234, 0x11E8, 0x00FF00, "", 6)
    behind.driver = None
    switch_rp.iommu_group, upstream.iommu_group, downstream.iommu_group = 4, 5, 6
    lonely = bridge_function("0000:00:10.2", 0x1B36, 0x000C, "root_port", 5, 5)
    lonely.iommu_group = 7
    return ich9 + [root_port, display, audio, switch_rp, upstream, downstream, behind, lonely]
