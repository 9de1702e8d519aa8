"""PCIe planning for Kata guests on real and synthetic topologies.

Topologies are read by ``pci_topology.read_topology`` from fake sysfs trees:
the Lenovo SD665-N V3 (4x H100, each behind a ConnectX-7's internal switch)
rebuilt from its captured ``lspci -tv`` and ``lspci`` in ../shared/fixtures,
the lab VM's shape (tests/lib/fake_sysfs.py ``lab_like_host``), and synthetic
HGX-style servers for the limits.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Any, Dict, List

import pytest
from conftest import REPO

from ansible_collections.confidential_gpu.host.plugins.module_utils.kata_pcie_plan import (
    KATA_MAX_PCIE_PORTS,
    PlanError,
    plan_lines,
    plan_pcie,
)
from ansible_collections.confidential_gpu.host.plugins.module_utils.pci_topology import read_topology
from ansible_collections.confidential_gpu.host.plugins.module_utils.sysfs import HostRoot

sys.path.insert(0, str(REPO / "tests" / "lib"))
from fake_sysfs import ConfigBuilder, FakeFunction, ServerShape, build_tree, gpu_server, lab_like_host  # noqa: E402
from lspci_tree import functions_from_tree, parse_tree  # noqa: E402

SD665 = "gpu-servers/lspci-tv_lenovo-sd665n-v3_4xH100_cx7.txt"
SD665_PLAIN = "gpu-servers/lspci_lenovo-sd665n-v3_4xH100_cx7.txt"


def topology_of(root: Path, functions: List[FakeFunction]) -> Dict[str, Any]:
    build_tree(root, functions)
    return read_topology(HostRoot(str(root)))


@pytest.fixture
def sd665(shared_fixtures: Path, tmp_path: Path) -> Dict[str, Any]:
    tree = (shared_fixtures / SD665).read_text()
    plain = (shared_fixtures / SD665_PLAIN).read_text()
    return topology_of(tmp_path / "sd665", functions_from_tree(tree, plain))


@pytest.fixture
def sd665_drawing(shared_fixtures: Path) -> Dict[str, Any]:
    """What the capture itself shows: GPUs, ConnectX-7 ports, and the bridge each hangs below."""
    tree = (shared_fixtures / SD665).read_text()
    entries = parse_tree(tree)
    return {
        "gpus": sorted(entry.address for entry in entries if "H100" in entry.name),
        "cx7": sorted(entry.address for entry in entries if entry.name.endswith("[ConnectX-7]")),
        "parent": {entry.address: entry.parent for entry in entries},
        "h100_lines": len(re.findall(r"H100 SXM5", tree)),
    }


@pytest.fixture
def lab(tmp_path: Path) -> Dict[str, Any]:
    return topology_of(tmp_path / "lab", lab_like_host())


# ---------------------------------------------------------------------------
# The 4x H100 server


def test_the_capture_is_read_as_a_tree(sd665: Dict[str, Any], sd665_drawing: Dict[str, Any]) -> None:
    devices = {dev["address"]: dev for dev in sd665["devices"]}
    gpus = sorted(address for address, dev in devices.items() if dev["role"] == "gpu")
    assert gpus == sd665_drawing["gpus"] and len(gpus) == sd665_drawing["h100_lines"] == 4
    for gpu in gpus:
        assert devices[gpu]["parent"] == sd665_drawing["parent"][gpu]
        assert devices[gpu]["pcie"]["port_type"] == "endpoint"


def test_flatten_puts_each_gpu_on_a_root_port(sd665: Dict[str, Any], sd665_drawing: Dict[str, Any]) -> None:
    plan = plan_pcie(sd665, ["gpu"], "flatten")
    assert plan["errors"] == []
    assert plan["cold_plug_vfio"] == "root-port"
    assert plan["pcie_root_port"] == plan["ports"] == len(sd665_drawing["gpus"])
    assert plan["pcie_switch_port"] == 0
    assert plan["requested"] == sd665_drawing["gpus"]
    assert [dev["address"] for dev in plan["devices"]] == sd665_drawing["gpus"]
    assert all(dev["requested"] and dev["needs_port"] and dev["member_of"] is None for dev in plan["devices"])
    assert not any("flatten puts" in text for text in plan["warnings"]), "no NIC selected, no pairing lost"


def test_replicate_keeps_each_gpu_with_the_cx7_of_its_switch(sd665: Dict[str, Any],
                                                             sd665_drawing: Dict[str, Any]) -> None:
    plan = plan_pcie(sd665, ["gpu", "gpu_nics"], "replicate")
    assert plan["errors"] == []
    assert plan["cold_plug_vfio"] == "switch-port"
    assert plan["pcie_switch_port"] == plan["ports"] == 8 and plan["pcie_root_port"] == 0
    assert sorted(plan["requested"]) == sorted(sd665_drawing["gpus"] + sd665_drawing["cx7"])
    parent = sd665_drawing["parent"]
    assert len(plan["layout"]) == 4
    for cluster in plan["layout"]:
        assert len(cluster["gpus"]) == 1 and len(cluster["nics"]) == 1 and cluster["other"] == []
        gpu, nic = cluster["gpus"][0], cluster["nics"][0]
        # In the drawing, NIC and GPU meet at the ConnectX-7 switch's upstream port: the NIC's grandparent.
        assert cluster["bridge"] == parent[parent[nic]]
        assert cluster["bridge"] in _ancestors(gpu, parent)
        # The GPU hangs below a second switch (its grandparent's upstream port) on a downstream port of the
        # ConnectX-7 switch: two switches between GPU and NIC, "multiple PCIe bridges (without traversing the
        # PCIe Host Bridge)" in nvidia-smi topo's legend, so PXB (see test_pci_link_class.py).
        assert parent[parent[gpu]] != cluster["bridge"] and cluster["link"] == "PXB"
    assert any("one emulated switch with 8 downstream ports" in text and "4 separate places" in text
               for text in plan["warnings"])


def _ancestors(address: str, parent: Dict[str, Any]) -> List[str]:
    chain = []
    while parent.get(address):
        address = parent[address]
        chain.append(address)
    return chain


def test_replicate_one_pair_is_a_faithful_replica(sd665: Dict[str, Any], sd665_drawing: Dict[str, Any]) -> None:
    gpu = sd665_drawing["gpus"][0]
    plan = plan_pcie(sd665, [gpu[5:], "gpu_nics"], "replicate")
    assert plan["errors"] == [] and plan["ports"] == 2
    assert plan["requested"][0] == gpu and plan["requested"][1] in sd665_drawing["cx7"]
    assert not any("separate places" in text for text in plan["warnings"])


def test_flatten_says_which_pairs_it_separates(sd665: Dict[str, Any]) -> None:
    plan = plan_pcie(sd665, ["gpu", "gpu_nics"], "flatten")
    assert plan["errors"] == [] and plan["pcie_root_port"] == 8
    lost = [text for text in plan["warnings"] if text.startswith("flatten puts every device")]
    assert len(lost) == 4 and all("replicate keeps them behind one switch" in text for text in lost)


def test_nic_role_selects_every_nic_pf(sd665: Dict[str, Any], shared_fixtures: Path) -> None:
    plain = (shared_fixtures / SD665_PLAIN).read_text()
    ethernet = len(re.findall(r"^\S+ Ethernet controller", plain, flags=re.M))
    plan = plan_pcie(sd665, ["nic"], "flatten")
    assert plan["errors"] == [] and plan["ports"] == ethernet == 7


# ---------------------------------------------------------------------------
# Kata's limit of 16 ports


def test_more_than_sixteen_ports_is_an_error_with_advice(tmp_path: Path) -> None:
    topology = topology_of(tmp_path, gpu_server(ServerShape(gpus=8, nic_pfs_per_gpu=2)))
    plan = plan_pcie(topology, ["gpu", "gpu_nics"], "replicate")
    assert plan["ports"] == 24 and plan["max_ports"] == KATA_MAX_PCIE_PORTS == 16
    assert len(plan["errors"]) == 1
    error = plan["errors"][0]
    assert error.startswith("24 PCIe switch ports needed")
    assert "at most 16" in error and "fewer devices" in error and "ACS" in error
    assert "error: 24 PCIe switch ports needed" in "\n".join(plan_lines(plan))


def test_sixteen_root_ports_are_allowed_seventeen_are_not(tmp_path: Path) -> None:
    sixteen = topology_of(tmp_path / "16", gpu_server(ServerShape(gpus=16)))
    seventeen = topology_of(tmp_path / "17", gpu_server(ServerShape(gpus=17)))
    assert plan_pcie(sixteen, ["gpu"], "flatten")["errors"] == []
    plan = plan_pcie(seventeen, ["gpu"], "flatten")
    assert plan["ports"] == 17 and plan["errors"][0].startswith("17 PCIe root ports needed")


def test_nvswitches_count_and_bridges_stay(tmp_path: Path) -> None:
    """Kata leaves class 0600/0604 bridges of a group behind but passes NVSwitches (class 0680)."""
    topology = topology_of(tmp_path, gpu_server(ServerShape(gpus=2, nvswitches=2)))
    plan = plan_pcie(topology, ["nvswitch"], "flatten")
    assert plan["errors"] == [] and plan["ports"] == 2
    assert all(dev["role"] == "nvswitch" for dev in plan["devices"])


# ---------------------------------------------------------------------------
# IOMMU groups: members come along, bridges stay, bad groups are refused


def test_lab_display_brings_its_audio_function(lab: Dict[str, Any]) -> None:
    plan = plan_pcie(lab, ["0000:01:00.0"], "flatten")
    assert plan["errors"] == []
    assert [(dev["address"], dev["requested"], dev["member_of"]) for dev in plan["devices"]] == [
        ("0000:01:00.0", True, None), ("0000:01:00.1", False, "0000:01:00.0")]
    assert plan["pcie_root_port"] == 2
    assert any("0000:01:00.1 comes along with 0000:01:00.0" in text for text in plan["warnings"])
    assert any("not on vfio-pci yet" in text for text in plan["warnings"])


def test_lab_switch_endpoint_leaves_the_downstream_port_to_the_host(lab: Dict[str, Any]) -> None:
    group = next(group for group in lab["iommu_groups"] if "0000:04:00.0" in group["devices"])
    assert "0000:03:00.0" in group["devices"], "the lab's switch has no ACS: port and endpoint share a group"
    plan = plan_pcie(lab, ["04:00.0"], "replicate")
    assert plan["errors"] == [] and plan["pcie_switch_port"] == 1
    assert [dev["address"] for dev in plan["devices"]] == ["0000:04:00.0"]
    assert plan["left_to_host"] == ["0000:03:00.0"]


def test_a_group_the_host_needs_is_refused(lab: Dict[str, Any]) -> None:
    plan = plan_pcie(lab, ["0000:00:1f.2"], "flatten")
    assert len(plan["errors"]) == 1
    assert "0000:00:1f.2 cannot be passed through: IOMMU group 1 is not viable" in plan["errors"][0]
    assert "ISA/LPC bridge" in plan["errors"][0]


def test_gpus_sharing_a_group_come_together(tmp_path: Path) -> None:
    """As on the HGX H100 capture, where two GPU pairs share IOMMU groups (gpu-servers/iommu_groups_hgx-*)."""
    functions = gpu_server(ServerShape(gpus=2, sockets=1))
    gpus = [f for f in functions if f.config[:4] == bytes.fromhex("de103023")]
    gpus[1].iommu_group = gpus[0].iommu_group
    topology = topology_of(tmp_path, functions)
    plan = plan_pcie(topology, [gpus[0].address], "flatten")
    assert plan["errors"] == [] and plan["ports"] == 2
    assert plan["devices"][1]["address"] == gpus[1].address and plan["devices"][1]["member_of"] == gpus[0].address


def test_conventional_pci_function_needs_no_port(tmp_path: Path) -> None:
    functions = lab_like_host()
    legacy = FakeFunction("0000:05:00.0", ConfigBuilder(0x1234, 0x0001, 0x020000).bytes(), iommu_group=9,
                          parent="0000:00:10.2")
    topology = topology_of(tmp_path, functions + [legacy])
    plan = plan_pcie(topology, ["0000:05:00.0"], "flatten")
    assert plan["devices"][0]["needs_port"] is False and plan["ports"] == 0
    assert any("no port is needed" in text for text in plan["warnings"])


def test_iommu_off_is_an_error_that_names_the_fix(tmp_path: Path) -> None:
    functions = lab_like_host()
    for function in functions:
        function.iommu_group = None
    plan = plan_pcie(topology_of(tmp_path, functions), ["0000:01:00.0"], "flatten")
    assert plan["errors"] == ["0000:01:00.0 has no IOMMU group: the IOMMU is off, so nothing can be passed through; "
                              "enable it (role kernel_args: intel_iommu=on for VT-d, amd_iommu=off gone for AMD-Vi) "
                              "and reboot"]


# ---------------------------------------------------------------------------
# Bad input


def test_unknown_devices_and_selectors_are_errors(lab: Dict[str, Any]) -> None:
    plan = plan_pcie(lab, ["0000:99:00.0", "gpus"], "flatten")
    assert plan["errors"][0] == "device 0000:99:00.0 is not on this host (no such PCI function in the topology)"
    assert plan["errors"][1].startswith("device selector 'gpus' is neither a PCI address nor one of gpu")
    assert plan["ports"] == 0


def test_role_without_match_and_gpu_nics_without_gpus(lab: Dict[str, Any]) -> None:
    plan = plan_pcie(lab, ["gpu", "gpu_nics"], "replicate")
    assert "selector 'gpu' matches no physical function on this host" in plan["warnings"]
    assert plan["errors"][0].startswith("selector 'gpu_nics' needs GPUs in the selection")


@pytest.mark.parametrize(("topology", "mode", "message"), [
    ({"devices": [], "iommu_groups": []}, "mirror", "PCIe mode 'mirror' is not one of flatten, replicate"),
    ({"devices": []}, "flatten", "the topology must be the result of confidential_gpu.host.pci_topology_info"),
    ([], "replicate", "the topology must be the result"),
])
def test_not_a_topology_or_not_a_mode(topology: Any, mode: str, message: str) -> None:
    with pytest.raises(PlanError, match=re.escape(message)):
        plan_pcie(topology, ["gpu"], mode)


def test_plan_lines_name_every_device_and_setting(lab: Dict[str, Any]) -> None:
    lines = plan_lines(plan_pcie(lab, ["0000:01:00.0", "0000:04:00.0"], "replicate"))
    assert lines[0] == "PCIe replicate: cold_plug_vfio=switch-port pcie_root_port=0 pcie_switch_port=3 (3 of 16 ports)"
    assert any(line.startswith("  0000:01:00.1 other") and "group member of 0000:01:00.0" in line for line in lines)
    assert "  bridge 0000:03:00.0 stays with the host" in lines


# ---------------------------------------------------------------------------
# VFIO mode: what Kata counts (kata-containers src/runtime/virtcontainers/qemu.go, createPCIeTopology)

KATA_CREATE_PCIE_TOPOLOGY = """
kata-containers 4.1.0 (the same at 3.26.0), src/runtime/virtcontainers/qemu.go, createPCIeTopology:

    if strings.HasPrefix(dev.HostPath, pkgDevice.IommufdDevPath) {
        vfioDevices, err = drivers.GetDeviceFromVFIODev(dev)
        ...
    } else {
        if q.config.ConfidentialGuest {
            return fmt.Errorf("ConfidentialGuest needs IOMMUFD - cannot use %s", dev.HostPath)
        }
        vfioDevices, err = drivers.GetAllVFIODevicesFromIOMMUGroup(dev)
        ...
    }
    for _, vfioDevice := range vfioDevices {
        if drivers.IsPCIeDevice(vfioDevice.BDF) {
            numOfPluggablePorts = numOfPluggablePorts + 1
        }
    }

src/runtime/pkg/device/drivers/utils.go:
    // GetDeviceFromVFIODev return the host device associated with the VFIO device
    // There is only one device per VFIO device in the case of IOMMUFD
    ...
    vfioDevs := []*config.VFIODev{&vfio}
"""


def hgx_group_29(tmp_path: Path) -> Dict[str, Any]:
    """Two H100s in one IOMMU group, as IOMMU group 29 (0000:11:00.0, 0000:12:00.0) of the captured HGX H100
    (../shared/fixtures/gpu-servers/iommu_groups_hgx-h100x8_nvidia-only_GRuuuuu.txt), plus eight GPUs more in
    pairs that share a group: nine pairs, 18 GPUs."""
    functions = gpu_server(ServerShape(gpus=18, sockets=2))
    gpus = [f for f in functions if f.config[:4] == bytes.fromhex("de103023")]
    for first, second in zip(gpus[::2], gpus[1::2]):
        second.iommu_group = first.iommu_group
    return topology_of(tmp_path, functions)


def test_iommufd_counts_only_the_devices_handed_to_the_pod(tmp_path: Path) -> None:
    """Kata's rule (KATA_CREATE_PCIE_TOPOLOGY above): with a group path every PCIe member of the group takes a
    port; with an iommufd cdev (/dev/vfio/devices/vfioN) only the device itself."""
    topology = hgx_group_29(tmp_path)
    gpus = sorted(dev["address"] for dev in topology["devices"] if dev["role"] == "gpu")
    one = gpus[0]
    legacy = plan_pcie(topology, [one], "flatten", vfio_mode="group")
    cdev = plan_pcie(topology, [one], "flatten", vfio_mode="iommufd")
    assert (legacy["ports"], cdev["ports"]) == (2, 1)
    assert [dev["address"] for dev in cdev["devices"]] == [one] and cdev["vfio_mode"] == "iommufd"
    partner = legacy["devices"][1]["address"]
    assert cdev["kept_on_vfio"] == [partner]
    assert any(partner in text and "stays on the host, bound to vfio-pci" in text for text in cdev["warnings"])


def test_iommufd_pod_that_group_mode_refuses(tmp_path: Path) -> None:
    """Nine GPUs, one of each shared group: 18 ports by group (over Kata's 16, refused), 9 by iommufd (Kata starts
    it: maxPCIeRootPort is compared with the devices counted, qemu.go)."""
    topology = hgx_group_29(tmp_path)
    gpus = sorted(dev["address"] for dev in topology["devices"] if dev["role"] == "gpu")
    firsts = [dev["address"] for dev in topology["devices"] if dev["role"] == "gpu"
              and [other["address"] for other in topology["devices"]
                   if other.get("iommu_group") == dev["iommu_group"]][0] == dev["address"]]
    assert len(gpus) == 18 and len(firsts) == 9
    legacy = plan_pcie(topology, firsts, "flatten")
    assert legacy["ports"] == 18 and "18 PCIe root ports needed" in legacy["errors"][0]
    assert "with iommufd (VFIO cdev) Kata counts only the devices themselves" in legacy["errors"][0]
    cdev = plan_pcie(topology, firsts, "flatten", vfio_mode="iommufd")
    assert cdev["errors"] == [] and cdev["ports"] == cdev["pcie_root_port"] == 9
    assert "(9 of 16 ports, iommufd: the devices themselves)" in plan_lines(cdev)[0]


def test_unknown_vfio_mode_is_refused(lab: Dict[str, Any]) -> None:
    with pytest.raises(PlanError, match="VFIO mode 'cdev' is not one of group, iommufd"):
        plan_pcie(lab, ["gpu"], "flatten", vfio_mode="cdev")


# ---------------------------------------------------------------------------
# Host-critical devices (pci_topology_info's host_critical)


def test_host_critical_devices_are_refused_unless_named(tmp_path: Path, run_module) -> None:
    """The lab VM tree of tests/lib/host_critical_tree.py through pci_topology_info: the default-route NIC
    00:04.0 is host-critical; selecting it by role is an error, naming it a warning."""
    from host_critical_tree import lab_vm

    root = lab_vm(tmp_path / "lab")
    topology = run_module("pci_topology_info", {"root": str(root)})
    by_role = plan_pcie(topology, ["nic"], "flatten")
    assert any(text.startswith("0000:00:04.0 is host-critical: it carries the default route (interface enp0s4)")
               and "allow_host_critical" in text for text in by_role["errors"])
    named = plan_pcie(topology, ["00:04.0"], "flatten")
    assert named["errors"] == []
    assert any("0000:00:04.0 is host-critical" in text and "named by address" in text for text in named["warnings"])
