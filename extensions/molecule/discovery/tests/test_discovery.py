"""Check what pci_topology_info and cc_host_info report on the lab VM against
the VM's own lspci and sysfs.  Lab layout: tests/lab/labctl, docs/lab.md."""

from __future__ import annotations

from lab_oracle import ACS_FLAGS, Devices, Lspci, find
from testinfra.host import Host

BOCHS_DISPLAY = ("1234", "1111")  # the "GPU" (function 0 of its slot)
ICH9_HDA = ("8086", "293e")  # its audio function (function 1)
NVME = ("1b36", "0010")  # the SR-IOV physical function
EDU = ("1234", "11e8")  # endpoints behind the PCIe switch
VIRTIO_GPU = ("1af4", "1050")
E1000E = ("8086", "10d3")  # the NIC behind the PCIe expander bridge in NUMA node 1
EXPANDER_ROOT_PORT = "0000:80:00.0"


def test_same_functions_as_lspci(devices: Devices, lspci: Lspci) -> None:
    assert sorted(devices) == sorted(lspci)


def test_identity_driver_group_and_path_match_lspci(devices: Devices, lspci: Lspci) -> None:
    for address, want in lspci.items():
        got = devices[address]
        assert (got["vendor_id"], got["device_id"], got["class_id"]) == (
            want.vendor_id,
            want.device_id,
            want.class_id,
        ), address
        assert got["driver"] == want.driver, address
        assert got["iommu_group"] == want.iommu_group, address
        assert got["path"] == want.path, address
        assert got["parent"] == (want.path[-2] if len(want.path) > 1 else None), address


def test_pcie_port_types_match_lspci(devices: Devices, lspci: Lspci) -> None:
    express = {a: f for a, f in lspci.items() if f.port_type}
    assert len(express) >= 10
    for address, want in express.items():
        assert devices[address]["pcie"]["port_type"] == want.port_type, address


def test_iommu_groups_match_sysfs(pci: dict, sysfs_groups: dict[int, list[str]]) -> None:
    got = {g["id"]: sorted(g["devices"]) for g in pci["iommu_groups"]}
    assert got == sysfs_groups


def test_gpu_and_its_audio_function_share_one_group(devices: Devices, lspci: Lspci, pci: dict) -> None:
    gpu = find(lspci, *BOCHS_DISPLAY)
    audio = find(lspci, *ICH9_HDA)
    assert gpu.address.endswith(".0") and audio.address == gpu.address[:-1] + "1"
    group_id = devices[gpu.address]["iommu_group"]
    assert devices[audio.address]["iommu_group"] == group_id == gpu.iommu_group == audio.iommu_group
    group = next(g for g in pci["iommu_groups"] if g["id"] == group_id)
    assert sorted(group["devices"]) == sorted([gpu.address, audio.address])
    # both endpoints can go to one guest once on vfio-pci; today they are on
    # bochs-drm and snd_hda_intel
    assert group["viable"] is True, group["reasons"]
    assert group["bound_to_vfio"] is False


def test_nvme_pf_offers_four_vfs(devices: Devices, lspci: Lspci, host: Host) -> None:
    want = find(lspci, *NVME)
    sriov = devices[want.address]["sriov"]
    assert sriov is not None
    assert sriov["total_vfs"] == 4
    for key, value in want.sriov.items():
        assert sriov[key] == value, key
    sysfs = f"/sys/bus/pci/devices/{want.address}"
    assert int(host.file(f"{sysfs}/sriov_totalvfs").content_string) == 4
    assert int(host.file(f"{sysfs}/sriov_numvfs").content_string) == sriov["num_vfs"]


def test_root_ports_show_acs(devices: Devices, lspci: Lspci) -> None:
    root_ports = [f for f in lspci.values() if f.port_type == "root_port"]
    assert len(root_ports) == 5
    for want in root_ports:
        acs = devices[want.address]["acs"]
        assert acs is not None, want.address
        assert want.acs_cap and want.acs_ctl
        assert {k: acs["capabilities"][k] for k in ACS_FLAGS.values()} == want.acs_cap, want.address
        assert {k: acs["enabled"][k] for k in ACS_FLAGS.values()} == want.acs_ctl, want.address


def test_switch_endpoints_sit_behind_downstream_ports(devices: Devices, lspci: Lspci) -> None:
    for ids in (EDU, VIRTIO_GPU):
        want = find(lspci, *ids)
        path = devices[want.address]["path"]
        assert path == want.path
        port_types = [devices[a]["pcie"]["port_type"] for a in path[:-1]]
        assert port_types == ["root_port", "upstream_port", "downstream_port"], want.address
        assert devices[want.address]["parent"] == path[-2]


def test_device_numa_nodes_match_sysfs(devices: Devices, host: Host) -> None:
    for address, device in devices.items():
        node = int(host.file(f"/sys/bus/pci/devices/{address}/numa_node").content_string)
        assert device["numa_node"] == (node if node >= 0 else None), address


def test_numa_nodes_match_lspci(devices: Devices, lspci: Lspci) -> None:
    for address, want in lspci.items():
        assert devices[address]["numa_node"] == want.numa_node, address


def test_expander_bridge_functions_are_in_node_1(devices: Devices, lspci: Lspci) -> None:
    nic = find(lspci, *E1000E)
    assert nic.path == [EXPANDER_ROOT_PORT, nic.address]
    assert nic.numa_node == 1
    got = devices[nic.address]
    assert (got["role"], got["numa_node"], got["path"]) == ("nic", 1, nic.path)
    assert devices[EXPANDER_ROOT_PORT]["numa_node"] == 1
    assert devices[EXPANDER_ROOT_PORT]["pcie"]["port_type"] == "root_port"
    # the main root complex has no _PXM: its functions have no node
    main = [d for d in devices.values() if d["path"][0].startswith("0000:00:")]
    assert main and all(d["numa_node"] is None for d in main)


def test_both_numa_nodes_seen(cc: dict, host: Host) -> None:
    nodes = {n["node"]: n for n in cc["numa"]["nodes"]}
    assert host.file("/sys/devices/system/node/online").content_string.strip() == "0-1"
    assert sorted(nodes) == [0, 1]
    for node, got in nodes.items():
        sysfs = f"/sys/devices/system/node/node{node}"
        assert got["cpulist"] == host.file(f"{sysfs}/cpulist").content_string.strip()
        meminfo = host.file(f"{sysfs}/meminfo").content_string
        mem_total = int(meminfo.split("MemTotal:")[1].split()[0])
        assert got["mem_total_kb"] == mem_total
        assert 3 << 20 < mem_total <= 4 << 20  # each node has 4 GiB


def test_iommu_is_intel_dmar_and_vfio_ready(cc: dict, host: Host, sysfs_groups: dict[int, list[str]]) -> None:
    iommu = cc["iommu"]
    assert iommu["enabled"] is True
    assert iommu["type"] == "intel_dmar"
    assert iommu["units"] == sorted(host.check_output("ls /sys/class/iommu").split())
    assert iommu["group_count"] == len(sysfs_groups)
    assert iommu["interrupt_remapping"] is True
    assert "IR-PCI-MSI" in host.file("/proc/interrupts").content_string
    assert iommu["cmdline_passthrough"] is True
    assert iommu["vfio_pci_available"] is True
    # QEMU's intel-iommu device comes with the DMAR table that describes it (and the TCG CPU reports AMD)
    tables = host.check_output("ls /sys/firmware/acpi/tables").split()
    assert "DMAR" in tables and "IVRS" not in tables, tables
    assert (iommu["acpi_table"], iommu["acpi_tables_listed"]) == ("DMAR", True)
    assert cc["verdicts"]["vfio_ready"] is True, cc["verdicts"]["vfio_ready_reasons"]
    assert cc["verdicts"]["vfio_ready_reasons"] == []


def test_kernel_and_cpu_match_the_guest(cc: dict, host: Host) -> None:
    assert cc["kernel"]["cmdline"] == host.file("/proc/cmdline").content_string.strip()
    assert cc["kernel"]["release"] == host.check_output("uname -r")
    cpuinfo = host.file("/proc/cpuinfo").content_string
    vendor_id = cpuinfo.split("vendor_id")[1].split(":")[1].split()[0]
    assert cc["cpu"]["vendor_id"] == vendor_id
    assert cc["cpu"]["flags"]["hypervisor"] is True
    # a TCG guest has neither SEV-SNP nor TDX host support
    assert cc["verdicts"]["snp_ready"] is False
    assert cc["verdicts"]["tdx_ready"] is False


def test_kernel_build_facts_match_the_guests_config_and_modinfo(cc: dict, host: Host) -> None:
    """kernel.config against the guest's own /boot/config-<release>; kernel.module_files against kmod's modinfo,
    which says "(builtin)" for a built-in module and the .ko path for a module file."""
    release = host.check_output("uname -r")
    config_lines = host.file("/boot/config-%s" % release).content_string.splitlines()
    set_options = dict(line.split("=", 1) for line in config_lines if line.startswith("CONFIG_") and "=" in line)
    assert cc["kernel"]["config"] == {name: set_options.get(name) for name in cc["kernel"]["config"]}
    assert any(cc["kernel"]["config"].values()), "Debian 12's 6.1 kernel sets CONFIG_KVM_AMD_SEV (IOMMUFD came in 6.2)"
    for module, source in cc["kernel"]["module_files"].items():
        modinfo = host.run("modinfo -F filename %s" % module)
        filename = modinfo.stdout.strip() if modinfo.rc == 0 else ""
        expected = "builtin" if filename == "(builtin)" else "module" if ".ko" in filename else None
        assert (module, source) == (module, expected), modinfo.stdout + modinfo.stderr
