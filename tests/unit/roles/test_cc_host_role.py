"""Role cc_host run with ansible-playbook (local connection) on fake host trees.

The trees hold what cc_host_info reads (/proc/cpuinfo, /sys/module/kvm_amd/parameters,
/dev/sev, /dev/iommu, ...) plus the kernel's build configuration and module lists,
which the role reads for IOMMUFD and VFIO cdev support.  A tree is not the live host,
so the role writes its files below it and loads no module.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Dict, Optional

from conftest import REPO

sys.path.insert(0, str(REPO / "tests" / "lib"))
from role_play import run_role  # noqa: E402

RELEASE = "6.11.0-29-generic"
REPORT = ("cc_host_reboot_required", "cc_host_reboot_reasons", "cc_host_kernel_args", "cc_host_pending",
          "cc_host_check")
MODPROBE = "etc/modprobe.d/confidential-gpu-kvm-amd.conf"
MODULES_LOAD = "etc/modules-load.d/confidential-gpu.conf"


def make_tree(root: Path, files: Dict[str, str], links: Optional[Dict[str, str]] = None) -> Path:
    for host_path, content in files.items():
        path = root / host_path.lstrip("/")
        path.parent.mkdir(parents=True, exist_ok=True)
        if host_path.endswith("/"):
            path.mkdir(exist_ok=True)
        else:
            path.write_text(content)
    for host_path, target in (links or {}).items():
        path = root / host_path.lstrip("/")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.symlink_to(target)
    return root


def kernel_files(iommufd: str = "m", vfio_cdev: str = "y") -> Dict[str, str]:
    """/boot/config-<release> and the module lists, as a distribution kernel ships them."""
    config = "#\n# Automatically generated file; DO NOT EDIT.\n# Linux/x86 6.11.0 Kernel Configuration\n"
    config += ("CONFIG_IOMMUFD=%s\n" % iommufd) if iommufd != "n" else "# CONFIG_IOMMUFD is not set\n"
    config += ("CONFIG_VFIO_DEVICE_CDEV=%s\n" % vfio_cdev) if vfio_cdev != "n" else \
        "# CONFIG_VFIO_DEVICE_CDEV is not set\n"
    config += "CONFIG_KVM_AMD_SEV=y\n"
    dep = "kernel/drivers/vfio/vfio.ko.zst: kernel/drivers/iommu/iommufd/iommufd.ko.zst\n"
    dep += "kernel/drivers/crypto/ccp/ccp.ko.zst:\n"
    if iommufd == "m":
        dep += "kernel/drivers/iommu/iommufd/iommufd.ko.zst:\n"
    builtin = "kernel/drivers/vfio/pci/vfio-pci.ko\n"
    if iommufd == "y":
        builtin += "kernel/drivers/iommu/iommufd/iommufd.ko\n"
    return {
        "/boot/config-" + RELEASE: config,
        "/lib/modules/%s/modules.dep" % RELEASE: dep,
        "/lib/modules/%s/modules.builtin" % RELEASE: builtin,
    }


def amd_host(root: Path, cpu_flags: str = "svm sme sev sev_es sev_snp", params: str = "Y",
             dev_sev: bool = True, dev_iommu: bool = True, **kernel: str) -> Path:
    """An AMD EPYC host with AMD-Vi on; kvm_amd loaded with every SEV parameter set to ``params``."""
    files = {
        "/proc/cpuinfo": "processor\t: 0\nvendor_id\t: AuthenticAMD\ncpu family\t: 25\nmodel\t\t: 17\n"
                         "model name\t: AMD EPYC 9454 48-Core Processor\nflags\t\t: fpu %s\n\n" % cpu_flags,
        # no iommu=pt: Linux turns SEV-SNP off in passthrough mode (drivers/iommu/amd/init.c iommu_snp_enable())
        "/proc/cmdline": "BOOT_IMAGE=/vmlinuz root=/dev/sda1 ro\n",
        "/proc/sys/kernel/osrelease": RELEASE + "\n",
        "/sys/devices/pci0000:00/0000:00:00.2/iommu/ivhd0/amd-iommu/cap": "0x0\n",
        "/sys/kernel/iommu_groups/0/type": "DMA\n",
        "/sys/module/kvm_amd/parameters/sev": params + "\n",
        "/sys/module/kvm_amd/parameters/sev_es": params + "\n",
        "/sys/module/kvm_amd/parameters/sev_snp": params + "\n",
        "/dev/kvm": "",
        "/dev/vfio/devices/": "",
        "/etc/modprobe.d/": "",
        "/etc/modules-load.d/": "",
    }
    if dev_sev:
        files["/dev/sev"] = ""
    if dev_iommu:
        files["/dev/iommu"] = ""
    files.update(kernel_files(**kernel))
    return make_tree(root, files, {"/sys/class/iommu/ivhd0": "../../devices/pci0000:00/0000:00:00.2/iommu/ivhd0"})


def intel_host(root: Path, cmdline: str, tdx: str, flags: str = "vmx tdx_host_platform", model: int = 143,
               model_name: str = "Intel(R) Xeon(R) Platinum 8480+") -> Path:
    """An Intel Xeon host (Sapphire Rapids unless ``model`` says otherwise) with VT-d on and kvm_intel loaded."""
    files = {
        "/proc/cpuinfo": "processor\t: 0\nvendor_id\t: GenuineIntel\ncpu family\t: 6\nmodel\t\t: %d\n"
                         "model name\t: %s\nflags\t\t: fpu %s\n\n" % (model, model_name, flags),
        "/proc/cmdline": "BOOT_IMAGE=/vmlinuz root=/dev/sda1 ro intel_iommu=on %s\n" % cmdline,
        "/proc/sys/kernel/osrelease": RELEASE + "\n",
        "/sys/devices/virtual/iommu/dmar0/intel-iommu/version": "1:0\n",
        "/sys/kernel/iommu_groups/0/type": "DMA\n",
        "/sys/module/kvm_intel/parameters/tdx": tdx + "\n",
        "/dev/kvm": "",
        "/dev/iommu": "",
        "/dev/vfio/devices/": "",
    }
    files.update(kernel_files())
    return make_tree(root, files, {"/sys/class/iommu/dmar0": "../../devices/virtual/iommu/dmar0"})


def test_ready_snp_host_gets_its_files_and_passes_the_check_then_nothing_changes(tmp_path: Path) -> None:
    root = amd_host(tmp_path / "host")

    first = run_role(tmp_path, "cc_host", {"cc_host_root": str(root)}, REPORT, diff=True)

    assert first.rc == 0, first.output
    assert (root / MODPROBE).read_text().splitlines()[-1] == "options kvm_amd sev=1 sev_es=1 sev_snp=1"
    assert (root / MODULES_LOAD).read_text().splitlines()[1:] == ["ccp", "iommufd"]
    assert "+options kvm_amd sev=1 sev_es=1 sev_snp=1" in first.output, "diff mode shows the file"
    assert first.facts["cc_host_reboot_required"] is False
    assert first.facts["cc_host_check"]["technology"] == "snp"
    assert first.facts["cc_host_check"]["ready"] is True
    assert "localhost is ready for AMD SEV-SNP with IOMMUFD" in first.output
    assert first.recap["changed"] == 1, "one task (kernel_module_config) writes both files"
    assert facts_reads(first.output) == 2, "the files changed: the check reads the host again"

    second = run_role(tmp_path, "cc_host", {"cc_host_root": str(root)}, REPORT, name="again")

    assert second.rc == 0, second.output
    assert second.recap["changed"] == 0
    assert facts_reads(second.output) == 1, "nothing changed: the check uses what the role read first"
    assert second.facts["cc_host_check"]["ready"] is True


def facts_reads(output: str) -> int:
    """How many times a run read the host with cc_host_info."""
    return output.count("TASK [confidential_gpu.host.cc_host : Read the host's confidential-computing facts]")


def test_check_mode_writes_nothing_and_leaves_the_check_for_later(tmp_path: Path) -> None:
    root = amd_host(tmp_path / "host")

    result = run_role(tmp_path, "cc_host", {"cc_host_root": str(root)}, REPORT, check=True, diff=True)

    assert result.rc == 0, result.output
    assert not (root / MODPROBE).exists() and not (root / MODULES_LOAD).exists()
    assert "+options kvm_amd sev=1 sev_es=1 sev_snp=1" in result.output
    assert result.facts["cc_host_pending"] is True
    assert "check mode: files would change" in result.output
    assert result.recap["changed"] == 1, "one task (kernel_module_config) would write both files"


def test_kvm_amd_without_the_options_asks_for_a_reboot(tmp_path: Path) -> None:
    root = amd_host(tmp_path / "host", params="N")

    result = run_role(tmp_path, "cc_host", {"cc_host_root": str(root), "cc_host_reload_kvm_amd": True}, REPORT)

    assert result.rc == 0, result.output
    assert result.facts["cc_host_reboot_required"] is True
    assert result.facts["cc_host_reboot_reasons"] == [
        {"key": "kvm_amd", "configured": "sev=1 sev_es=1 sev_snp=1", "active": "sev=N sev_es=N sev_snp=N"}]
    assert result.facts["cc_host_check"] is None, "the check waits for the reboot"
    assert "the check waits until the changes are active (reboot for: kvm_amd)" in result.output


def test_firmware_without_snp_fails_with_reasons_and_bios_settings(tmp_path: Path) -> None:
    root = amd_host(tmp_path / "host", cpu_flags="svm sme sev sev_es", params="N", dev_sev=False)

    result = run_role(tmp_path, "cc_host", {"cc_host_root": str(root)}, REPORT)

    assert result.rc != 0
    assert "localhost is not ready for AMD SEV-SNP (kernel %s):" % RELEASE in result.output
    assert "SEV-SNP is not enabled in kvm_amd (sev_snp=N)" in result.output
    assert "/dev/sev is missing" in result.output
    assert ("The firmware is a likely cause (/proc/cpuinfo lacks the sev_snp flag, which the kernel clears when the "
            "firmware has not enabled SEV-SNP or reserved the RMP table)") in result.output
    for setting in ("SMEE (Secure Memory Encryption Enable): Enabled", "SNP Memory (RMP Table) Coverage: Enabled",
                    "SEV-ES ASID Space Limit", "SEV-SNP Support: Enabled"):
        assert setting in result.output
    assert (root / MODPROBE).exists(), "what the OS can do is done before the check"
    assert result.facts == {}, "the play stopped at the failed check"


def test_snp_off_through_iommu_pt_names_the_argument_not_the_firmware(tmp_path: Path) -> None:
    """With iommu=pt Linux turns SEV-SNP off at boot (drivers/iommu/amd/init.c iommu_snp_enable()), so kvm_amd
    says sev_snp=N although the CPU offers SEV-SNP: the check names the argument and gives no firmware evidence."""
    root = amd_host(tmp_path / "host")
    (root / "sys/module/kvm_amd/parameters/sev_snp").write_text("N\n")
    (root / "proc/cmdline").write_text("BOOT_IMAGE=/vmlinuz root=/dev/sda1 ro iommu=pt\n")
    (root / "sys/kernel/iommu_groups/0/type").write_text("identity\n")

    # the check as prepare runs it after the reboot (before it, the role waits for the reboot that role
    # kernel_args asks for when it takes iommu=pt off)
    result = run_role(tmp_path, "cc_host", {"cc_host_root": str(root)}, REPORT, tasks_from="verify")

    assert result.rc != 0
    assert "SEV-SNP is off because the IOMMU is in passthrough mode (iommu=pt)" in result.output
    assert "remove iommu=pt from the kernel command line" in result.output
    assert "SEV-ES ASID Space Limit) or the SEV firmware did not initialise" not in result.output
    assert "SEV-SNP is not enabled in kvm_amd (sev_snp=N)" not in result.output


def test_kernel_without_iommufd_and_vfio_cdev_names_the_kernel_options(tmp_path: Path) -> None:
    root = amd_host(tmp_path / "host", dev_iommu=False, iommufd="n", vfio_cdev="n")
    (root / "dev/vfio/devices").rmdir()

    result = run_role(tmp_path, "cc_host", {"cc_host_root": str(root)}, REPORT)

    assert result.rc != 0
    assert ("/dev/iommu is missing and kernel %s is built without CONFIG_IOMMUFD: Kata confidential shims open VFIO "
            "devices through IOMMUFD; boot a kernel with CONFIG_IOMMUFD=y or m" % RELEASE) in result.output
    assert "is built without CONFIG_VFIO_DEVICE_CDEV" in result.output
    assert (root / MODULES_LOAD).read_text().splitlines()[1:] == ["ccp"], "no iommufd module to list"


def test_iommufd_module_not_loaded_names_modprobe(tmp_path: Path) -> None:
    root = amd_host(tmp_path / "host", dev_iommu=False)

    result = run_role(tmp_path, "cc_host", {"cc_host_root": str(root), "cc_host_technology": "none"}, REPORT)

    assert result.rc != 0
    assert "localhost is not ready for IOMMUFD" in result.output
    assert "/dev/iommu is missing: modprobe iommufd (%s/etc/modules-load.d/confidential-gpu.conf loads it at boot)" \
        % root in result.output
    assert not (root / MODPROBE).exists(), "technology none writes no kvm_amd options"


def test_tdx_host_hands_its_arguments_to_kernel_args_and_waits_for_them(tmp_path: Path) -> None:
    root = intel_host(tmp_path / "host", cmdline="", tdx="N")

    result = run_role(tmp_path, "cc_host", {"cc_host_root": str(root)}, REPORT)

    assert result.rc == 0, result.output
    assert result.facts["cc_host_kernel_args"] == ["kvm_intel.tdx=1", "nohibernate"]
    assert result.facts["cc_host_pending"] is True
    assert "the TDX kernel arguments are not active yet" in result.output
    assert not (root / "etc/modprobe.d").exists()


def test_tdx_arguments_active_but_tdx_off_blames_the_firmware(tmp_path: Path) -> None:
    root = intel_host(tmp_path / "host", cmdline="kvm_intel.tdx=1 nohibernate", tdx="N", flags="vmx")

    result = run_role(tmp_path, "cc_host", {"cc_host_root": str(root)}, REPORT, tasks_from="verify")

    assert result.rc != 0
    assert "localhost is not ready for Intel TDX" in result.output
    assert "TDX is not enabled in kvm_intel (tdx=N)" in result.output
    assert "kvm_intel reports tdx=N with kvm_intel.tdx=1 on the command line; /proc/cpuinfo lacks tdx_host_platform" \
        in result.output
    for setting in ("Trust Domain Extension (TDX): Enable", "TDX Secure Arbitration Mode Loader (SEAM Loader): Enable",
                    "TME-MT/TDX key split: a non-zero value"):
        assert setting in result.output


def test_ready_tdx_host_passes_the_verify_entry_point(tmp_path: Path) -> None:
    root = intel_host(tmp_path / "host", cmdline="kvm_intel.tdx=1 nohibernate", tdx="Y")

    result = run_role(tmp_path, "cc_host", {"cc_host_root": str(root)}, REPORT, tasks_from="verify")

    assert result.rc == 0, result.output
    assert result.facts["cc_host_check"] == {"technology": "tdx", "ready": True, "reasons": [],
                                             "firmware_evidence": [], "notes": []}


def test_technology_that_does_not_fit_the_cpu_is_refused_before_any_change(tmp_path: Path) -> None:
    root = intel_host(tmp_path / "host", cmdline="", tdx="N")

    result = run_role(tmp_path, "cc_host", {"cc_host_root": str(root), "cc_host_technology": "snp"}, REPORT)

    assert result.rc != 0
    assert "cc_host_technology is snp but localhost has a CPU of vendor intel (GenuineIntel)" in result.output
    assert not (root / "etc").exists()


ICE_LAKE = {"model": 0x6A, "model_name": "Intel(R) Xeon(R) Gold 6338 CPU @ 2.00GHz"}


def test_auto_on_a_xeon_without_tdx_prepares_iommufd_only_and_says_why(tmp_path: Path) -> None:
    root = intel_host(tmp_path / "host", cmdline="", tdx="N", flags="vmx", **ICE_LAKE)

    result = run_role(tmp_path, "cc_host", {"cc_host_root": str(root)}, REPORT)

    assert result.rc == 0, result.output
    assert ("localhost: cc_host_technology auto prepares none (IOMMUFD only, no confidential guests): Intel(R) "
            "Xeon(R) Gold 6338 CPU @ 2.00GHz (family 0x6, model 0x6a) is of an Intel generation without TDX"
            ) in result.output
    assert result.facts["cc_host_kernel_args"] is None, "no TDX arguments for role kernel_args"
    assert (root / MODULES_LOAD).read_text().splitlines()[1:] == ["iommufd"]
    assert result.facts["cc_host_pending"] is False
    assert result.facts["cc_host_check"]["technology"] == "none"
    assert result.facts["cc_host_check"]["ready"] is True
    assert "localhost is ready for IOMMUFD" in result.output


def test_auto_on_a_tdx_generation_with_tdx_off_still_aims_at_tdx(tmp_path: Path) -> None:
    root = intel_host(tmp_path / "host", cmdline="", tdx="N", flags="vmx")

    result = run_role(tmp_path, "cc_host", {"cc_host_root": str(root)}, REPORT)

    assert result.rc == 0, result.output
    assert "auto prepares none" not in result.output
    assert result.facts["cc_host_kernel_args"] == ["kvm_intel.tdx=1", "nohibernate"]


def test_tdx_asked_on_a_xeon_without_tdx_is_refused_before_any_change(tmp_path: Path) -> None:
    root = intel_host(tmp_path / "host", cmdline="", tdx="N", flags="vmx", **ICE_LAKE)

    result = run_role(tmp_path, "cc_host", {"cc_host_root": str(root), "cc_host_technology": "tdx"}, REPORT)

    assert result.rc != 0
    assert ("cc_host_technology is tdx but localhost: Intel(R) Xeon(R) Gold 6338 CPU @ 2.00GHz (family 0x6, model "
            "0x6a) is of an Intel generation without TDX") in result.output
    assert "set cc_host_technology to none (VFIO passthrough through IOMMUFD, without confidential computing) or " \
        "auto" in result.output
    assert result.facts == {}, "the play stopped before its report"
    assert not (root / "etc").exists(), "nothing written (IOMMUFD's modules-load.d file included)"


def test_handed_the_facts_of_this_run_the_role_plans_from_them_without_reading_the_host(tmp_path: Path) -> None:
    """prepare.yml hands cc_host the cc_host_info result that role discovery read (cc_host_host_facts): the role
    plans from it as from its own read, and does not read the host again (here an AMD tree beside an Intel
    host's facts: the plan is the Intel host's). What the kernel was built with is part of those facts
    (kernel.module_files): where ccp comes from decides the boot list."""
    facts_out = REPORT + ("cc_host_facts",)
    intel = intel_host(tmp_path / "intel", cmdline="kvm_intel.tdx=1 nohibernate", tdx="Y")
    common = {"cc_host_iommufd": False}

    alone_intel = run_role(tmp_path, "cc_host", dict(common, cc_host_root=str(intel)), facts_out, name="intel")
    alone_amd = run_role(tmp_path, "cc_host", dict(common, cc_host_root=str(amd_host(tmp_path / "amd"))), facts_out,
                         name="amd")
    # a tree of its own: a file the run before wrote there would be removed, and the role reads the host again then
    given = run_role(tmp_path, "cc_host", dict(common, cc_host_root=str(amd_host(tmp_path / "amd-given")),
                                               cc_host_host_facts=alone_intel.facts["cc_host_facts"]),
                     facts_out, name="given")

    assert alone_intel.rc == 0 and alone_amd.rc == 0 and given.rc == 0, given.output
    assert alone_intel.facts["cc_host_check"]["technology"] == "tdx"
    assert alone_amd.facts["cc_host_check"]["technology"] == "snp", "the AMD tree, read by the role itself"
    assert {fact: given.facts[fact] for fact in REPORT} == {fact: alone_intel.facts[fact] for fact in REPORT}
    assert given.facts["cc_host_facts"]["cpu"]["vendor"] == "intel", "the facts handed over, not the tree's"
    assert (tmp_path / "amd" / MODULES_LOAD).read_text().splitlines()[1:] == ["ccp"], \
        "SEV-SNP: ccp is a module of the AMD tree's kernel"
    assert not (tmp_path / "amd-given" / MODULES_LOAD).exists(), "the Intel facts' plan: TDX, no IOMMUFD, no list"


def test_a_list_left_from_before_is_removed_and_without_one_no_module_is_called(tmp_path: Path) -> None:
    """Neither SEV-SNP nor IOMMUFD: nothing to load at boot. A list an earlier run wrote is removed; once the facts
    (cc_host_info's kernel.module_config_files) show none, kernel_module_config is not called at all."""
    root = intel_host(tmp_path / "host", cmdline="", tdx="N")
    make_tree(root, {"/" + MODULES_LOAD: "iommufd\n", "/etc/modules-load.d/other.conf": "loop\n"})
    settings = {"cc_host_root": str(root), "cc_host_technology": "none", "cc_host_iommufd": False}

    first = run_role(tmp_path, "cc_host", settings, REPORT + ("cc_host_module_files",), name="stale")

    assert first.rc == 0, first.output
    assert first.facts["cc_host_module_files"]["changed"] is True
    assert not (root / MODULES_LOAD).exists() and (root / "etc/modules-load.d/other.conf").exists()

    second = run_role(tmp_path, "cc_host", settings, REPORT + ("cc_host_module_files",), name="again")

    assert second.rc == 0 and second.recap["changed"] == 0, second.output
    assert second.facts["cc_host_module_files"].get("skipped") is True, "no list to remove, none to write"
