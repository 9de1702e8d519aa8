"""cc_host: facts and verdicts read from fake hosts built as real directory trees."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
from conftest import REPO
from ansible_collections.confidential_gpu.host.plugins.module_utils.cc_host import (
    evaluate,
    gather_facts,
    iommu_vendor,
    parse_id_list,
    size_label,
)
from ansible_collections.confidential_gpu.host.plugins.module_utils.cmdline_tokens import parse_cmdline
from ansible_collections.confidential_gpu.host.plugins.module_utils.sysfs import HostRoot

AMD_FLAGS = "fpu vme de pse tsc msr pae mce cx8 apic svm sme sev sev_es sev_snp"
INTEL_FLAGS = "fpu vme de pse tsc msr pae mce cx8 apic vmx tme tdx_host_platform"


class FakeHost:
    """A host's files below ``root``: files, directories and symlinks, as the kernel lays them out."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def _real(self, host_path: str) -> Path:
        return self.root / host_path.lstrip("/")

    def write(self, host_path: str, content: str | bytes) -> FakeHost:
        path = self._real(host_path)
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content)
        return self

    def mkdir(self, host_path: str) -> FakeHost:
        self._real(host_path).mkdir(parents=True, exist_ok=True)
        return self

    def link(self, host_path: str, target: str) -> FakeHost:
        path = self._real(host_path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.symlink_to(target)
        return self

    def remove(self, host_path: str) -> FakeHost:
        path = self._real(host_path)
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()
        return self

    # --- pieces of a host -------------------------------------------------

    def cpu(self, vendor_id: str, family: int, model: int, name: str, flags: str, count: int = 2) -> FakeHost:
        block = ("processor\t: {n}\nvendor_id\t: {vendor}\ncpu family\t: {family}\nmodel\t\t: {model}\n"
                 "model name\t: {name}\nflags\t\t: {flags}\n\n")
        text = "".join(block.format(n=n, vendor=vendor_id, family=family, model=model, name=name, flags=flags)
                       for n in range(count))
        return self.write("/proc/cpuinfo", text)

    def kernel(self, release: str, cmdline: str) -> FakeHost:
        self.write("/proc/sys/kernel/osrelease", release + "\n")
        return self.write("/proc/cmdline", cmdline + "\n")

    def iommu(self, units: list[str], group_types: list[str]) -> FakeHost:
        for unit in units:
            self.mkdir(f"/sys/devices/virtual/iommu/{unit}")
            self.link(f"/sys/class/iommu/{unit}", f"../../devices/virtual/iommu/{unit}")
        for number, domain_type in enumerate(group_types):
            self.write(f"/sys/kernel/iommu_groups/{number}/type", domain_type + "\n")
            self.mkdir(f"/sys/kernel/iommu_groups/{number}/devices")
        return self

    def module(self, name: str, **params: str) -> FakeHost:
        self.mkdir(f"/sys/module/{name}")
        for param, value in params.items():
            self.write(f"/sys/module/{name}/parameters/{param}", value + "\n")
        return self

    def numa(self, mem_total_kb: dict[int, int], online: str | None = None) -> FakeHost:
        nodes = sorted(mem_total_kb)
        self.write("/sys/devices/system/node/online", (online or f"{nodes[0]}-{nodes[-1]}") + "\n")
        for node, total in mem_total_kb.items():
            self.write(f"/sys/devices/system/node/node{node}/cpulist", f"{node * 8}-{node * 8 + 7}\n")
            self.write(f"/sys/devices/system/node/node{node}/meminfo",
                       f"Node {node} MemTotal:       {total} kB\nNode {node} MemFree:        {total // 2} kB\n")
        return self

    def hugepages(self, size_kb: int, total: int, free: int, per_node: dict[int, tuple[int, int]]) -> FakeHost:
        base = f"/sys/kernel/mm/hugepages/hugepages-{size_kb}kB"
        for name, value in (("nr_hugepages", total), ("free_hugepages", free),
                            ("resv_hugepages", 0), ("surplus_hugepages", 0)):
            self.write(f"{base}/{name}", f"{value}\n")
        for node, (node_total, node_free) in per_node.items():
            node_base = f"/sys/devices/system/node/node{node}/hugepages/hugepages-{size_kb}kB"
            self.write(f"{node_base}/nr_hugepages", f"{node_total}\n")
            self.write(f"{node_base}/free_hugepages", f"{node_free}\n")
            self.write(f"{node_base}/surplus_hugepages", "0\n")
        return self

    def acpi_tables(self, *names: str) -> FakeHost:
        for name in ("APIC", "DSDT", "FACP", "MCFG") + names:
            self.write(f"/sys/firmware/acpi/tables/{name}", "")
        return self

    def facts(self) -> tuple[dict, list[str]]:
        host = HostRoot(str(self.root))
        return gather_facts(host), host.warnings


def amd_snp_host(root: Path) -> FakeHost:
    """2-socket EPYC Genoa with SEV-SNP on: AMD-Vi, kvm_amd sev/sev_es/sev_snp, ccp and /dev/sev, vfio-pci loaded."""
    host = FakeHost(root)
    host.cpu("AuthenticAMD", 25, 17, "AMD EPYC 9454 48-Core Processor", AMD_FLAGS)
    host.kernel("6.11.0-29-generic", "BOOT_IMAGE=/vmlinuz-6.11.0-29-generic root=UUID=42 ro")
    host.iommu(["ivhd0", "ivhd1"], ["DMA-FQ"] * 5)
    host.module("kvm")
    host.module("ccp")
    host.module("kvm_amd", sev="Y", sev_es="Y", sev_snp="1")
    host.module("vfio_pci", ids="")
    host.write("/dev/sev", "").write("/dev/kvm", "").write("/dev/iommu", "").mkdir("/dev/vfio/devices")
    host.write("/proc/interrupts", "  0:  44  IR-IO-APIC    2-edge      timer\n")
    host.numa({0: 395958272, 1: 396312576})
    host.hugepages(2048, 0, 0, {0: (0, 0), 1: (0, 0)})
    host.hugepages(1048576, 16, 16, {0: (8, 8), 1: (8, 8)})
    host.write("/proc/meminfo", "MemTotal:       792270848 kB\nHugepagesize:       2048 kB\n")
    return host


def intel_tdx_host(root: Path) -> FakeHost:
    """Xeon Sapphire Rapids with TDX on: DMAR, kvm_intel tdx=Y, vfio-pci installed as a module, not loaded."""
    host = FakeHost(root)
    release = "6.16.3-tdx"
    host.cpu("GenuineIntel", 6, 143, "Intel(R) Xeon(R) Platinum 8480+", INTEL_FLAGS)
    host.kernel(release, "BOOT_IMAGE=/vmlinuz ro intel_iommu=on iommu=pt kvm_intel.tdx=1 nohibernate")
    host.iommu(["dmar0", "dmar1"], ["identity", "identity", "DMA"])
    host.module("kvm")
    host.module("kvm_intel", tdx="Y", nested="N")
    host.write("/dev/kvm", "")
    host.write(f"/lib/modules/{release}/modules.builtin", "kernel/drivers/vfio/vfio.ko\n")
    host.write(f"/lib/modules/{release}/modules.dep",
               "kernel/drivers/vfio/vfio.ko.zst:\n"
               "kernel/drivers/vfio/pci/vfio-pci.ko.zst: kernel/drivers/vfio/pci/vfio-pci-core.ko.zst\n")
    host.numa({0: 263848384})
    return host


# --------------------------------------------------------------------------
# Whole hosts
# --------------------------------------------------------------------------

def test_amd_snp_ready_host(tmp_path: Path) -> None:
    facts, warnings = amd_snp_host(tmp_path).facts()

    assert warnings == []
    assert facts["cpu"] == {
        "vendor": "amd", "vendor_id": "AuthenticAMD", "model_name": "AMD EPYC 9454 48-Core Processor",
        "family": 25, "model": 17,
        "flags": {"hypervisor": False, "vmx": False, "svm": True, "sme": True, "sev": True, "sev_es": True,
                  "sev_snp": True, "tdx_host_platform": False, "tdx_guest": False},
        "cc_support": {"snp": True, "tdx": False},
    }
    assert facts["sev"] == {"kvm_amd_loaded": True, "kvm_amd_sev": True, "kvm_amd_sev_es": True,
                            "kvm_amd_sev_snp": True, "dev_sev": True, "ccp_loaded": True, "iommu_conflicts": []}
    iommu = facts["iommu"]
    assert (iommu["enabled"], iommu["type"], iommu["units"], iommu["group_count"]) == (
        True, "amd_vi", ["ivhd0", "ivhd1"], 5)
    assert (iommu["default_domain_type"], iommu["cmdline_passthrough"], iommu["interrupt_remapping"]) == (
        "DMA-FQ", None, True)
    assert (iommu["iommufd"], iommu["vfio_cdev"], iommu["vfio_pci_available"], iommu["vfio_pci_source"]) == (
        True, True, True, "loaded")
    assert facts["gpu_drivers"] == {"nvidia": False, "nouveau": False, "vfio_pci": True}
    assert facts["verdicts"] == {
        "vfio_ready": True, "vfio_ready_reasons": [],
        "snp_ready": True, "snp_ready_reasons": [],
        "tdx_ready": False,
        "tdx_ready_reasons": [("CPU is not Intel (vendor_id AuthenticAMD): TDX needs a TDX-capable Xeon "
                              "(4th gen or newer)")],
    }


def test_intel_tdx_ready_host(tmp_path: Path) -> None:
    facts, warnings = intel_tdx_host(tmp_path).facts()

    assert warnings == []
    assert facts["cpu"]["vendor"] == "intel"
    assert facts["cpu"]["flags"]["tdx_host_platform"] is True
    assert facts["tdx"] == {"kvm_intel_loaded": True, "kvm_intel_tdx": True}
    iommu = facts["iommu"]
    assert (iommu["type"], iommu["group_types"], iommu["default_domain_type"]) == (
        "intel_dmar", {"DMA": 1, "identity": 2}, "identity")
    assert (iommu["vfio_pci_available"], iommu["vfio_pci_source"]) == (True, "module")
    assert (iommu["iommufd"], iommu["vfio_cdev"], iommu["interrupt_remapping"]) == (False, False, None)
    assert facts["kvm"] == {"dev_kvm": True}
    assert facts["verdicts"]["tdx_ready"] is True
    assert facts["verdicts"]["tdx_ready_reasons"] == []
    assert facts["verdicts"]["vfio_ready"] is True
    assert facts["verdicts"]["snp_ready_reasons"] == [
        "CPU is not AMD (vendor_id GenuineIntel): SEV-SNP needs an AMD EPYC CPU (Milan or newer)"]


def test_intel_host_with_iommu_off_names_the_fix(tmp_path: Path) -> None:
    host = intel_tdx_host(tmp_path)
    host.remove("/sys/class/iommu").remove("/sys/kernel/iommu_groups")
    facts, _warnings = host.facts()

    assert facts["iommu"]["enabled"] is False
    assert facts["iommu"]["type"] is None
    assert facts["iommu"]["default_domain_type"] is None
    verdicts = facts["verdicts"]
    assert verdicts["vfio_ready"] is False
    assert verdicts["vfio_ready_reasons"] == [
        "IOMMU is off: add intel_iommu=on to the kernel command line and enable VT-d in firmware"]
    assert verdicts["tdx_ready"] is False
    assert verdicts["tdx_ready_reasons"] == [
        ("IOMMU is off (GPU passthrough to TDs needs it): add intel_iommu=on to the kernel command line "
         "and enable VT-d in firmware")]


def test_amd_host_with_iommu_disabled_on_cmdline_says_what_to_remove(tmp_path: Path) -> None:
    host = amd_snp_host(tmp_path)
    host.remove("/sys/class/iommu").remove("/sys/kernel/iommu_groups")
    host.kernel("6.11.0-29-generic", "ro amd_iommu=off quiet")
    facts, _warnings = host.facts()

    reason = facts["verdicts"]["snp_ready_reasons"][0]
    assert reason.startswith("IOMMU is off (SEV-SNP needs it): remove amd_iommu=off from the kernel command line")
    assert "AMD-Vi" in reason
    assert facts["verdicts"]["snp_ready"] is False
    assert facts["verdicts"]["vfio_ready_reasons"][0].startswith("IOMMU is off: remove amd_iommu=off")


def test_snp_off_in_kvm_amd_names_bios_and_module_fix(tmp_path: Path) -> None:
    host = amd_snp_host(tmp_path)
    host.write("/sys/module/kvm_amd/parameters/sev_snp", "N\n").remove("/dev/sev")
    facts, _warnings = host.facts()

    assert facts["sev"]["kvm_amd_sev_snp"] is False
    assert facts["verdicts"]["snp_ready"] is False
    assert facts["verdicts"]["snp_ready_reasons"] == [
        ("SEV-SNP is not enabled in kvm_amd (sev_snp=N): enable SEV-SNP, SMEE and SNP memory coverage in BIOS, "
         "then load kvm_amd with sev_snp=1"),
        ("/dev/sev is missing: the AMD Secure Processor driver is not ready; modprobe ccp and check dmesg for "
         "SEV firmware errors"),
    ]
    assert facts["verdicts"]["vfio_ready"] is True


# --------------------------------------------------------------------------
# SEV-SNP and the IOMMU's mode, from the kernel's own source (tests/fixtures/linux-mainline)
# --------------------------------------------------------------------------

LINUX_EXCERPTS = REPO / "tests" / "fixtures" / "linux-mainline"


def _kernel_snp_message(keyword: str) -> str:
    """The message ``iommu_snp_enable()`` logs when it turns SEV-SNP off for ``keyword``, minus the variable head."""
    source = (LINUX_EXCERPTS / "amd-iommu-init-snp.c").read_text()
    messages = re.findall(r'pr_warn\("SNP: (IOMMU [^"]*%s[^"]*)\\n"\)' % keyword, source)
    assert len(messages) == 1, messages
    return messages[0]


def _amd_iommu_v2_word() -> str:
    """The ``amd_iommu=`` word with which parse_amd_iommu_options() selects the v2 page table."""
    source = (LINUX_EXCERPTS / "amd-iommu-init-snp.c").read_text()
    return re.search(r'strncmp\(str, "(\w+)", \d+\) == 0\) \{\s*amd_iommu_pgtable = PD_MODE_V2;', source).group(1)


def _passthrough_on_value() -> str:
    """The ``iommu.passthrough=`` value that bypasses the IOMMU, as kernel-parameters.txt documents it."""
    text = (LINUX_EXCERPTS / "kernel-parameters-iommu-passthrough.txt").read_text()
    return re.search(r'^\s*(\d) - Bypass the IOMMU for DMA\.', text, re.MULTILINE).group(1)


@pytest.mark.parametrize(("argument", "group_type", "keyword"), [
    ("iommu=pt", "identity", "passthrough"),
    ("iommu.passthrough=" + _passthrough_on_value(), "identity", "passthrough"),
    (None, "identity", "passthrough"),  # a kernel built with CONFIG_IOMMU_DEFAULT_PASSTHROUGH
    ("amd_iommu=" + _amd_iommu_v2_word(), "DMA-FQ", "V2 page table"),
])
def test_snp_off_through_the_iommu_mode_names_it_not_the_bios(tmp_path: Path, argument: str | None,
                                                              group_type: str, keyword: str) -> None:
    """Linux clears SEV-SNP at boot when the IOMMU passes DMA through or uses the v2 page table; kvm_amd then
    says sev_snp=N although the firmware has it on.  The reason must name the argument, not the BIOS."""
    host = amd_snp_host(tmp_path)
    host.kernel("6.11.0-29-generic", "BOOT_IMAGE=/vmlinuz ro " + (argument or ""))
    host.iommu([], [group_type] * 5)
    host.write("/sys/module/kvm_amd/parameters/sev_snp", "N\n")
    facts, _warnings = host.facts()

    reasons = facts["verdicts"]["snp_ready_reasons"]
    assert facts["sev"]["iommu_conflicts"] == ([argument] if argument else [
        "the kernel's default IOMMU domain is identity (built with CONFIG_IOMMU_DEFAULT_PASSTHROUGH)"])
    assert len(reasons) == 1, reasons
    assert reasons[0].startswith("SEV-SNP is off because the")
    assert f"({facts['sev']['iommu_conflicts'][0]})" in reasons[0]
    message = _kernel_snp_message(keyword)
    assert message[message.index("configured"):].rstrip(".") in reasons[0], "what dmesg shows"
    assert "BIOS" not in reasons[0] and "ASID" not in reasons[0]
    assert ("add iommu.passthrough=0" if argument is None else f"remove {argument.split('=')[0]}") in reasons[0] \
        or f"remove pgtbl_v2 from {argument}" in reasons[0]


def test_snp_on_despite_passthrough_is_ready(tmp_path: Path) -> None:
    """IOMMUs with SNP page mode 0 keep SEV-SNP on in passthrough mode on newer kernels (the excerpt's
    ``amd_iommu_snp_mode0_sup``): what kvm_amd says wins, and the conflict is only reported."""
    assert "amd_iommu_snp_mode0_sup" in (LINUX_EXCERPTS / "amd-iommu-init-snp.c").read_text()
    host = amd_snp_host(tmp_path)
    host.kernel("6.18.0", "BOOT_IMAGE=/vmlinuz ro iommu=pt")
    facts, _warnings = host.facts()
    assert facts["sev"]["iommu_conflicts"] == ["iommu=pt"]
    assert facts["verdicts"]["snp_ready"] is True


@pytest.mark.parametrize(("cmdline", "v2"), [
    ("amd_iommu=pgtbl_v2", True), ("amd_iommu=force_isolation,pgtbl_v2", True),
    ("amd_iommu=pgtbl_v2 amd_iommu=pgtbl_v1", False), ("amd_iommu=off", False), ("ro", False),
])
def test_amd_v2_page_table(tmp_path: Path, cmdline: str, v2: bool) -> None:
    facts, _warnings = FakeHost(tmp_path).kernel("6.1.0", cmdline).facts()
    assert facts["iommu"]["amd_v2_page_table"] is v2


def test_kernel_without_snp_parameter_asks_for_newer_kernel(tmp_path: Path) -> None:
    host = amd_snp_host(tmp_path).remove("/sys/module/kvm_amd/parameters/sev_snp")
    facts, _warnings = host.facts()

    assert facts["sev"]["kvm_amd_sev_snp"] is None
    assert any("no sev_snp parameter" in reason and "6.11" in reason
               for reason in facts["verdicts"]["snp_ready_reasons"])


def test_tdx_off_without_platform_flag_points_at_bios(tmp_path: Path) -> None:
    host = intel_tdx_host(tmp_path)
    host.cpu("GenuineIntel", 6, 143, "Intel(R) Xeon(R) Platinum 8480+", "fpu vmx tme")
    host.write("/sys/module/kvm_intel/parameters/tdx", "N\n")
    facts, _warnings = host.facts()

    assert facts["verdicts"]["tdx_ready"] is False
    (reason,) = facts["verdicts"]["tdx_ready_reasons"]
    assert reason.startswith("TDX is not enabled in kvm_intel (tdx=N) (the CPU does not report tdx_host_platform")
    assert "kvm_intel.tdx=1" in reason


@pytest.mark.parametrize("family, model, name, flags, support", [
    (23, 0x31, "AMD EPYC 7742 64-Core Processor", "fpu svm sme sev sev_es", False),   # Rome: SEV-ES at most
    (25, 0x01, "AMD EPYC 7763 64-Core Processor", "fpu svm", None),                   # Milan, SNP off in firmware
])
def test_snp_support_by_epyc_generation(tmp_path: Path, family: int, model: int, name: str, flags: str,
                                        support: bool | None) -> None:
    host = amd_snp_host(tmp_path)
    host.cpu("AuthenticAMD", family, model, name, flags)
    host.write("/sys/module/kvm_amd/parameters/sev_snp", "N\n")
    facts, _warnings = host.facts()

    assert facts["cpu"]["cc_support"] == {"snp": support, "tdx": False}
    reasons = facts["verdicts"]["snp_ready_reasons"]
    if support is False:
        assert reasons == [
            (f"{name} (family {family:#x}, model {model:#x}) predates SEV-SNP, which AMD EPYC has from the 7003 "
             "series (Milan, family 0x19) on: this host cannot run SEV-SNP guests, whatever the firmware settings")]
    else:
        assert reasons[0].startswith("SEV-SNP is not enabled in kvm_amd (sev_snp=N)")


@pytest.mark.parametrize("model, name, support", [
    (0x6A, "Intel(R) Xeon(R) Gold 6338 CPU @ 2.00GHz", False),   # Ice Lake-SP
    (0x55, "Intel(R) Xeon(R) Gold 6248 CPU @ 2.50GHz", False),   # Cascade Lake
    (0x8F, "Intel(R) Xeon(R) Platinum 8480+", None),              # Sapphire Rapids: SKU and firmware decide
    (0xCF, "INTEL(R) XEON(R) PLATINUM 8592+", None),              # Emerald Rapids
    (0xAD, "Intel(R) Xeon(R) 6980P", None),                       # Granite Rapids
])
def test_tdx_support_by_xeon_generation(tmp_path: Path, model: int, name: str, support: bool | None) -> None:
    host = intel_tdx_host(tmp_path)
    host.cpu("GenuineIntel", 6, model, name, "fpu vmx")
    host.write("/sys/module/kvm_intel/parameters/tdx", "N\n")
    facts, _warnings = host.facts()

    assert facts["cpu"]["cc_support"] == {"snp": False, "tdx": support}
    first = facts["verdicts"]["tdx_ready_reasons"][0]
    if support is False:
        assert first == (f"{name} (family 0x6, model {model:#x}) is of an Intel generation without TDX, which "
                         "starts with 4th Gen Xeon Scalable (Sapphire Rapids, some SKUs): this host cannot run TDX "
                         "guests, whatever the firmware settings")
    else:
        assert first.startswith("TDX is not enabled in kvm_intel (tdx=N)")


def test_kernel_evidence_beats_the_model_table(tmp_path: Path) -> None:
    host = intel_tdx_host(tmp_path)
    host.cpu("GenuineIntel", 19, 1, "Intel(R) Xeon(R) next", "fpu vmx")
    assert host.facts()[0]["cpu"]["cc_support"]["tdx"] is True      # kvm_intel tdx=Y
    host.write("/sys/module/kvm_intel/parameters/tdx", "N\n")
    assert host.facts()[0]["cpu"]["cc_support"]["tdx"] is None      # a family newer than the table
    host.cpu("GenuineIntel", 6, 0x6A, "Intel(R) Xeon(R) Gold 6338", "fpu vmx tdx_host_platform")
    assert host.facts()[0]["cpu"]["cc_support"]["tdx"] is True      # the firmware enabled it: trust the kernel


def test_kvm_intel_not_loaded(tmp_path: Path) -> None:
    host = intel_tdx_host(tmp_path).remove("/sys/module/kvm_intel")
    facts, _warnings = host.facts()

    assert facts["tdx"] == {"kvm_intel_loaded": False, "kvm_intel_tdx": None}
    assert facts["verdicts"]["tdx_ready_reasons"] == [
        "kvm_intel is not loaded: enable VMX and TDX in BIOS, then modprobe kvm_intel tdx=1"]


IOMMU_OFF_CASES = {
    "VT-d on in firmware, off on the command line": (
        intel_tdx_host, ("DMAR",), "ro intel_iommu=off",
        "remove intel_iommu=off from the kernel command line and add intel_iommu=on to the kernel command line"),
    "AMD-Vi on in firmware, off on the command line: only the argument goes": (
        amd_snp_host, ("IVRS",), "ro amd_iommu=off", "remove amd_iommu=off from the kernel command line"),
    "AMD-Vi on in firmware and nothing switching it off": (
        amd_snp_host, ("IVRS",), "ro",
        "the firmware describes AMD-Vi (IVRS table) and Linux turns it on by default, so amd_iommu=on is not "
        "needed: check dmesg for AMD-Vi errors and that the kernel has CONFIG_AMD_IOMMU"),
    # QEMU's TCG CPU reports AMD while its IOMMU is Intel VT-d (the lab VM): the DMAR table decides
    "emulated VT-d beside an AMD CPU": (
        amd_snp_host, ("DMAR",), "ro", "add intel_iommu=on to the kernel command line"),
    "firmware that describes no IOMMU": (
        intel_tdx_host, (), "ro",
        "enable VT-d (Intel) or AMD-Vi/IOMMU (AMD) in the firmware setup, which describes no IOMMU now (no DMAR or "
        "IVRS table among the ACPI tables) and add intel_iommu=on to the kernel command line"),
}


@pytest.mark.parametrize("case", IOMMU_OFF_CASES)
def test_iommu_off_reason_follows_the_firmware_table(tmp_path: Path, case: str) -> None:
    make_host, tables, cmdline, fix = IOMMU_OFF_CASES[case]
    host = make_host(tmp_path).acpi_tables(*tables)
    host.remove("/sys/class/iommu").remove("/sys/kernel/iommu_groups")
    host.kernel("6.16.3", cmdline)
    facts, _warnings = host.facts()

    assert (facts["iommu"]["acpi_table"], facts["iommu"]["acpi_tables_listed"]) == (
        (tables or (None,))[0], True)
    assert iommu_vendor(facts) == ("amd" if tables == ("IVRS",) else "intel")
    assert facts["verdicts"]["vfio_ready_reasons"][0] == "IOMMU is off: " + fix


def test_empty_root_reports_nothing_and_warns(tmp_path: Path) -> None:
    facts, warnings = FakeHost(tmp_path).facts()

    assert warnings == [f"{tmp_path} has neither sys/ nor proc/: is it a host root or a captured tree?"]
    assert facts["cpu"]["vendor"] == "other"
    assert facts["kernel"] == {"release": None, "cmdline": None, "cmdline_args": [], "init_args": [], "config": None,
                               "module_files": {"vfio_pci": None, "iommufd": None, "ccp": None},
                               "module_config_files": {"modprobe_d": [], "modules_load_d": []}}
    assert facts["numa"] == {"nodes": []}
    assert facts["hugepages"] == {"default_size_kb": None, "pools": []}
    assert facts["verdicts"]["vfio_ready"] is False
    assert "vfio-pci is not available" in facts["verdicts"]["vfio_ready_reasons"][-1]


# --------------------------------------------------------------------------
# Garbage: warnings, never a crash
# --------------------------------------------------------------------------

def test_garbage_parameter_file_warns_and_reads_as_unknown(tmp_path: Path) -> None:
    host = amd_snp_host(tmp_path)
    host.write("/sys/module/kvm_amd/parameters/sev_snp", "banana\n")
    host.write("/sys/module/kvm_amd/parameters/sev_es", b"\xff\xfe\x00\x01")
    facts, warnings = host.facts()

    assert facts["sev"]["kvm_amd_sev_snp"] is None
    assert facts["sev"]["kvm_amd_sev_es"] is None
    assert "/sys/module/kvm_amd/parameters/sev_snp holds 'banana', not Y/N or 1/0; ignored" in warnings
    assert any(warning.startswith("/sys/module/kvm_amd/parameters/sev_es holds") for warning in warnings)
    assert facts["verdicts"]["snp_ready"] is False


def test_garbage_numa_meminfo_and_online_warn(tmp_path: Path) -> None:
    host = amd_snp_host(tmp_path)
    host.write("/sys/devices/system/node/node1/meminfo", "Node 1 MemTotal:       lots kB\n")
    host.write("/sys/devices/system/node/node0/meminfo", "\x00\x01 nonsense\n")
    host.write("/sys/devices/system/node/online", "zero-one\n")
    facts, warnings = host.facts()

    assert [node["node"] for node in facts["numa"]["nodes"]] == [0, 1]
    assert [node["mem_total_kb"] for node in facts["numa"]["nodes"]] == [None, None]
    assert warnings == [
        "/sys/devices/system/node/online holds 'zero-one', not a node list; using the node* directories",
        "/sys/devices/system/node/node0/meminfo has no MemTotal line; ignored",
        "/sys/devices/system/node/node1/meminfo MemTotal holds 'lots', not an integer; ignored",
    ]


def test_garbage_cpuinfo_and_hugepage_counts_warn(tmp_path: Path) -> None:
    host = amd_snp_host(tmp_path)
    host.write("/proc/cpuinfo", "processor\t: 0\nvendor_id\t: AuthenticAMD\ncpu family\t: ?\nmodel\t\t: 17\n")
    host.write("/sys/kernel/mm/hugepages/hugepages-1048576kB/free_hugepages", "many\n")
    host.mkdir("/sys/kernel/mm/hugepages/not-a-pool")
    facts, warnings = host.facts()

    assert facts["cpu"]["family"] is None
    assert facts["cpu"]["vendor"] == "amd"
    one_gig = facts["hugepages"]["pools"][-1]
    assert (one_gig["total"], one_gig["free"]) == (16, None)
    assert "/proc/cpuinfo cpu family holds '?', not an integer; ignored" in warnings
    assert "/sys/kernel/mm/hugepages/hugepages-1048576kB/free_hugepages holds 'many', not an integer; ignored" \
        in warnings
    assert "/sys/kernel/mm/hugepages/not-a-pool is not a hugepages-<N>kB pool; ignored" in warnings


def test_unreadable_parameter_warns(tmp_path: Path) -> None:
    host = amd_snp_host(tmp_path)
    host.remove("/sys/module/kvm_amd/parameters/sev_snp").mkdir("/sys/module/kvm_amd/parameters/sev_snp")
    facts, warnings = host.facts()

    assert facts["sev"]["kvm_amd_sev_snp"] is None
    assert "cannot read /sys/module/kvm_amd/parameters/sev_snp: Is a directory" in warnings


# --------------------------------------------------------------------------
# Hugepages and NUMA
# --------------------------------------------------------------------------

def test_hugepage_pools_per_node(tmp_path: Path) -> None:
    host = FakeHost(tmp_path)
    host.numa({0: 4194304, 1: 4194304, 2: 1048576}, online="0-2")
    host.hugepages(2048, 512, 500, {0: (256, 250), 1: (256, 250), 2: (0, 0)})
    host.hugepages(1048576, 2, 1, {0: (1, 0), 1: (1, 1)})
    host.write("/proc/meminfo", "MemTotal: 9437184 kB\nHugepagesize:       2048 kB\nDirectMap4k: 1 kB\n")
    facts, warnings = host.facts()

    assert warnings == []
    assert facts["hugepages"] == {
        "default_size_kb": 2048,
        "pools": [
            {"size_kb": 2048, "size": "2M", "total": 512, "free": 500, "reserved": 0, "surplus": 0,
             "nodes": [{"node": 0, "total": 256, "free": 250, "surplus": 0},
                       {"node": 1, "total": 256, "free": 250, "surplus": 0},
                       {"node": 2, "total": 0, "free": 0, "surplus": 0}]},
            {"size_kb": 1048576, "size": "1G", "total": 2, "free": 1, "reserved": 0, "surplus": 0,
             "nodes": [{"node": 0, "total": 1, "free": 0, "surplus": 0},
                       {"node": 1, "total": 1, "free": 1, "surplus": 0}]},
        ],
    }
    assert facts["numa"]["nodes"] == [
        {"node": 0, "cpulist": "0-7", "mem_total_kb": 4194304},
        {"node": 1, "cpulist": "8-15", "mem_total_kb": 4194304},
        {"node": 2, "cpulist": "16-23", "mem_total_kb": 1048576},
    ]


def test_numa_nodes_from_directories_without_online_file(tmp_path: Path) -> None:
    host = FakeHost(tmp_path).numa({0: 100, 3: 300})
    host.remove("/sys/devices/system/node/online").mkdir("/sys/devices/system/node/power")
    facts, warnings = host.facts()

    assert warnings == []
    assert [node["node"] for node in facts["numa"]["nodes"]] == [0, 3]


@pytest.mark.parametrize(("size_kb", "label"), [
    (4, "4K"), (64, "64K"), (2048, "2M"), (32768, "32M"), (524288, "512M"), (1048576, "1G"),
    (16777216, "16G"), (1536, "1536K"),
])
def test_size_label(size_kb: int, label: str) -> None:
    assert size_label(size_kb) == label


def test_parse_id_list() -> None:
    assert parse_id_list("0-1,3,8-9\n") == [0, 1, 3, 8, 9]
    assert parse_id_list("0") == [0]
    for garbage in ("a-b", "3-1", "1,,x"):
        with pytest.raises(ValueError):
            parse_id_list(garbage)


# --------------------------------------------------------------------------
# Kernel command line
# --------------------------------------------------------------------------

def _pairs(text: str | None) -> list[tuple[str, str | None]]:
    args, _init = parse_cmdline(text)
    return [(arg["key"], arg["value"]) for arg in args]


@pytest.mark.parametrize(("cmdline", "expected"), [
    ("hugepagesz=1G hugepages=4 hugepagesz=2M hugepages=512",
     [("hugepagesz", "1G"), ("hugepages", "4"), ("hugepagesz", "2M"), ("hugepages", "512")]),
    ("intel_iommu=on,sm_on iommu=pt quiet", [("intel_iommu", "on,sm_on"), ("iommu", "pt"), ("quiet", None)]),
    ('foo="a b" bar', [("foo", "a b"), ("bar", None)]),
    ('"foo=a b" bar', [("foo", "a b"), ("bar", None)]),
    ('"quoted flag" x', [("quoted flag", None), ("x", None)]),
    ('foo=a"b c"d e', [("foo", 'a"b c"d'), ("e", None)]),
    ('foo="unterminated b', [("foo", "unterminated b")]),
    ("key= flag a=b=c", [("key", ""), ("flag", None), ("a", "b=c")]),
    ("  \tro\n root=/dev/sda1  ", [("ro", None), ("root", "/dev/sda1")]),
    ("", []),
    (None, []),
])
def test_parse_cmdline(cmdline: str | None, expected: list[tuple[str, str | None]]) -> None:
    assert _pairs(cmdline) == expected


def test_parse_cmdline_stops_at_double_dash() -> None:
    args, init_args = parse_cmdline("ro quiet -- --init-flag single x=1")
    assert [arg["key"] for arg in args] == ["ro", "quiet"]
    assert init_args == ["--init-flag", "single", "x=1"]


def test_cmdline_reported_raw_and_parsed(tmp_path: Path) -> None:
    host = FakeHost(tmp_path).kernel("6.1.0-lab", 'root=LABEL=root rw console=ttyS0,115200n8 dyndbg="file x +p"')
    facts, _warnings = host.facts()

    assert facts["kernel"]["release"] == "6.1.0-lab"
    assert facts["kernel"]["cmdline"] == 'root=LABEL=root rw console=ttyS0,115200n8 dyndbg="file x +p"'
    assert facts["kernel"]["cmdline_args"] == [
        {"key": "root", "value": "LABEL=root"}, {"key": "rw", "value": None},
        {"key": "console", "value": "ttyS0,115200n8"}, {"key": "dyndbg", "value": "file x +p"},
    ]


@pytest.mark.parametrize(("cmdline", "passthrough"), [
    ("ro", None),
    ("iommu=pt", True),
    ("iommu=force,pt", True),
    ("iommu=pt iommu.passthrough=0", False),
    ("iommu.passthrough=1 iommu=nopt", False),
    ("iommu.passthrough=y", True),
])
def test_cmdline_passthrough(tmp_path: Path, cmdline: str, passthrough: bool | None) -> None:
    facts, _warnings = FakeHost(tmp_path).kernel("6.1.0", cmdline).facts()
    assert facts["iommu"]["cmdline_passthrough"] is passthrough


# --------------------------------------------------------------------------
# IOMMU details
# --------------------------------------------------------------------------

@pytest.mark.parametrize(("builtin", "dep", "loaded", "source"), [
    ("kernel/drivers/vfio/pci/vfio-pci.ko\n", "", False, "builtin"),
    ("", "kernel/drivers/vfio/pci/vfio-pci.ko: kernel/drivers/vfio/vfio.ko\n", True, "loaded"),
    ("", "kernel/drivers/vfio/pci/vfio-pci.ko.xz: kernel/drivers/vfio/vfio.ko.xz\n", False, "module"),
    ("kernel/drivers/vfio/pci/vfio-pci-core.ko\n",
     "kernel/drivers/vfio/pci/mlx5-vfio-pci.ko: kernel/drivers/vfio/pci/vfio-pci-core.ko\n", False, None),
])
def test_vfio_pci_source(tmp_path: Path, builtin: str, dep: str, loaded: bool, source: str | None) -> None:
    host = FakeHost(tmp_path).kernel("6.8.0", "ro")
    host.write("/lib/modules/6.8.0/modules.builtin", builtin).write("/lib/modules/6.8.0/modules.dep", dep)
    if loaded:
        host.module("vfio_pci")
    facts, _warnings = host.facts()

    assert facts["iommu"]["vfio_pci_source"] == source
    assert facts["iommu"]["vfio_pci_available"] is (source is not None)


def test_kernel_build_options_and_module_files(tmp_path: Path) -> None:
    """Lines as the kernel's kconfig writes /boot/config-<release> and depmod modules.dep: set options with their
    value, an option turned off (a comment) and one the file lacks as null; built-in wins over a module file."""
    host = FakeHost(tmp_path).kernel("6.1.0-28-amd64", "ro")
    host.write("/boot/config-6.1.0-28-amd64", "#\n# Automatically generated file; DO NOT EDIT.\n"
               "CONFIG_IOMMUFD=m\nCONFIG_IOMMUFD_TEST=y\nCONFIG_KVM_AMD_SEV=y\n# CONFIG_VFIO_DEVICE_CDEV is not set\n")
    host.write("/lib/modules/6.1.0-28-amd64/modules.dep",
               "kernel/drivers/iommu/iommufd/iommufd.ko.xz:\n"
               "kernel/drivers/crypto/ccp/ccp-crypto.ko.xz: kernel/drivers/crypto/ccp/ccp.ko.xz\n"
               "kernel/drivers/crypto/ccp/ccp.ko.xz: kernel/drivers/char/hw_random/rng-core.ko.xz\n"
               "kernel/drivers/vfio/pci/vfio-pci.ko.xz: kernel/drivers/vfio/pci/vfio-pci-core.ko.xz\n")
    host.write("/lib/modules/6.1.0-28-amd64/modules.builtin", "kernel/drivers/vfio/pci/vfio-pci.ko\n")
    facts, _warnings = host.facts()

    assert facts["kernel"]["config"] == {"CONFIG_IOMMUFD": "m", "CONFIG_VFIO_DEVICE_CDEV": None,
                                         "CONFIG_KVM_AMD_SEV": "y", "CONFIG_INTEL_TDX_HOST": None}
    assert facts["kernel"]["module_files"] == {"vfio_pci": "builtin", "iommufd": "module", "ccp": "module"}
    host.remove("/boot/config-6.1.0-28-amd64")
    assert host.facts()[0]["kernel"]["config"] is None, "no build configuration: nothing known, not all off"


@pytest.mark.parametrize(("interrupts", "remapped"), [
    ("           CPU0\n  0:   44   IR-IO-APIC    2-edge      timer\n", True),
    ("  24:  0  IR-PCI-MSIX-0000:00:03.0    0-edge      virtio0-config\n", True),
    ("           CPU0\n  0:   44   IO-APIC    2-edge      timer\n  1:  9  PCI-MSI 512000-edge  ahci\n", False),
])
def test_interrupt_remapping(tmp_path: Path, interrupts: str, remapped: bool) -> None:
    facts, _warnings = FakeHost(tmp_path).write("/proc/interrupts", interrupts).facts()
    assert facts["iommu"]["interrupt_remapping"] is remapped


def test_iommu_units_without_groups_is_not_vfio_ready(tmp_path: Path) -> None:
    host = intel_tdx_host(tmp_path).remove("/sys/kernel/iommu_groups")
    facts, _warnings = host.facts()

    assert facts["iommu"]["enabled"] is True
    assert facts["iommu"]["group_count"] == 0
    (reason,) = facts["verdicts"]["vfio_ready_reasons"]
    assert reason.startswith("IOMMU units dmar0, dmar1 exist but /sys/kernel/iommu_groups is empty")


def test_iommu_groups_without_known_unit_type_is_other(tmp_path: Path) -> None:
    host = FakeHost(tmp_path).iommu(["virtio-iommu0"], ["DMA-FQ", "DMA-FQ", "identity"])
    facts, _warnings = host.facts()

    assert (facts["iommu"]["type"], facts["iommu"]["default_domain_type"]) == ("other", "DMA-FQ")


# --------------------------------------------------------------------------
# Verdicts are a pure function of the facts
# --------------------------------------------------------------------------

def test_evaluate_reads_only_the_facts(tmp_path: Path) -> None:
    facts, _warnings = amd_snp_host(tmp_path).facts()
    facts["sev"]["dev_sev"] = False
    facts["iommu"]["vfio_pci_available"] = False

    verdicts = evaluate(facts)

    assert verdicts["snp_ready"] is False
    assert [reason.split(":")[0] for reason in verdicts["snp_ready_reasons"]] == ["/dev/sev is missing"]
    assert verdicts["vfio_ready"] is False
    assert verdicts["vfio_ready_reasons"][0].startswith("vfio-pci is not available")
    for name in ("vfio", "snp", "tdx"):
        assert verdicts[name + "_ready"] is (verdicts[name + "_ready_reasons"] == [])
