"""cc_host_info run as a process, the way a host runs it: on this machine's root and on a fake root."""

from __future__ import annotations

import os
from pathlib import Path

MODULE = "cc_host_info"
RESULT_KEYS = {"cpu", "kernel", "iommu", "sev", "tdx", "kvm", "numa", "hugepages", "gpu_drivers", "verdicts"}


def make_tree(root: Path, files: dict[str, str], links: dict[str, str]) -> Path:
    """Files and symlinks below ``root``, keyed by host path."""
    for host_path, content in files.items():
        path = root / host_path.lstrip("/")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content)
    for host_path, target in links.items():
        path = root / host_path.lstrip("/")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.symlink_to(target)
    return root


def lab_vm(root: Path) -> Path:
    """The lab VM: QEMU q35 with intel-iommu, `intel_iommu=on iommu=pt`, vfio-pci loaded, two NUMA nodes."""
    files = {
        "/proc/cpuinfo": "processor\t: 0\nvendor_id\t: GenuineIntel\ncpu family\t: 6\nmodel\t\t: 106\n"
                         "model name\t: Intel Xeon Processor (Icelake)\nflags\t\t: fpu vmx hypervisor\n\n",
        "/proc/cmdline": "BOOT_IMAGE=/boot/vmlinuz-6.1.0-28-amd64 root=LABEL=root rw "
                         "console=ttyS0,115200n8 intel_iommu=on iommu=pt\n",
        "/proc/sys/kernel/osrelease": "6.1.0-28-amd64\n",
        "/proc/interrupts": "  0:   44   IR-IO-APIC    2-edge      timer\n",
        "/sys/devices/virtual/iommu/dmar0/intel-iommu/version": "1:0\n",
        "/sys/module/vfio_pci/parameters/ids": "\n",
        "/sys/module/kvm_intel/parameters/nested": "Y\n",
        "/sys/devices/system/node/online": "0-1\n",
        "/sys/devices/system/node/node0/meminfo": "Node 0 MemTotal:       4012345 kB\n",
        "/sys/devices/system/node/node1/meminfo": "Node 1 MemTotal: garbage kB\n",
        "/sys/kernel/mm/hugepages/hugepages-2048kB/nr_hugepages": "512\n",
        "/sys/kernel/mm/hugepages/hugepages-2048kB/free_hugepages": "512\n",
        "/sys/devices/system/node/node0/hugepages/hugepages-2048kB/nr_hugepages": "256\n",
        "/sys/devices/system/node/node1/hugepages/hugepages-2048kB/nr_hugepages": "256\n",
        "/dev/kvm": "",
    }
    files.update({f"/sys/kernel/iommu_groups/{group}/type": "identity\n" for group in range(13)})
    return make_tree(root, files, {"/sys/class/iommu/dmar0": "../../devices/virtual/iommu/dmar0"})


def proc_cmdline_keys(raw: str) -> list[str]:
    """Parameter names of a command line without quotes, independently of the module's parser."""
    words = raw.split()
    if "--" in words:
        words = words[:words.index("--")]
    return [word.partition("=")[0] for word in words]


def test_real_root(run_module) -> None:
    result = run_module(MODULE, {"root": "/"})

    assert result["rc"] == 0, result
    assert result["changed"] is False
    assert "failed" not in result
    assert set(result) >= RESULT_KEYS
    assert result["kernel"]["release"] == os.uname().release
    with open("/proc/cmdline") as handle:
        raw = handle.read().strip()
    assert result["kernel"]["cmdline"] == raw
    if '"' not in raw:
        assert [arg["key"] for arg in result["kernel"]["cmdline_args"]] == proc_cmdline_keys(raw)
    assert result["kvm"]["dev_kvm"] is os.path.exists("/dev/kvm")
    assert result["iommu"]["iommufd"] is os.path.exists("/dev/iommu")
    assert result["sev"]["kvm_amd_loaded"] is os.path.isdir("/sys/module/kvm_amd")
    assert result["gpu_drivers"]["nvidia"] is os.path.isdir("/sys/module/nvidia")
    groups = os.listdir("/sys/kernel/iommu_groups") if os.path.isdir("/sys/kernel/iommu_groups") else []
    assert result["iommu"]["group_count"] == len(groups)
    tables = os.listdir("/sys/firmware/acpi/tables") if os.path.isdir("/sys/firmware/acpi/tables") else []
    assert result["iommu"]["acpi_tables_listed"] is bool(tables)
    assert result["iommu"]["acpi_table"] == ("DMAR" if "DMAR" in tables else "IVRS" if "IVRS" in tables else None)
    for name in ("vfio", "snp", "tdx"):
        verdict = result["verdicts"]
        assert verdict[name + "_ready"] is (verdict[name + "_ready_reasons"] == [])


def test_real_root_in_check_mode_gives_the_same_result(run_module) -> None:
    normal = run_module(MODULE, {})
    checked = run_module(MODULE, {"_ansible_check_mode": True})

    assert checked["rc"] == 0
    assert checked["changed"] is False
    for key in RESULT_KEYS - {"hugepages", "numa"}:  # free pages and memory may move between two runs
        assert checked[key] == normal[key], key


def test_fake_lab_vm_root(run_module, tmp_path: Path) -> None:
    root = lab_vm(tmp_path / "host")
    result = run_module(MODULE, {"root": str(root)})

    assert result["rc"] == 0, result
    assert result["changed"] is False
    assert result["iommu"]["type"] == "intel_dmar"
    assert result["iommu"]["units"] == ["dmar0"]
    assert result["iommu"]["group_count"] == 13
    assert result["iommu"]["default_domain_type"] == "identity"
    assert result["iommu"]["cmdline_passthrough"] is True
    assert result["iommu"]["interrupt_remapping"] is True
    assert result["verdicts"]["vfio_ready"] is True
    assert result["verdicts"]["vfio_ready_reasons"] == []
    assert result["verdicts"]["tdx_ready"] is False
    assert result["verdicts"]["tdx_ready_reasons"] == [
        ("Intel Xeon Processor (Icelake) (family 0x6, model 0x6a) is of an Intel generation without TDX, which "
         "starts with 4th Gen Xeon Scalable (Sapphire Rapids, some SKUs): this host cannot run TDX guests, whatever "
         "the firmware settings")]
    assert result["cpu"]["cc_support"] == {"snp": False, "tdx": False}
    assert result["cpu"]["flags"]["hypervisor"] is True
    assert result["kernel"]["cmdline_args"][-2:] == [{"key": "intel_iommu", "value": "on"},
                                                     {"key": "iommu", "value": "pt"}]
    assert result["hugepages"]["pools"][0]["size"] == "2M"
    assert [node["total"] for node in result["hugepages"]["pools"][0]["nodes"]] == [256, 256]
    assert [node["mem_total_kb"] for node in result["numa"]["nodes"]] == [4012345, None]
    assert result["warnings"] == [
        "/sys/devices/system/node/node1/meminfo MemTotal holds 'garbage', not an integer; ignored"]


def test_fake_root_in_check_mode_gives_the_same_result(run_module, tmp_path: Path) -> None:
    root = str(lab_vm(tmp_path / "host"))
    normal = run_module(MODULE, {"root": root})
    checked = run_module(MODULE, {"root": root, "_ansible_check_mode": True})

    assert checked["changed"] is False
    assert {key: checked[key] for key in RESULT_KEYS} == {key: normal[key] for key in RESULT_KEYS}
    assert checked["verdicts"]["vfio_ready"] is True


def test_missing_root_fails_clearly(run_module, tmp_path: Path) -> None:
    missing = tmp_path / "no-such-capture"
    result = run_module(MODULE, {"root": str(missing)})

    assert result["rc"] == 1
    assert result["failed"] is True
    assert str(missing) in result["msg"]
    assert "does not exist" in result["msg"]
    assert "pass the host's root ('/')" in result["msg"]
    assert "cpu" not in result


def test_root_that_is_a_file_fails_clearly(run_module, tmp_path: Path) -> None:
    not_a_dir = tmp_path / "capture.tar"
    not_a_dir.write_text("")
    result = run_module(MODULE, {"root": str(not_a_dir)})

    assert result["rc"] == 1
    assert result["failed"] is True
    assert "not a directory" in result["msg"]
