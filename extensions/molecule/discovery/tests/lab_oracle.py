"""The oracle of the discovery checks: what lspci says, parsed.

The tests import these helpers from here, not from conftest.py: the unit
tests' conftest is on pytest's path too, so `import conftest` could find it.
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict

# lspci's names for port types and ACS flags, shared with the unit tests' oracle.
sys.path.insert(0, str(Path(__file__).resolve().parents[4] / "tests" / "lib"))
from lspci_oracle import ACS_NAMES as ACS_FLAGS  # noqa: E402
from lspci_oracle import PORT_TYPES  # noqa: E402


HEADER_RE = re.compile(
    r"^(?P<path>\S+) .*?\[(?P<cls>[0-9a-f]{4})\]: .*\[(?P<ven>[0-9a-f]{4}):(?P<dev>[0-9a-f]{4})\]"
    r"(?:.*\(prog-if (?P<progif>[0-9a-f]{2}))?"
)
EXPRESS_RE = re.compile(r"Express \(v\d\) (?P<type>[A-Za-z ]+?)(?: \(|,)")


@dataclass
class LspciFunction:
    address: str
    path: list[str]
    vendor_id: str
    device_id: str
    class_id: str
    driver: str | None = None
    iommu_group: int | None = None
    numa_node: int | None = None  # lspci prints "NUMA node: N" only for a node >= 0
    port_type: str | None = None
    acs_cap: dict[str, bool] | None = None
    acs_ctl: dict[str, bool] | None = None
    sriov: dict[str, int | str] = field(default_factory=dict)


Lspci = Dict[str, LspciFunction]  # by address
Devices = Dict[str, dict]  # pci_topology_info's devices by address


def _flags(text: str) -> dict[str, bool]:
    return {ACS_FLAGS[m[0]]: m[1] == "+" for m in re.findall(r"(\w+)([+-])", text) if m[0] in ACS_FLAGS}


def parse_lspci(text: str) -> dict[str, LspciFunction]:
    functions: dict[str, LspciFunction] = {}
    for block in text.strip().split("\n\n"):
        lines = block.splitlines()
        head = HEADER_RE.match(lines[0])
        assert head, f"unparsed lspci header: {lines[0]}"
        first, *rest = head["path"].split("/")
        domain = first.split(":")[0]
        path = [first] + [f"{domain}:{a}" for a in rest]
        fn = LspciFunction(
            address=path[-1],
            path=path,
            vendor_id=head["ven"],
            device_id=head["dev"],
            class_id=head["cls"] + (head["progif"] or "00"),
        )
        for line in lines[1:]:
            line = line.strip()
            if m := re.match(r"IOMMU group: (\d+)", line):
                fn.iommu_group = int(m[1])
            elif m := re.match(r"NUMA node: (\d+)", line):
                fn.numa_node = int(m[1])
            elif m := re.match(r"Kernel driver in use: (\S+)", line):
                fn.driver = m[1]
            elif (m := EXPRESS_RE.search(line)) and line.startswith("Capabilities:"):
                fn.port_type = PORT_TYPES.get(m["type"], m["type"])
            elif line.startswith("ACSCap:"):
                fn.acs_cap = _flags(line)
            elif line.startswith("ACSCtl:"):
                fn.acs_ctl = _flags(line)
            elif m := re.match(r"Initial VFs: (\d+), Total VFs: (\d+), Number of VFs: (\d+)", line):
                fn.sriov.update(initial_vfs=int(m[1]), total_vfs=int(m[2]), num_vfs=int(m[3]))
            elif m := re.match(r"VF offset: (\d+), stride: (\d+), Device ID: ([0-9a-f]{4})", line):
                fn.sriov.update(vf_offset=int(m[1]), vf_stride=int(m[2]), vf_device_id=m[3])
        functions[fn.address] = fn
    return functions


def find(functions: Lspci | Devices, vendor_id: str, device_id: str) -> Any:
    """The one function with these IDs (lspci's or the module's view)."""
    items = functions.values() if isinstance(functions, dict) else functions
    match = [f for f in items if _get(f, "vendor_id") == vendor_id and _get(f, "device_id") == device_id]
    assert len(match) == 1, f"expected one {vendor_id}:{device_id}, found {len(match)}"
    return match[0]


def _get(item: Any, key: str) -> Any:
    return item[key] if isinstance(item, dict) else getattr(item, key)
