"""Fake sysfs functions from a captured ``lspci -tv`` tree (and, optionally, plain ``lspci``).

``lspci -tv`` shows the bridge hierarchy of a host but neither IDs nor classes
in numbers, so a tree parsed from it is a topology, not a config-space oracle:

- structure: each function and the bridge it sits below, read from the
  columns of the tree drawing;
- identity: vendor from the vendor name, device ID from ``Device xxxx`` or a
  few known product names, class from the plain ``lspci`` listing when given
  (``00:01.1 PCI bridge: ...``), otherwise bridge (for functions with a bus
  range) or unknown;
- PCIe port types from the position: a bridge on a root bus is a root port,
  one below a root or downstream port an upstream port, one below an upstream
  port a downstream port; every other function is an endpoint;
- each function its own IOMMU group (an ACS-clean host), NUMA node from the
  root bus (below 0x80: node 0, else node 1: a two-socket EPYC layout; the
  tree does not say).

The result goes to :func:`fake_sysfs.build_tree`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

from fake_sysfs import ACS_ALL, ACS_CONFIDENTIAL, ConfigBuilder, FakeFunction

ROOT_RE = re.compile(r"\[(?P<domain>[0-9a-f]{4}):(?P<bus>[0-9a-f]{2})\]")
FUNCTION_RE = re.compile(r"(?P<slot>[0-9a-f]{2}\.[0-7])(?:-\[(?P<secondary>[0-9a-f]{2})(?:-(?P<sub>[0-9a-f]{2}))?\])?")
PLAIN_RE = re.compile(r"^(?:(?P<domain>[0-9a-f]{4}):)?(?P<bdf>[0-9a-f]{2}:[0-9a-f]{2}\.[0-7]) (?P<cls>[^:]+?)"
                      r"(?: \[(?P<code>[0-9a-f]{4})\])?: (?P<name>.*)$")

VENDORS = {
    "Advanced Micro Devices": 0x1022, "NVIDIA": 0x10DE, "Mellanox": 0x15B3, "Intel": 0x8086, "Lenovo": 0x17AA,
    "Samsung": 0x144D, "Micron": 0x1344, "ASPEED": 0x1A03, "Broadcom": 0x14E4,
}
PRODUCTS = {
    "H100 SXM5": 0x2330, "ConnectX-7 PCIe Bridge": 0x1021, "ConnectX-7": 0x1021, "ConnectX-6 Lx": 0x101F,
    "I210 Gigabit": 0x1533, "ASPEED Graphics": 0x2000,
}
CLASSES = {
    "Host bridge": 0x0600, "ISA bridge": 0x0601, "PCI bridge": 0x0604, "Bridge": 0x0680, "3D controller": 0x0302,
    "VGA compatible controller": 0x0300, "Ethernet controller": 0x0200, "Non-Volatile memory controller": 0x0108,
    "SMBus": 0x0C05, "IOMMU": 0x0806, "USB controller": 0x0C03, "Encryption controller": 0x1080,
    "System peripheral": 0x0880, "Audio device": 0x0403,
}


@dataclass
class TreeEntry:
    address: str
    parent: Optional[str]
    name: str
    secondary: Optional[int]
    subordinate: Optional[int]


def parse_tree(text: str) -> List[TreeEntry]:
    """Functions of an ``lspci -tv`` drawing with their parent bridges, in drawing order."""
    entries: List[TreeEntry] = []
    bus_at_column: Dict[int, Tuple[str, int]] = {}
    bridge_of_bus: Dict[Tuple[str, int], Optional[str]] = {}
    for line in text.splitlines():
        if not ROOT_RE.search(line) and not FUNCTION_RE.search(line):
            continue
        pending: Optional[Tuple[str, int]] = None
        position = 0
        last: Optional[TreeEntry] = None
        while True:
            root = ROOT_RE.search(line, position)
            function = FUNCTION_RE.search(line, position)
            if root and (not function or root.start() < function.start()):
                pending = (root.group("domain"), int(root.group("bus"), 16))
                bridge_of_bus.setdefault(pending, None)
                position = root.end()
                continue
            if not function or function.start() < 2 or line[function.start() - 1] != "-":
                break
            connector, column = line[function.start() - 2], function.start() - 2
            if connector in "+\\" and pending is not None:
                bus_at_column[column] = pending
                bus = pending
            elif connector in "+\\":
                bus = bus_at_column[column]
            elif pending is not None:
                bus = pending
            else:
                break
            domain, number = bus
            address = "%s:%02x:%s" % (domain, number, function.group("slot"))
            secondary = int(function.group("secondary"), 16) if function.group("secondary") else None
            subordinate = int(function.group("sub") or function.group("secondary"), 16) if secondary is not None \
                else None
            last = TreeEntry(address, bridge_of_bus.get(bus), "", secondary, subordinate)
            entries.append(last)
            pending = None
            if secondary is not None:
                pending = (domain, secondary)
                bridge_of_bus[pending] = address
            position = function.end()
        if last is not None:
            last.name = line[position:].strip().lstrip("-").strip()
    return entries


def parse_plain(text: str) -> Dict[str, Tuple[int, str]]:
    """Address -> (class code, name) from plain ``lspci`` output."""
    classes: Dict[str, Tuple[int, str]] = {}
    for line in text.splitlines():
        match = PLAIN_RE.match(line.strip())
        if not match:
            continue
        address = "%s:%s" % (match.group("domain") or "0000", match.group("bdf"))
        code = int(match.group("code"), 16) if match.group("code") else CLASSES.get(match.group("cls"), 0xFF00)
        classes[address] = (code, match.group("name"))
    return classes


def identity(name: str) -> Tuple[int, int]:
    vendor = next((number for key, number in VENDORS.items() if key in name), 0x1AF4)
    match = re.search(r"Device ([0-9a-f]{4})", name)
    if match:
        return vendor, int(match.group(1), 16)
    return vendor, next((number for key, number in PRODUCTS.items() if key in name), 0x0001)


def port_type(entry: TreeEntry, types: Dict[str, str]) -> str:
    if entry.secondary is None:
        return "endpoint"
    if entry.parent is None:
        return "root_port"
    return "downstream_port" if types.get(entry.parent) == "upstream_port" else "upstream_port"


def functions_from_tree(tree_text: str, plain_text: str = "") -> List[FakeFunction]:
    """FakeFunctions of a captured host, ready for ``build_tree``."""
    entries = parse_tree(tree_text)
    plain = parse_plain(plain_text)
    types: Dict[str, str] = {}
    functions = []
    for number, entry in enumerate(entries):
        class_code, plain_name = plain.get(entry.address, (0x0604 if entry.secondary is not None else 0xFF00, ""))
        vendor, device = identity(entry.name or plain_name)
        types[entry.address] = kind = port_type(entry, types)
        bus = int(entry.address.split(":")[1], 16)
        if entry.secondary is not None:
            config = ConfigBuilder(vendor, device, class_code << 8, header_type=1)
            config.bridge_buses(bus, entry.secondary, entry.subordinate or entry.secondary)
            config.express(kind, 32.0, 16).acs(ACS_ALL, ACS_CONFIDENTIAL)
            driver = "pcieport"
        elif class_code >> 8 == 0x06 and class_code != 0x0680:
            config = ConfigBuilder(vendor, device, class_code << 8)
            driver = None
        else:
            config = ConfigBuilder(vendor, device, class_code << 8, subsystem=(vendor, 0x0001)).express(
                "endpoint", 32.0, 16)
            driver = None
        functions.append(FakeFunction(address=entry.address, config=config.bytes(), driver=driver,
                                      iommu_group=number, numa_node="0" if bus < 0x80 else "1",
                                      parent=entry.parent))
    return functions
