"""Filter pcie_acs_plan (plugins/filter/pcie_acs.py) against its oracle, module pcie_acs run on the same tree.

Role pcie_acs plans from role discovery's result (pci_topology_info gathered with [all, cc_host, acs]) instead of
calling module pcie_acs, which would read the host again. That is only right if the plan made on the controller
from that result is the plan the module makes on the host: each case runs both on one tree and compares every key
of the module's result (warnings included).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Callable, Dict, List

import pytest
from ansible.errors import AnsibleFilterError

from conftest import REPO

sys.path.insert(0, str(REPO / "tests" / "lib"))
from fake_sysfs import ConfigBuilder, FakeFunction, ServerShape, bridge_function, build_tree, gpu_server  # noqa: E402
from host_critical_tree import lab_vm, shared_group_functions  # noqa: E402
from rich_server import missing_fixtures, rich_gpu_server  # noqa: E402
from role_play import run_role  # noqa: E402

from ansible_collections.confidential_gpu.host.plugins.filter.pcie_acs import pcie_acs_plan  # noqa: E402


def amd_southbridge(root: Path) -> None:
    """An AMD SB900 PCI bridge (1022:780f, multi-function, on the root bus, no ACS) with an endpoint behind it and
    the ACPI IVRS table: the kernel's pci_quirk_amd_sb_acs answers for it, reading the header (acs_quirks.py)."""
    host_bridge = FakeFunction("0000:00:00.0", ConfigBuilder(0x1022, 0x1450, 0x060000).bytes(), iommu_group=0)
    sb = ConfigBuilder(0x1022, 0x780F, 0x060401, header_type=1, multifunction=True).bridge_buses(0, 1, 1)
    nic = ConfigBuilder(0x15B3, 0x1021, 0x020000).express("endpoint", 16.0, 16)
    build_tree(root, [host_bridge, FakeFunction("0000:00:14.4", sb.bytes(), iommu_group=1),
                      FakeFunction("0000:01:00.0", nic.bytes(), driver="mlx5_core", iommu_group=1)])
    (root / "sys/firmware/acpi/tables").mkdir(parents=True)
    (root / "sys/firmware/acpi/tables/IVRS").write_bytes(b"IVRS")


def hgx(root: Path) -> None:
    build_tree(root, gpu_server(ServerShape(gpus=4, nic_pfs_per_gpu=1, vfs_per_pf=1, nvswitches=2, sockets=2)))
    (root / "proc").mkdir(exist_ok=True)
    (root / "proc/cmdline").write_text("root=/dev/sda1 ro pci=noaer,disable_acs_redir=0000:03:00.0 "
                                       "pcie_acs_override=downstream\n")
    (root / "proc/sys/kernel").mkdir(parents=True, exist_ok=True)
    (root / "proc/sys/kernel/osrelease").write_text("6.8.0-49-generic\n")


def rich(root: Path) -> None:
    if missing_fixtures():
        pytest.skip(missing_fixtures())
    build_tree(root, rich_gpu_server(ServerShape(gpus=4, nvswitches=2, sockets=1)))


def upstream_without_acs(root: Path) -> None:
    """A switch whose ports lack ACS, below a root port that has it: config sizes decide 'no_acs' vs 'unknown'."""
    functions = [
        bridge_function("0000:00:01.0", 0x8086, 0x0BE2, "root_port", 1, 3),
        bridge_function("0000:01:00.0", 0x10B5, 0x8796, "upstream_port", 2, 3, acs=False),
        bridge_function("0000:02:00.0", 0x10B5, 0x8796, "downstream_port", 3, 3, acs=False),
        FakeFunction("0000:03:00.0", ConfigBuilder(0x10DE, 0x2330, 0x030200).express("endpoint", 32.0, 16).bytes(),
                     driver="nvidia", iommu_group=5),
    ]
    build_tree(root, functions)


TREES: Dict[str, Callable[[Path], Any]] = {
    "lab": lab_vm,
    "shared-groups": lambda root: lab_vm(root, shared_group_functions()),
    "amd-southbridge": amd_southbridge,
    "hgx": hgx,
    "rich": rich,
    "switch-without-acs": upstream_without_acs,
}
REQUESTS: List[Dict[str, Any]] = [
    {"profile": "report"},
    {"profile": "confidential"},
    {"profile": "confidential", "roles": ["gpu", "nic"]},
    {"profile": "p2p", "roles": ["gpu"]},
    {"profile": "p2p", "roles": ["gpu", "nic"], "p2p_mode": "config_acs", "config_acs_flags": "1x0x00x"},
    {"profile": "p2p", "roles": ["gpu"], "p2p_mode": "disable_acs_redir", "device_format": "path"},
    {"profile": "confidential", "current_cmdline": "ro pci=realloc,config_acs=x0x00xx@0000:00:01.0"},
    # the lab's GPU stand-in (bochs-display) and NVMe functions, which no role selects
    {"profile": "confidential", "pci_ids": ["1234:1111", "1b36:0010"]},
    {"profile": "p2p", "pci_ids": ["1234:1111", "1b36:0010"], "p2p_mode": "config_acs"},
]


@pytest.mark.parametrize("tree", sorted(TREES))
def test_the_plan_from_discovery_is_the_modules_plan(run_module, tmp_path: Path, tree: str) -> None:
    root = tmp_path / "root"
    TREES[tree](root)
    discovery = run_module("pci_topology_info", {"root": str(root), "gather_subset": ["all", "cc_host", "acs"]})
    assert discovery["rc"] == 0, discovery
    compared = 0
    for request in REQUESTS:
        module = run_module("pcie_acs", dict(request, root=str(root)))
        assert module["rc"] == 0, (request, module)
        planned = pcie_acs_plan(discovery, **request)
        assert planned["changed"] is False and module["changed"] is False
        for key in ("profile", "devices", "bridges", "violations", "iommu_enabled", "p2p_ports", "kernel_args",
                    "kernel_args_absent", "pci_options", "runtime_changes", "notes"):
            assert planned[key] == module[key], (request, key)
        assert planned["warnings"] == module.get("warnings", []), request
        compared += len(module["bridges"])
    assert compared > 0, "some request judged bridges on this tree"


def test_the_southbridge_quirk_is_read_from_discovery(run_module, tmp_path: Path) -> None:
    """The case a header read decides: without the multi-function bit or IVRS in the facts the quirk would not
    answer, and the bridge would read as a conventional PCI bridge."""
    amd_southbridge(tmp_path)
    discovery = run_module("pci_topology_info", {"root": str(tmp_path), "gather_subset": ["all", "acs"]})
    assert discovery["acs"]["multifunction"] == {"0000:00:14.4": True} and discovery["acs"]["ivrs"] is True
    bridges = pcie_acs_plan(discovery, profile="confidential", roles=["nic"])["bridges"]
    assert [(bridge["address"], bridge["quirk"]) for bridge in bridges] == [("0000:00:14.4", "pci_quirk_amd_sb_acs")]


@pytest.mark.parametrize(("gather_subset", "addresses", "message"), [
    (["all"], [], "it lacks acs"),
    (["!all", "iommu_groups", "acs"], [], "gathered without capabilities"),
    (["all", "acs"], ["0000:02:00.0"], r"holds 1 of the host's \d+ functions \(selected by addresses"),
])
def test_a_result_that_cannot_hold_the_plan_is_refused(
        run_module, tmp_path: Path, gather_subset: List[str], addresses: List[str], message: str) -> None:
    lab_vm(tmp_path)
    discovery = run_module("pci_topology_info", {"root": str(tmp_path), "gather_subset": gather_subset,
                                                 "addresses": addresses})
    with pytest.raises(AnsibleFilterError, match=message):
        pcie_acs_plan(discovery, profile="confidential")


def test_bad_options_are_refused_as_the_module_refuses_them(run_module, tmp_path: Path) -> None:
    lab_vm(tmp_path)
    discovery = run_module("pci_topology_info", {"root": str(tmp_path), "gather_subset": ["all", "acs"]})
    module = run_module("pcie_acs", {"root": str(tmp_path), "profile": "p2p", "config_acs_flags": "2"})
    with pytest.raises(AnsibleFilterError) as refused:
        pcie_acs_plan(discovery, profile="p2p", config_acs_flags="2")
    assert module["failed"] is True and module["msg"] in str(refused.value)


# --------------------------------------------------------------------------
# Role pcie_acs with and without this run's discovery result
# --------------------------------------------------------------------------

def test_the_role_plans_from_discovery_without_a_host_call(run_module, tmp_path: Path) -> None:
    """The same role run, once reading the host (module) and once from discovery's result (filter): the same
    pcie_acs_result and boot arguments, and in the second run module pcie_acs does not run."""
    root = tmp_path / "root"
    lab_vm(root, shared_group_functions())
    discovery = run_module("pci_topology_info", {"root": str(root), "gather_subset": ["all", "cc_host", "acs"]})
    variables = {"pcie_acs_root": str(root), "pcie_acs_profile": "confidential", "pcie_acs_fail_on_violation": False,
                 "pcie_acs_addresses": ["0000:12:00.0", "0000:20:00.0"]}
    report = ["pcie_acs_result", "confidential_gpu_kernel_args_contributions"]
    read = run_role(tmp_path, "pcie_acs", variables, report=report, name="read")
    planned = run_role(tmp_path, "pcie_acs", dict(variables, pcie_acs_host_topology=discovery), report=report,
                       name="planned")
    assert read.rc == 0 and planned.rc == 0, read.output + planned.output
    module_task = "TASK [confidential_gpu.host.pcie_acs : Read ACS on the bridges above the selected devices]"
    assert "ok: [localhost]" in read.output.split(module_task)[1].split("TASK [")[0]
    assert "skipping: [localhost]" in planned.output.split(module_task)[1].split("TASK [")[0]
    for key in ("bridges", "violations", "devices", "kernel_args", "kernel_args_absent"):
        assert planned.facts["pcie_acs_result"][key] == read.facts["pcie_acs_result"][key], key
    assert planned.facts["pcie_acs_result"]["violations"], "the shared group's bridges lack ACS: a real verdict"
    assert planned.facts["confidential_gpu_kernel_args_contributions"] == \
        read.facts["confidential_gpu_kernel_args_contributions"]
    runtime = run_role(tmp_path, "pcie_acs", dict(variables, pcie_acs_host_topology=discovery,
                                                  pcie_acs_runtime_write=True), report=report, check=True,
                       name="runtime")
    assert "ok: [localhost]" in runtime.output.split(module_task)[1].split("TASK [")[0], \
        "runtime writes need the host: the module runs"


def test_a_filtered_discovery_result_leaves_the_check_to_the_module(run_module, tmp_path: Path) -> None:
    """discovery_roles narrows discovery's result: the role cannot plan from it, so the module reads the host."""
    root = tmp_path / "root"
    lab_vm(root, shared_group_functions())
    discovery = run_module("pci_topology_info", {"root": str(root), "gather_subset": ["all", "acs"], "roles": ["gpu"]})
    result = run_role(tmp_path, "pcie_acs", {"pcie_acs_root": str(root), "pcie_acs_profile": "report",
                                             "pcie_acs_host_topology": discovery}, report=["pcie_acs_result"])
    assert result.rc == 0, result.output
    module_task = "TASK [confidential_gpu.host.pcie_acs : Read ACS on the bridges above the selected devices]"
    assert "ok: [localhost]" in result.output.split(module_task)[1].split("TASK [")[0]
    assert [dev["address"] for dev in result.facts["pcie_acs_result"]["devices"]] == ["0000:12:00.0"]
