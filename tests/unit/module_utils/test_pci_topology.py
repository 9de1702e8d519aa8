"""Topology model on fake trees: paths, roles, groups and their verdicts, GPU-NIC affinity."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Dict

from conftest import REPO

from ansible_collections.confidential_gpu.host.plugins.module_utils.pci_device import Selector, device_role
from ansible_collections.confidential_gpu.host.plugins.module_utils.pci_topology import filter_topology, read_topology
from ansible_collections.confidential_gpu.host.plugins.module_utils.sysfs import HostRoot

sys.path.insert(0, str(REPO / "tests" / "lib"))
from fake_sysfs import (  # noqa: E402
    ConfigBuilder,
    FakeFunction,
    ServerShape,
    build_tree,
    gpu_server,
    lab_like_host,
    virtual_function,
)


def by_address(topology: Dict[str, Any]) -> Dict[str, Dict[str, Any]]:
    return {dev["address"]: dev for dev in topology["devices"]}


def group_of(topology: Dict[str, Any], address: str) -> Dict[str, Any]:
    return next(group for group in topology["iommu_groups"] if address in group["devices"])


def test_paths_and_parents_follow_the_sysfs_hierarchy(tmp_path: Path) -> None:
    build_tree(tmp_path, lab_like_host())
    devices = by_address(read_topology(HostRoot(str(tmp_path))))
    behind = devices["0000:04:00.0"]
    assert behind["path"] == ["0000:00:10.1", "0000:02:00.0", "0000:03:00.0", "0000:04:00.0"]
    assert behind["parent"] == "0000:03:00.0"
    assert devices["0000:00:1f.0"]["path"] == ["0000:00:1f.0"] and devices["0000:00:1f.0"]["parent"] is None
    assert devices["0000:03:00.0"]["pcie"]["port_type"] == "downstream_port"
    assert devices["0000:00:10.0"]["acs"]["enabled"]["request_redirect"] is True
    assert devices["0000:02:00.0"]["acs"] is None


def test_chipset_group_is_not_viable_and_names_the_function(tmp_path: Path) -> None:
    build_tree(tmp_path, lab_like_host())
    group = group_of(read_topology(HostRoot(str(tmp_path))), "0000:00:1f.2")
    assert group["devices"] == ["0000:00:1f.0", "0000:00:1f.2", "0000:00:1f.3"]
    assert group["viable"] is False
    assert len(group["reasons"]) == 1 and "0000:00:1f.0" in group["reasons"][0]
    assert "ISA/LPC bridge" in group["reasons"][0] and "lpc_ich" in group["reasons"][0]


def test_gpu_and_audio_group_is_viable_but_not_yet_bound(tmp_path: Path) -> None:
    functions = lab_like_host()
    build_tree(tmp_path / "before", functions)
    group = group_of(read_topology(HostRoot(str(tmp_path / "before"))), "0000:01:00.0")
    assert group["devices"] == ["0000:01:00.0", "0000:01:00.1"]
    assert (group["viable"], group["bound_to_vfio"]) == (True, False)
    for function in functions:
        if function.address.startswith("0000:01:00."):
            function.driver = "vfio-pci"
    build_tree(tmp_path / "after", functions)
    group = group_of(read_topology(HostRoot(str(tmp_path / "after"))), "0000:01:00.0")
    assert (group["viable"], group["bound_to_vfio"]) == (True, True)


def test_bridge_only_group_is_not_viable_and_switch_group_ignores_bridges(tmp_path: Path) -> None:
    build_tree(tmp_path, lab_like_host())
    topology = read_topology(HostRoot(str(tmp_path)))
    lonely = group_of(topology, "0000:00:10.2")
    assert lonely["viable"] is False and "only bridges" in lonely["reasons"][0]
    switch = group_of(topology, "0000:04:00.0")
    assert switch["devices"] == ["0000:03:00.0", "0000:04:00.0"]
    # The downstream port is on pcieport; bridges stay with the host and do not block VFIO.
    assert switch["viable"] and switch["bound_to_vfio"]


def test_roles() -> None:
    assert device_role("10de", "030200") == "gpu"
    assert device_role("10de", "030000") == "gpu"
    assert device_role("10de", "040300") == "other"
    assert device_role("10de", "068000") == "nvswitch"
    assert device_role("1002", "030000") == "other"
    assert device_role("15b3", "020000") == "nic"
    assert device_role("15b3", "020700") == "nic"
    assert device_role("1000", "060400") == "bridge"
    assert device_role("144d", "010802") == "storage"
    assert device_role(None, None) == "other"


def test_gpu_nic_affinity_on_a_two_socket_server(tmp_path: Path) -> None:
    build_tree(tmp_path, gpu_server(ServerShape(gpus=4, nic_pfs_per_gpu=1, vfs_per_pf=2, sockets=2)))
    topology = read_topology(HostRoot(str(tmp_path)))
    devices = by_address(topology)
    gpu = devices["0000:03:00.0"]
    assert gpu["role"] == "gpu" and gpu["numa_node"] == 0
    assert gpu["closest_nics"] == ["0000:04:00.0"]
    pairs = [pair for pair in topology["gpu_nic_affinity"] if pair["gpu"] == gpu["address"]]
    assert [pair["nic"] for pair in pairs] == ["0000:04:00.0", "0000:08:00.0", "0000:84:00.0", "0000:88:00.0"]
    assert [pair["link"] for pair in pairs] == ["PIX", "PHB", "SYS", "SYS"]
    assert pairs[0]["common_bridge"] == "0000:01:00.0" and pairs[0]["bridges_between"] == 3
    assert all(pair["nic"] != "0000:04:00.1" for pair in pairs), "VFs are not paired"
    vf = devices["0000:04:00.1"]
    assert vf["physfn"] == "0000:04:00.0" and vf["path"][-2] == "0000:02:01.0"
    # The VF's config space reads 0xffff for its IDs; they come from the PF's SR-IOV capability.
    assert (vf["vendor_id"], vf["device_id"], vf["role"]) == ("15b3", "101e", "nic")


def test_vf_ids_fall_back_to_sysfs_when_the_pf_is_not_decodable(tmp_path: Path) -> None:
    pf_config = ConfigBuilder(0x15B3, 0x1021, 0x020000).express("endpoint", 32.0, 16).sriov(8, 1, 1, 1, 0x101E)
    pf = FakeFunction("0000:41:00.0", pf_config.bytes(64), driver="mlx5_core", iommu_group=1)
    vf = virtual_function("0000:41:00.1", "0000:41:00.0", 0x15B3, 0x101E, 0x020000, None)
    build_tree(tmp_path, [pf, vf])
    host = HostRoot(str(tmp_path))
    devices = by_address(read_topology(host))
    assert (devices["0000:41:00.1"]["vendor_id"], devices["0000:41:00.1"]["device_id"]) == ("15b3", "101e")
    assert devices["0000:41:00.1"]["physfn"] == "0000:41:00.0"
    assert any("readable only in part (not root?): 0000:41:00.0 (64 bytes)" in warning for warning in host.warnings)


def test_filters_keep_selected_devices_and_their_groups(tmp_path: Path) -> None:
    build_tree(tmp_path, gpu_server(ServerShape(gpus=2, nvswitches=2, sockets=1)))
    topology = read_topology(HostRoot(str(tmp_path)))
    chosen = filter_topology(topology, Selector(roles=("nvswitch",)))
    assert [dev["role"] for dev in chosen["devices"]] == ["nvswitch", "nvswitch"]
    assert sorted(group["id"] for group in chosen["iommu_groups"]) == sorted(
        dev["iommu_group"] for dev in chosen["devices"])
    by_id = filter_topology(topology, Selector(pci_ids=("10de:*",)))
    assert {dev["device_id"] for dev in by_id["devices"]} == {"2330", "22a3"}
    one = filter_topology(topology, Selector(addresses=("0000:03:00.0",)))
    assert [dev["address"] for dev in one["devices"]] == ["0000:03:00.0"]
    assert one["gpu_nic_affinity"] and all(pair["gpu"] == "0000:03:00.0" for pair in one["gpu_nic_affinity"])
