"""Fake-root hosts for the fleet report: the Lenovo SD665-N V3 (4x H100, each behind a ConnectX-7's internal
switch) rebuilt from its captured ``lspci -tv`` and ``lspci`` in ../shared/fixtures, and synthetic servers."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Optional

from ansible_collections.confidential_gpu.host.plugins.module_utils.cc_host import gather_facts
from ansible_collections.confidential_gpu.host.plugins.module_utils.host_critical import mark_host_critical
from ansible_collections.confidential_gpu.host.plugins.module_utils.pci_topology import read_topology
from ansible_collections.confidential_gpu.host.plugins.module_utils.sysfs import HostRoot
from ansible_collections.confidential_gpu.host.plugins.plugin_utils.fleet_report import host_entry
from fake_sysfs import FakeFunction, build_tree
from lspci_tree import functions_from_tree, parse_tree

SD665_TREE = "gpu-servers/lspci-tv_lenovo-sd665n-v3_4xH100_cx7.txt"
SD665_PLAIN = "gpu-servers/lspci_lenovo-sd665n-v3_4xH100_cx7.txt"


def sd665_functions(fixtures: Path) -> List[FakeFunction]:
    return functions_from_tree((fixtures / SD665_TREE).read_text(), (fixtures / SD665_PLAIN).read_text())


def sd665_expected_pairs(fixtures: Path) -> dict:
    """From the drawing itself: each H100 and the ConnectX-7 below the same root port (one of each per port)."""
    entries = parse_tree((fixtures / SD665_TREE).read_text())
    parent = {entry.address: entry.parent for entry in entries}

    def root_port(address: str) -> str:
        while parent.get(address) is not None:
            address = parent[address]
        return address

    nics = {root_port(e.address): e.address for e in entries if e.name.endswith("[ConnectX-7]")}
    return {e.address: nics.get(root_port(e.address)) for e in entries if "H100" in e.name}


def entry_of(root: Path, functions: List[FakeFunction], checks: Optional[list] = None) -> Dict[str, Any]:
    """A host's report entry from a tree built at ``root``, read by the info modules' own code."""
    build_tree(root, functions)
    host = HostRoot(str(root))
    topology = read_topology(host)
    mark_host_critical(host, topology)
    return host_entry(topology, gather_facts(host), checks)
