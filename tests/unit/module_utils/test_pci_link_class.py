"""nvidia-smi topo link classes (PIX, PXB, PHB, NODE, SYS) of PCI functions, against nvidia-smi itself.

The legend ``nvidia-smi topo -m`` prints (captured in
../shared/fixtures/gpu-servers/stelline_*.md and nvidia-smi-topo-m_*.txt):

    PHB  = Connection traversing PCIe as well as a PCIe Host Bridge (typically the CPU)
    PXB  = Connection traversing multiple PCIe bridges (without traversing the PCIe Host Bridge)
    PIX  = Connection traversing at most a single PCIe bridge

NVML's nvmlGpuTopologyLevel_t (nvml.h) counts the same in switches:
NVML_TOPOLOGY_SINGLE "all devices that only need traverse a single PCIe
switch", NVML_TOPOLOGY_MULTIPLE "all devices that need not traverse a host
bridge".

Two oracles: the captured hosts' own ``lspci -tv`` trees rebuilt as fake
sysfs, compared cell by cell with the ``nvidia-smi topo -m`` matrix captured on
the same host; and a nested-switch tree whose labels follow from the legend.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Dict, List, Tuple

import pytest
from conftest import REPO

from ansible_collections.confidential_gpu.host.plugins.module_utils.pci_topology import (
    link_between,
    port_kinds,
    read_functions,
    read_topology,
)
from ansible_collections.confidential_gpu.host.plugins.module_utils.sysfs import HostRoot

sys.path.insert(0, str(REPO / "tests" / "lib"))
from fake_sysfs import ConfigBuilder, FakeFunction, bridge_function, build_tree  # noqa: E402
from lspci_tree import functions_from_tree, parse_tree  # noqa: E402

ASUS = "gpu-servers/stelline_asus-esc8000a-e12_lspci-tv_vvv_topo.md"
PUGET = "gpu-servers/stelline_puget-wrx90_lspci-tv_vvv_topo.md"


def fenced_after(text: str, command: str) -> str:
    """The body of the fenced block whose first line runs ``command``."""
    start = text.index(command)
    return text[start:text.index("```", start)]


def topo_matrix(text: str) -> Tuple[List[str], Dict[Tuple[str, str], str]]:
    """Column names and the link of every pair of a captured ``nvidia-smi topo -m`` (self and NV# left out)."""
    block = fenced_after(text, "nvidia-smi topo -m").splitlines()
    header = block[1].split()
    names = [name for name in header if re.match(r"^(GPU|NIC)\d+$", name)]
    cells: Dict[Tuple[str, str], str] = {}
    for line in block[2:]:
        fields = line.split()
        if not fields or fields[0] not in names:
            continue
        for column, value in zip(names, fields[1:1 + len(names)]):
            if value in ("PIX", "PXB", "PHB", "NODE", "SYS"):
                cells[(fields[0], column)] = value
    return names, cells


def capture_addresses(tree: str, names: List[str], markers: Dict[str, str]) -> Dict[str, str]:
    """GPUn and NICn of the matrix as PCI addresses: nvidia-smi and mlx5 both number in PCI address order.

    The functions are taken from the captured ``lspci -tv`` by product name
    (``markers``); the matrix's own NODE/SYS columns agree with this order
    (NIC0/1 share GPU0/1's NUMA node).
    """
    entries = parse_tree(tree)
    found = {kind: sorted(entry.address for entry in entries if marker in entry.name)
             for kind, marker in markers.items()}
    return {name: found[name[:3]][int(name[3:])] for name in names}


def check_against_capture(shared_fixtures: Path, tmp_path: Path, name: str, numa: Dict[str, str],
                          markers: Dict[str, str]) -> Dict[Tuple[str, str], str]:
    text = (shared_fixtures / name).read_text()
    names, cells = topo_matrix(text)
    assert cells, "the capture has a topo -m matrix"
    functions = functions_from_tree(fenced_after(text, "lspci -tv"))
    for function in functions:
        function.numa_node = numa.get(function.address[:7], function.numa_node)
    build_tree(tmp_path, functions)
    devices = {dev["address"]: dev for dev in read_functions(HostRoot(str(tmp_path)))}
    kinds = port_kinds(list(devices.values()))
    address = capture_addresses(fenced_after(text, "lspci -tv"), names, markers)
    ours = {(row, column): link_between(devices[address[row]], devices[address[column]], kinds)
            for (row, column) in cells}
    assert ours == cells
    return cells


def test_asus_esc8000a_links_match_its_nvidia_smi_topo(shared_fixtures: Path, tmp_path: Path) -> None:
    """4 GPUs and 2 dual-port ConnectX-7 over two sockets: the two ports of one card are PIX.

    The two ports hang directly below one root port (20:03.1, 80:01.1): one
    bridge between them, so PIX, not PXB; the old rule (shared bridge a root
    port -> PXB) said PXB.
    """
    cells = check_against_capture(shared_fixtures, tmp_path, ASUS, {}, {"GPU": "RTX 6000", "NIC": "ConnectX-7"})
    assert cells[("NIC0", "NIC1")] == "PIX" and cells[("GPU0", "NIC0")] == "NODE"


def test_puget_wrx90_links_match_its_nvidia_smi_topo(shared_fixtures: Path, tmp_path: Path) -> None:
    """One socket (numactl: node 0 only): GPUs on two root ports of one host bridge are PHB, the CX-7 ports PIX."""
    one_node = {"0000:%02x" % bus: "0" for bus in range(0x100)}
    cells = check_against_capture(shared_fixtures, tmp_path, PUGET, one_node,
                                  {"GPU": "RTX 6000", "NIC": "ConnectX-7"})
    assert cells[("GPU0", "GPU1")] == "PHB" and cells[("NIC0", "NIC1")] == "PIX"


def nested_switch_host() -> List[FakeFunction]:
    """Root port 00:01.0 > switch A (up 01:00.0, down 02:00.0, 02:01.0, 02:02.0) > switch B below 02:02.0.

    GPU0 (03:00.0) and NIC0 (04:00.0) sit on two downstream ports of switch A;
    GPU1 (07:00.0) on switch B's downstream port 06:00.0.
    """
    functions = [
        bridge_function("0000:00:01.0", 0x1022, 0x14AB, "root_port", 0x01, 0x07),
        bridge_function("0000:01:00.0", 0x1000, 0xC030, "upstream_port", 0x02, 0x07),
        bridge_function("0000:02:00.0", 0x1000, 0xC030, "downstream_port", 0x03, 0x03),
        bridge_function("0000:02:01.0", 0x1000, 0xC030, "downstream_port", 0x04, 0x04),
        bridge_function("0000:02:02.0", 0x1000, 0xC030, "downstream_port", 0x05, 0x07),
        bridge_function("0000:05:00.0", 0x1000, 0xC030, "upstream_port", 0x06, 0x07),
        bridge_function("0000:06:00.0", 0x1000, 0xC030, "downstream_port", 0x07, 0x07),
    ]
    gpu = ConfigBuilder(0x10DE, 0x2330, 0x030200).express("endpoint", 32.0, 16).bytes()
    nic = ConfigBuilder(0x15B3, 0x1021, 0x020000).express("endpoint", 32.0, 16).bytes()
    functions += [FakeFunction("0000:03:00.0", gpu, driver="nvidia"),
                  FakeFunction("0000:07:00.0", gpu, driver="nvidia"),
                  FakeFunction("0000:04:00.0", nic, driver="mlx5_core")]
    for number, function in enumerate(functions):
        function.iommu_group, function.numa_node = number, "0"
    return functions


@pytest.mark.parametrize("config_readable", [True, False], ids=["root", "not-root"])
def test_nested_switches_are_pxb_and_one_switch_is_pix(tmp_path: Path, config_readable: bool) -> None:
    """GPU0-NIC0 cross switch A only: "at most a single PCIe bridge", PIX.
    GPU1-NIC0 cross switch B and switch A below one root port: "multiple PCIe
    bridges (without traversing the PCIe Host Bridge)", PXB (the old rule said
    PIX: their deepest shared bridge is not a root port).  A non-root reader
    sees no PCIe capability; the port types then follow from the hierarchy.
    """
    functions = nested_switch_host()
    if not config_readable:
        for function in functions:
            function.config = function.config[:64]
    build_tree(tmp_path, functions)
    pairs = {(pair["gpu"], pair["nic"]): pair for pair in read_topology(HostRoot(str(tmp_path)))["gpu_nic_affinity"]}
    assert pairs[("0000:03:00.0", "0000:04:00.0")]["link"] == "PIX"
    assert pairs[("0000:07:00.0", "0000:04:00.0")]["link"] == "PXB"
    assert pairs[("0000:07:00.0", "0000:04:00.0")]["common_bridge"] == "0000:01:00.0"
