"""The one PCI device model: kinds on a real host's tree, the selection rule, group expansion, viability."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Dict, List

import pytest
from conftest import REPO

from ansible_collections.confidential_gpu.host.plugins.module_utils.kata_pcie_plan import plan_pcie
from ansible_collections.confidential_gpu.host.plugins.module_utils.pci_device import (
    Selector,
    expand_groups,
    members_by_group,
)
from ansible_collections.confidential_gpu.host.plugins.module_utils.pci_driver import build_intent
from ansible_collections.confidential_gpu.host.plugins.module_utils.pci_driver_plan import select
from ansible_collections.confidential_gpu.host.plugins.module_utils.pci_topology import filter_topology, read_topology
from ansible_collections.confidential_gpu.host.plugins.module_utils.sysfs import HostRoot

sys.path.insert(0, str(REPO / "tests" / "lib"))
from fake_sysfs import ServerShape, build_tree, gpu_server, lab_like_host  # noqa: E402
from lspci_tree import functions_from_tree  # noqa: E402

# Lenovo SD665-N V3 with 4 H100 and ConnectX-7 (../shared/fixtures/gpu-servers, see its README).
SD665 = "gpu-servers/lspci-tv_lenovo-sd665n-v3_4xH100_cx7.txt"
SD665_PLAIN = "gpu-servers/lspci_lenovo-sd665n-v3_4xH100_cx7.txt"


def topology_of(root: Path, functions: List[Any]) -> Dict[str, Any]:
    build_tree(root, functions)
    return read_topology(HostRoot(str(root)))


def test_every_function_of_a_real_host_has_one_kind(shared_fixtures: Path, tmp_path: Path) -> None:
    functions = functions_from_tree((shared_fixtures / SD665).read_text(), (shared_fixtures / SD665_PLAIN).read_text())
    devices = topology_of(tmp_path, functions)["devices"]
    kinds = {dev["address"]: dev["kind"] for dev in devices}
    bridges = {f.address for f in functions if f.is_bridge}
    assert bridges and {a for a, kind in kinds.items() if kind == "bridge"} == bridges
    host_only = {dev["address"] for dev in devices if (dev["class_id"] or "")[:4] in ("0600", "0601")}
    assert host_only and {a for a, kind in kinds.items() if kind == "host_only"} == host_only
    gpus = [dev for dev in devices if dev["role"] == "gpu"]
    assert len(gpus) == 4 and all(dev["kind"] == "endpoint" for dev in gpus)


def test_virtual_functions_are_of_kind_vf(tmp_path: Path) -> None:
    devices = topology_of(tmp_path, gpu_server(ServerShape(gpus=1, nic_pfs_per_gpu=1, vfs_per_pf=2)))["devices"]
    vfs = [dev for dev in devices if dev["physfn"]]
    assert len(vfs) == 2 and {dev["kind"] for dev in vfs} == {"vf"}


def test_what_adds_up_and_where_narrows_in_every_module(tmp_path: Path) -> None:
    """Old code: pci_topology_info ANDed roles with pci_ids (NVSwitches of the ID were dropped), pci_driver ORed
    addresses with roles (a named NIC came along with every GPU)."""
    root = tmp_path / "host"
    topology = topology_of(root, gpu_server(ServerShape(gpus=2, nvswitches=2, sockets=1)))
    devices = topology["devices"]
    both = Selector.of(roles=["gpu"], pci_ids=["10de:22a3"])
    roles = sorted(dev["role"] for dev in filter_topology(topology, both)["devices"])
    assert roles == ["gpu", "gpu", "nvswitch", "nvswitch"]
    nic = next(dev["address"] for dev in devices if dev["role"] == "nic")
    gpu = next(dev["address"] for dev in devices if dev["role"] == "gpu")
    intent = build_intent({"addresses": [nic, gpu], "roles": ["gpu"]})
    assert select(devices, intent) == [gpu]
    assert [dev["address"] for dev in filter_topology(topology, intent.selector)["devices"]] == [gpu]


def test_bridges_are_taken_for_a_guest_only_by_address(tmp_path: Path) -> None:
    devices = topology_of(tmp_path, lab_like_host())["devices"]
    by_role = Selector(roles=("bridge",))
    assert by_role.select(devices) and by_role.select(devices, to_guest=True) == []
    port = next(dev["address"] for dev in devices if dev["kind"] == "bridge")
    assert [dev["address"] for dev in Selector(addresses=(port,)).select(devices, to_guest=True)] == [port]


def test_group_expansion_keeps_bridges_apart(tmp_path: Path) -> None:
    devices = topology_of(tmp_path, lab_like_host())["devices"]
    endpoint = next(dev for dev in devices if dev["address"] == "0000:04:00.0")
    ((gid, endpoints, bridges),) = expand_groups([endpoint, endpoint], members_by_group(devices))
    assert gid == endpoint["iommu_group"] and endpoints == ["0000:04:00.0"] and bridges == ["0000:03:00.0"]


@pytest.mark.parametrize("driver, viable", [("pcieport", True), (None, True), ("shpchp", False)])
def test_one_viability_verdict_for_info_driver_and_kata(tmp_path: Path, driver: Any, viable: bool) -> None:
    """Old code: pci_topology_info (and so the Kata plan) called a group viable whose bridge sat on a driver VFIO
    does not accept, which pci_driver then refused."""
    functions = lab_like_host()
    for function in functions:
        if function.address == "0000:03:00.0":
            function.driver = driver
    topology = topology_of(tmp_path, functions)
    group = next(group for group in topology["iommu_groups"] if "0000:04:00.0" in group["devices"])
    assert group["viable"] is viable
    plan = plan_pcie(topology, ["0000:04:00.0"], "flatten")
    assert (plan["errors"] == []) is viable
    if not viable:
        assert "bridge 0000:03:00.0 is bound to shpchp, which does not declare driver_managed_dma" \
            in group["reasons"][0] and "not viable" in plan["errors"][0]
