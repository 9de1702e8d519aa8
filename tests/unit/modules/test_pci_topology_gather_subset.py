"""pci_topology_info's gather_subset and its null keys (issue 16 point 7).

On the old code the option did not exist (AnsibleModule refused it as unsupported) and every device carried
``acs``, ``ats``, ``pri``, ``pasid``, ``ari`` and ``resizable_bar`` even when null, so each test here fails there.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Dict

import pytest

from conftest import REPO

sys.path.insert(0, str(REPO / "tests" / "lib"))
from fake_sysfs import ServerShape, build_tree, gpu_server  # noqa: E402

MODULE = "pci_topology_info"
CAPABILITIES = {"pcie", "acs", "ats", "pri", "pasid", "sriov", "ari", "resizable_bar"}
MINIMUM = {"address", "vendor_id", "device_id", "class_id", "subsystem_vendor_id", "subsystem_device_id", "driver",
           "iommu_group", "numa_node", "parent", "path", "physfn", "role", "kind"}


@pytest.fixture
def server(tmp_path: Path) -> str:
    build_tree(tmp_path / "host", gpu_server(ServerShape(gpus=2, nic_pfs_per_gpu=1, vfs_per_pf=2, nvswitches=1)))
    return str(tmp_path / "host")


def gather(run_module, root: str, subset: Any, **extra: Any) -> Dict[str, Any]:
    return run_module(MODULE, dict({"root": root, "gather_subset": subset}, **extra))


def test_not_all_returns_only_the_minimum(run_module, server: str) -> None:
    result = gather(run_module, server, ["!all"])
    assert "iommu_groups" not in result and "gpu_nic_affinity" not in result
    assert all(set(dev) == MINIMUM for dev in result["devices"]), result["devices"][0]
    assert set(result["summary"]) == {"functions", "gpus", "nvswitches", "nics", "iommu_groups", "groups_not_viable"}


def test_the_minimum_is_the_same_whatever_else_is_gathered(run_module, server: str) -> None:
    """Without capabilities the module decodes only what the model needs (the PCIe port type, SR-IOV) and skips
    the affinity: every minimum key, VFs' identity and physfn included, and the summary still match a full run."""
    minimum = gather(run_module, server, ["!all"])
    full = gather(run_module, server, ["all"])
    assert [dev for dev in minimum["devices"] if dev["physfn"]], "the tree has VFs, found through SR-IOV"
    assert minimum["devices"] == [{key: dev[key] for key in MINIMUM} for dev in full["devices"]]
    assert minimum["summary"] == {key: value for key, value in full["summary"].items()
                                  if key not in ("host_critical", "groups_host_critical")}


@pytest.mark.parametrize("subset, top, device_keys", [
    ("capabilities", set(), {"pcie", "sriov"}),
    ("iommu_groups", {"iommu_groups"}, set()),
    ("gpu_nic_affinity", {"gpu_nic_affinity"}, set()),
    ("host_critical", set(), {"host_critical"}),
])
def test_each_subset_adds_what_it_promises_and_no_more(run_module, server: str, subset: str, top: set,
                                                       device_keys: set) -> None:
    result = gather(run_module, server, ["!all", subset])
    assert {"iommu_groups", "gpu_nic_affinity"} & set(result) == top
    endpoints = [dev for dev in result["devices"] if dev["role"] != "bridge"]
    assert all(set(dev) - MINIMUM - {"closest_nics"} <= device_keys | (CAPABILITIES if subset == "capabilities"
                                                                       else set()) for dev in endpoints)
    assert any(device_keys <= set(dev) for dev in endpoints)
    gpus = [dev for dev in result["devices"] if dev["role"] == "gpu"]
    assert all(("closest_nics" in dev) == (subset == "gpu_nic_affinity") for dev in gpus)
    assert ("host_critical" in result["summary"]) == (subset == "host_critical")


def test_default_and_exclusions_start_from_all(run_module, server: str) -> None:
    everything = run_module(MODULE, {"root": server})
    assert everything == gather(run_module, server, ["all"])
    assert {"iommu_groups", "gpu_nic_affinity"} <= set(everything)
    assert all("host_critical" in dev and "pcie" in dev for dev in everything["devices"])
    without = gather(run_module, server, ["!gpu_nic_affinity"])
    assert "gpu_nic_affinity" not in without and "iommu_groups" in without
    assert without["devices"] == [{key: value for key, value in dev.items() if key != "closest_nics"}
                                  for dev in everything["devices"]]


def test_null_capabilities_are_absent(run_module, server: str) -> None:
    devices = {dev["address"]: dev for dev in run_module(MODULE, {"root": server})["devices"]}
    gpu = next(dev for dev in devices.values() if dev["role"] == "gpu")
    assert not {"acs", "ats", "pri", "pasid", "ari", "resizable_bar"} & set(gpu)
    assert gpu["sriov"] is None and gpu["physfn"] is None  # kept: roles read them
    root_port = devices[gpu["path"][0]]
    assert root_port["acs"]["register_layout"] == "standard"


@pytest.mark.parametrize("subset", [["hardware"], ["!network"], ["all", "capability"]])
def test_unknown_subset_fails_naming_it_and_the_accepted(run_module, server: str, subset: list) -> None:
    result = gather(run_module, server, subset)
    assert result.get("failed"), result
    bad = next(value for value in subset if value.lstrip("!") not in ("all",))
    assert repr(bad) in result["msg"], result["msg"]
    assert "accepted: all, min, capabilities, host_critical, iommu_groups, gpu_nic_affinity, cc_host" in result["msg"]


def test_check_mode_returns_the_same(run_module, server: str) -> None:
    normal = gather(run_module, server, ["!all", "iommu_groups"])
    checked = gather(run_module, server, ["!all", "iommu_groups"], _ansible_check_mode=True)
    assert normal == checked and "changed" in normal and not normal["changed"]


def test_cc_host_is_cc_host_info_in_the_same_run_and_only_when_named(run_module, server: str) -> None:
    """Role discovery reads the host in one module run: the cc_host part must be what cc_host_info returns for the
    same root, and ``all`` must not grow it (callers of the default pay nothing for it)."""
    combined = gather(run_module, server, ["all", "cc_host"])
    alone = run_module("cc_host_info", {"root": server})
    module_keys = {"changed", "warnings", "invocation", "failed", "rc"}  # run_module adds rc
    assert combined["cc_host"] == {key: value for key, value in alone.items() if key not in module_keys}
    assert {"iommu", "verdicts"} <= set(combined["cc_host"])
    assert "cc_host" not in run_module(MODULE, {"root": server})
    assert "cc_host" not in gather(run_module, server, ["!all"])
    everything = gather(run_module, server, ["all"])
    assert {key: combined[key] for key in everything if key != "invocation"} == {
        key: value for key, value in everything.items() if key != "invocation"}
