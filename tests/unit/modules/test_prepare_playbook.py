"""playbooks/prepare.yml on a fresh host: the IOMMU is off, so the kernel has left ACS off on every port.

The host is a tree (boot configuration of the lab VM without ``intel_iommu=on``,
plus sysfs with a root port and an NVIDIA GPU below it) that the roles read
through ``confidential_gpu_root``.  Without reboot consent, prepare must not
fail: the IOMMU argument goes to the boot configuration, VFIO binding and the
ACS check wait for the reboot, and the run says so.  A port without any ACS
capability is not something a reboot fixes, so it still fails the run.  The
lab scenario ``fresh`` runs the same playbook on a real kernel through the
reboot.

A VF that ``sriov_pfs`` creates in the same run may be named in
``vfio_addresses``: the VFs are created (the IOMMU is not needed for that)
before role pcie_acs checks the bridges above them, and bound to their driver
after the reboot (``tests/lib/fake_sriov.KernelStandIn`` plays the kernel's
side of ``sriov_numvfs``).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

from conftest import REPO

sys.path.insert(0, str(REPO / "tests" / "lib"))
from fake_sriov import LAB_PF, KernelStandIn, snapshot, sriov_pf  # noqa: E402
from fake_sysfs import ACS_ALL, ConfigBuilder, FakeFunction, build_tree  # noqa: E402
from prepare_run import DROPIN, debian_grub_host, dropin_linux, playbook, prepare, prepared_lab, recap_changed  # noqa: E402

LAB_GPU = "0000:02:00.0"

PORT, GPU = "0000:00:01.0", "0000:01:00.0"


def fresh_host(root: Path, port_has_acs: bool = True, acs_control: int = 0, iommu_groups: bool = False,
               gpu_driver: str = "nouveau", cmdline: str = "console=ttyS0,115200n8") -> Path:
    """Debian 12 with GRUB and an Intel CPU, a root port and an H100 below it.  By default the IOMMU is off
    (no groups) and the port's ACS control is 0, as the kernel leaves it without an IOMMU."""
    port = ConfigBuilder(0x8086, 0x0BE2, 0x060400, header_type=1).bridge_buses(0, 1, 1).express("root_port", 32.0, 16)
    if port_has_acs:
        port.acs(ACS_ALL, acs_control)
    gpu = ConfigBuilder(0x10DE, 0x2330, 0x030200, subsystem=(0x10DE, 0x16C1)).express("endpoint", 32.0, 16)
    build_tree(root, [
        FakeFunction(PORT, port.bytes(), driver="pcieport", numa_node="0", iommu_group=0 if iommu_groups else None),
        FakeFunction(GPU, gpu.bytes(), driver=gpu_driver, numa_node="0", iommu_group=1 if iommu_groups else None),
    ])
    return host_files(root, cmdline)


def host_files(root: Path, cmdline: str = "console=ttyS0,115200n8") -> Path:
    """Debian 12 with GRUB on an Intel CPU, booted with ``cmdline``."""
    return debian_grub_host(root, cmdline)


def test_fresh_host_waits_for_the_reboot_instead_of_failing(tmp_path: Path, bin_dir: Path) -> None:
    root = fresh_host(tmp_path / "root", gpu_driver="nvidia")
    proc = prepare(root, bin_dir, "-e", "kata_version=3.27.0", "-e", "gpu_cc_mode_cc=on")
    out = proc.stdout
    assert proc.returncode == 0, out + proc.stderr
    assert re.search(r"TASK \[Install and configure Kata Containers\][^\n]*\nskipping: \[localhost\]", out)
    assert re.search(r"TASK \[Set the GPUs' CC and PPCIe modes\][^\n]*\nskipping: \[localhost\]", out), \
        "gpu_cc_mode waits too: it would refuse a GPU on the nvidia driver, which vfio has not taken yet"
    assert "the GPUs' CC modes (role gpu_cc_mode, which acts on GPUs off the nvidia driver)" in out
    assert dropin_linux(root) == "console=ttyS0,115200n8 intel_iommu=on iommu=pt modprobe.blacklist=nouveau"
    assert "1 ACS violation(s) end at the next boot (the IOMMU is off now)" in out
    assert "%s (root_port 8086:0be2) above %s: ACS source_validation" % (PORT, GPU) in out
    assert "localhost: the IOMMU is off until the reboot, so binding devices to vfio-pci" in out
    assert "REBOOT PENDING on localhost" in out
    assert "the check waits until the changes are active (the caller reboots first (cc_host_wait_for_reboot))" in out
    assert re.search(r"TASK \[confidential_gpu\.host\.vfio : Bind the selected PCI functions[^\n]*\n"
                     r"skipping: \[localhost\]", out), "vfio waits"
    gpu_dir = (root / "sys/bus/pci/devices" / GPU).resolve()
    assert not (gpu_dir / "driver_override").exists(), "nothing was bound"
    assert (gpu_dir / "driver").resolve().name == "nvidia"

    again = prepare(root, bin_dir)
    assert again.returncode == 0 and recap_changed(again) == 0, again.stdout


# --------------------------------------------------------------------------
# A VF that the same run creates, on a host booted with the IOMMU off
# --------------------------------------------------------------------------

SRIOV_PORT, VF = "0000:00:10.0", "0000:01:00.1"


def fresh_sriov_host(root: Path) -> Path:
    """The lab's SR-IOV NVMe PF (01:00.0, no VFs yet) below a root port whose ACS the kernel left off (no IOMMU)."""
    port = ConfigBuilder(0x1B36, 0x000C, 0x060400, header_type=1).bridge_buses(0, 1, 1).express("root_port", 16.0, 4)
    port.acs(ACS_ALL, 0)
    build_tree(root, [FakeFunction(SRIOV_PORT, port.bytes(), driver="pcieport", numa_node="0"), sriov_pf(LAB_PF)])
    return host_files(root)


def vf_asked_for(*extra: str) -> tuple:
    return ("-e", json.dumps({"sriov_pfs": [{"address": LAB_PF, "num_vfs": 1, "vf_driver": "vfio-pci"}],
                              "vfio_addresses": [VF], "sriov_timeout": 10}), *extra)


def test_a_vf_created_in_the_same_run_is_checked_after_it_exists(tmp_path: Path, bin_dir: Path) -> None:
    """sriov_numvfs works without an IOMMU: the VF is created, its bridges' ACS is left for the reboot like the
    GPU's, and its binding to vfio-pci waits for the reboot (issue 17 point 10: pcie_acs ran before sriov and
    failed with "0000:01:00.1 not found in /sys/bus/pci/devices")."""
    root = fresh_sriov_host(tmp_path / "root")
    with KernelStandIn(root) as kernel:
        proc = prepare(root, bin_dir, *vf_asked_for())
    out = proc.stdout
    assert proc.returncode == 0, out + proc.stderr
    assert "not found in /sys/bus/pci/devices" not in out
    assert kernel.seen[LAB_PF] == [0, 1]
    assert (root / "sys/bus/pci/devices" / VF / "physfn").resolve().name == LAB_PF
    assert "0000:01:00.0 (nvme): 1 of 4 VFs 0000:01:00.1" in out
    assert "1 ACS violation(s) end at the next boot (the IOMMU is off now)" in out
    assert "%s (root_port 1b36:000c) above %s: ACS source_validation" % (SRIOV_PORT, VF) in out
    assert re.search(r"TASK \[confidential_gpu\.host\.vfio : Bind the selected PCI functions[^\n]*\n"
                     r"skipping: \[localhost\]", out), "the VF's binding (role vfio's call) waits for the IOMMU"
    assert not (root / "sys/bus/pci/devices" / VF / "driver").exists()
    assert not (root / "etc/driverctl.d").exists()
    assert (root / "etc/confidential-gpu/sriov.conf").read_text().splitlines()[-1] == "%s 1 0" % LAB_PF, \
        "the boot unit re-creates the VF, with autoprobe off for vfio-pci"
    assert "REBOOT PENDING on localhost" in out

    with KernelStandIn(root):
        again = prepare(root, bin_dir, *vf_asked_for())
    assert again.returncode == 0 and recap_changed(again) == 0, again.stdout


def test_check_mode_checks_acs_above_the_pf_of_a_vf_still_to_come(tmp_path: Path, bin_dir: Path) -> None:
    """In check mode the VF is not created; ACS is read above its PF, the bridges it will sit below."""
    root = fresh_sriov_host(tmp_path / "root")
    before = snapshot(root)
    proc = prepare(root, bin_dir, *vf_asked_for("--check", "--diff"))
    out = proc.stdout
    assert proc.returncode == 0, out + proc.stderr
    assert "check mode: %s does not exist yet; ACS is read above its PF %s" % (VF, LAB_PF) in out
    assert "%s (root_port 1b36:000c) above %s: ACS source_validation" % (SRIOV_PORT, LAB_PF) in out
    assert snapshot(root) == before


def test_a_port_without_acs_fails_before_the_reboot(tmp_path: Path, bin_dir: Path) -> None:
    """No boot makes a port grow an ACS capability: that violation is not left for later."""
    root = fresh_host(tmp_path / "root", port_has_acs=False)
    proc = prepare(root, bin_dir)
    assert proc.returncode != 0
    assert "localhost: 1 ACS violation(s) above %s: [1] %s (root_port 8086:0be2) above %s has no ACS capability" \
        % (GPU, PORT, GPU) in proc.stdout
    assert "ACS violation(s) end at the next boot" not in proc.stdout
    assert not (root / DROPIN).exists(), "the run stopped before kernel_args wrote anything"


def test_an_iommu_no_reboot_turns_on_fails_with_the_fix(tmp_path: Path, bin_dir: Path) -> None:
    """The boot configuration already asks for the IOMMU and runs with it, yet there is none: firmware has it off."""
    root = fresh_host(tmp_path / "root", cmdline="console=ttyS0,115200n8 intel_iommu=on iommu=pt "
                                                 "modprobe.blacklist=nouveau")
    proc = prepare(root, bin_dir)
    assert proc.returncode != 0
    assert "localhost runs without an IOMMU (" in proc.stdout
    assert "enable VT-d or AMD-Vi (IOMMU) in the firmware setup" in proc.stdout
    assert "REBOOT PENDING" not in proc.stdout and not (root / DROPIN).exists()


def test_acs_weakened_on_the_command_line_waits_for_the_reboot(tmp_path: Path, bin_dir: Path) -> None:
    """IOMMU on, but an earlier P2P setup left pci=disable_acs_redir= for the port: redirect is off there.
    kernel_args drops the argument, and the ACS check waits for the reboot instead of failing."""
    weakened = "console=ttyS0,115200n8 intel_iommu=on iommu=pt modprobe.blacklist=nouveau pci=disable_acs_redir=%s" \
        % PORT
    root = fresh_host(tmp_path / "root", acs_control=0x11, iommu_groups=True, gpu_driver="vfio-pci",
                      cmdline=weakened)
    proc = prepare(root, bin_dir)
    out = proc.stdout
    assert proc.returncode == 0, out + proc.stderr
    assert dropin_linux(root) == "console=ttyS0,115200n8 intel_iommu=on iommu=pt modprobe.blacklist=nouveau"
    assert "2 ACS violation(s) end at the next boot (ACS-weakening arguments are on the command line)" in out
    assert "ACS request_redirect, completion_redirect not enabled (capability 0x005f, control 0x0011)" in out
    assert "weakens ACS at boot: pci=disable_acs_redir=%s" % PORT in out
    assert "REBOOT PENDING on localhost" in out and "the IOMMU is off until the reboot" not in out


# --------------------------------------------------------------------------
# An SEV-SNP-capable EPYC host keeps SEV-SNP: no iommu=pt
# --------------------------------------------------------------------------

SNP_EPYC_CPUINFO = ("processor\t: 0\nvendor_id\t: AuthenticAMD\ncpu family\t: 25\nmodel\t\t: 17\n"
                    "model name\t: AMD EPYC 9454 48-Core Processor\nflags\t\t: fpu svm sme sev sev_es sev_snp\n\n")


def snp_epyc_host(root: Path, cmdline: str) -> Path:
    """EPYC Genoa with SEV-SNP on in the firmware, AMD-Vi (IVRS) on, the GPU on vfio-pci, booted with
    ``cmdline``; with ``iommu=pt`` there the kernel has turned SEV-SNP off, so kvm_amd says sev_snp=N."""
    fresh_host(root, acs_control=0x1D, iommu_groups=True, gpu_driver="vfio-pci", cmdline=cmdline)
    (root / "proc/cpuinfo").write_text(SNP_EPYC_CPUINFO)
    for table in ("APIC", "FACP", "IVRS"):
        (root / "sys/firmware/acpi/tables").mkdir(parents=True, exist_ok=True)
        (root / "sys/firmware/acpi/tables" / table).write_text("")
    snp_on = "iommu=pt" not in cmdline
    params = root / "sys/module/kvm_amd/parameters"
    params.mkdir(parents=True)
    for name in ("sev", "sev_es", "sev_snp"):
        (params / name).write_text("Y\n" if snp_on or name != "sev_snp" else "N\n")
    for group in (0, 1):
        (root / "sys/kernel/iommu_groups" / str(group) / "type").write_text("identity\n" if not snp_on else "DMA-FQ\n")
    (root / "dev").mkdir(exist_ok=True)
    (root / "dev/sev").write_text("")
    return root


def user_prepare(root: Path, bin_dir: Path, *extra: str) -> subprocess.CompletedProcess:
    """prepare.yml as a user runs it: cc_host_technology auto (the CPU vendor's technology), kernel_args defaults."""
    return playbook(REPO / "playbooks/prepare.yml", "-e", "confidential_gpu_root=%s" % root,
                    "-e", json.dumps({"cc_host_iommufd": False, "kernel_args_command_path": [str(bin_dir)]}), *extra)


def test_prepare_takes_iommu_pt_off_an_snp_host(tmp_path: Path, bin_dir: Path) -> None:
    """Linux turns SEV-SNP off while the IOMMU is in passthrough mode (drivers/iommu/amd/init.c
    iommu_snp_enable(), tests/fixtures/linux-mainline): on an EPYC host prepare must remove iommu=pt, in
    check mode say so and change nothing, and never add it."""
    root = snp_epyc_host(tmp_path / "root", "console=ttyS0,115200n8 iommu=pt")
    grub_before = (root / "etc/default/grub").read_text()

    check = user_prepare(root, bin_dir, "--check", "--diff")
    assert check.returncode == 0, check.stdout + check.stderr
    assert "configured: console=ttyS0,115200n8 modprobe.blacklist=nouveau" in check.stdout
    assert "SEV-SNP is off because the IOMMU is in passthrough mode (iommu=pt)" in check.stdout
    assert not (root / DROPIN).exists() and (root / "etc/default/grub").read_text() == grub_before

    real = user_prepare(root, bin_dir)
    assert real.returncode == 0, real.stdout + real.stderr
    assert dropin_linux(root) == "console=ttyS0,115200n8 modprobe.blacklist=nouveau"
    assert "REBOOT PENDING on localhost" in real.stdout


def test_prepare_adds_no_iommu_pt_to_a_clean_snp_host(tmp_path: Path, bin_dir: Path) -> None:
    root = snp_epyc_host(tmp_path / "root", "console=ttyS0,115200n8 modprobe.blacklist=nouveau")
    proc = user_prepare(root, bin_dir)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "iommu=pt" not in (root / DROPIN).read_text() if (root / DROPIN).exists() else True
    assert "configured: console=ttyS0,115200n8 modprobe.blacklist=nouveau" in proc.stdout
    assert "REBOOT PENDING" not in proc.stdout


def test_prepare_on_a_tdx_host_keeps_iommu_pt(tmp_path: Path, bin_dir: Path) -> None:
    """An Intel IOMMU never carries SEV-SNP: a TDX host gets intel_iommu=on iommu=pt as docs/boot.md says, and
    role cc_host's TDX arguments after the blacklist."""
    root = fresh_host(tmp_path / "root", acs_control=0x1D, iommu_groups=True, gpu_driver="vfio-pci",
                      cmdline="console=ttyS0,115200n8 intel_iommu=on")
    (root / "proc/cpuinfo").write_text(
        "processor\t: 0\nvendor_id\t: GenuineIntel\ncpu family\t: 6\nmodel\t\t: 143\n"
        "model name\t: Intel(R) Xeon(R) Platinum 8480+\nflags\t\t: fpu vmx tdx_host_platform\n\n")
    for table in ("APIC", "FACP", "DMAR"):
        (root / "sys/firmware/acpi/tables").mkdir(parents=True, exist_ok=True)
        (root / "sys/firmware/acpi/tables" / table).write_text("")
    (root / "sys/module/kvm_intel/parameters").mkdir(parents=True)
    (root / "sys/module/kvm_intel/parameters/tdx").write_text("N\n")

    proc = user_prepare(root, bin_dir)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert dropin_linux(root) == ("console=ttyS0,115200n8 intel_iommu=on iommu=pt modprobe.blacklist=nouveau "
                                  "kvm_intel.tdx=1 nohibernate")


# --------------------------------------------------------------------------
# Check mode on a host with the IOMMU on, and a VF in vfio_addresses that the run would create
# --------------------------------------------------------------------------

def test_check_mode_leaves_a_vf_still_to_come_out_of_the_binding(tmp_path: Path, bin_dir: Path) -> None:
    """Role sriov creates no VF in check mode, so role vfio cannot find it: it says so and checks the rest,
    instead of failing with "no PCI function 0000:01:00.1 on this host"."""
    root = prepared_lab(tmp_path / "root", num_vfs=0)
    before = snapshot(root)
    variables = {"cc_host_iommufd": False, "kernel_args_iommu_passthrough": "on", "vfio_initramfs_command": "true",
                 "vfio_addresses": [LAB_GPU, VF], "sriov_pfs": [{"address": LAB_PF, "num_vfs": 1}],
                 "pcie_acs_profile": "report"}
    proc = prepare(root, bin_dir, "-e", json.dumps(variables), "--check", "--diff")
    out = proc.stdout
    assert proc.returncode == 0, out + proc.stderr
    assert "check mode: %s does not exist yet (role sriov would create it below its PF %s)" % (VF, LAB_PF) in out
    assert "no PCI function %s" % VF not in out
    assert re.search(r"none +%s 1234:1111 group=\d+ vfio-pci -> vfio-pci" % LAB_GPU, out), out
    assert snapshot(root) == before
