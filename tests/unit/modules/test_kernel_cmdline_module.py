"""kernel_cmdline run as a process, the way a host runs it, and the roles and playbook that drive it.

Boot tools are the stand-ins of tests/lib/standins (see the module_utils tests);
the module finds them through its command_path option, so no real boot tool of
this machine can run.  The playbook runs use the local connection, on which
ansible.builtin.reboot refuses to act ("would reboot the control node"): the
consent path is shown to reach the reboot without rebooting anything.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from conftest import REPO

sys.path.insert(0, str(REPO / "tests" / "lib"))
from prepare_run import CPUINFO, DROPIN, dropin_linux, playbook, prepare, recap_changed  # noqa: E402
from tree_state import tree_state as snapshot  # noqa: E402

MODULE = "kernel_cmdline"
STANDINS = REPO / "tests" / "lib" / "standins"
LAB_GRUB = ('GRUB_DEFAULT=0\nGRUB_CMDLINE_LINUX_DEFAULT=""\n'
            'GRUB_CMDLINE_LINUX="console=ttyS0,115200n8 intel_iommu=on iommu=pt"\n')
LAB_PROC = "BOOT_IMAGE=/boot/vmlinuz-6.1.0-28-amd64 root=UUID=0a1b ro console=ttyS0,115200n8 intel_iommu=on iommu=pt\n"


def lab_vm(root: Path, vendor: str = "GenuineIntel", acpi_tables: tuple = (), grub: str = LAB_GRUB) -> Path:
    """The lab VM as the boot configuration sees it: Debian 12, GRUB, the lab's GRUB_CMDLINE_LINUX."""
    files = {"etc/os-release": 'ID=debian\nVERSION_ID="12"\n', "etc/default/grub": grub, "proc/cmdline": LAB_PROC,
             "proc/cpuinfo": CPUINFO % vendor, "boot/grub/grub.cfg": "# installed\n"}
    files.update({"sys/firmware/acpi/tables/" + name: "" for name in ("APIC", "FACP") + tuple(acpi_tables)})
    for path, content in files.items():
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_text(content)
    (root / "sys/kernel/iommu_groups/0/devices").mkdir(parents=True)  # the IOMMU is on, as intel_iommu=on says
    return root


def args(root: Path, bin_dir: Path, **extra) -> dict:
    return dict({"root": str(root), "command_path": [str(bin_dir)]}, **extra)


# --------------------------------------------------------------------------
# The module
# --------------------------------------------------------------------------

def test_module_check_and_diff_mode(run_module, tmp_path: Path, bin_dir: Path) -> None:
    root = lab_vm(tmp_path / "root")
    before = snapshot(root)
    result = run_module(MODULE, args(root, bin_dir, present=["modprobe.blacklist=nouveau"], absent=["iommu=pt"],
                                     _ansible_check_mode=True, _ansible_diff=True))

    assert result["rc"] == 0 and result["changed"] is True, result
    assert snapshot(root) == before, "check mode writes nothing and runs no changing command"
    assert result["commands"] == [["update-grub"]] and result["files"] == ["/" + DROPIN]
    diff = result["diff"][0]
    assert diff["before"] == "" and diff["after_header"] == "/" + DROPIN
    assert "GRUB_CMDLINE_LINUX='console=ttyS0,115200n8 intel_iommu=on modprobe.blacklist=nouveau'" in diff["after"]
    assert result["configured"] == ["console=ttyS0,115200n8", "intel_iommu=on", "modprobe.blacklist=nouveau"]
    assert result["active"][:3] == ["BOOT_IMAGE=/boot/vmlinuz-6.1.0-28-amd64", "root=UUID=0a1b", "ro"]
    assert result["reboot_required"] is True


def test_module_applies_then_is_idempotent_without_diff(run_module, tmp_path: Path, bin_dir: Path) -> None:
    root = lab_vm(tmp_path / "root")
    first = run_module(MODULE, args(root, bin_dir, present=["modprobe.blacklist=nouveau"]))
    assert first["rc"] == 0 and first["changed"] is True and "diff" not in first
    assert "modprobe.blacklist=nouveau" in (root / "boot/grub/grub.cfg").read_text()
    second = run_module(MODULE, args(root, bin_dir, present=["modprobe.blacklist=nouveau"]))
    assert second["changed"] is False and second["commands"] == [] and second["reboot_required"] is True


@pytest.mark.parametrize(("params", "message"), [
    ({"present": ["intel_iommu=on", "intel_iommu=off"]}, "conflicting values for intel_iommu: intel_iommu=on and "
                                                         "intel_iommu=off"),
    ({"present": ["intel_iommu=on iommu=pt"]}, "is not one kernel argument"),
    ({"present": ['vfio-pci.ids="10de:2330']}, "unbalanced double quote"),
    ({"absent": ["=pt"]}, "absent: '=pt' has no valid key"),
    ({"present": ["iommu=pt"], "absent": ["iommu"]}, "iommu=pt is both present and absent"),
    ({"present": ["iommu=pt"], "backend": "lilo"}, "value of backend must be one of: auto, grub, grubby, "
                                                   "systemd_boot, rpm_ostree, got: lilo"),
    ({"present": ["iommu=pt"], "grub_dropin_name": "confidential-gpu"}, "give a file name ending in .cfg"),
    ({"absent": ["root"]}, "refusing to remove"),
    # x86 COMMAND_LINE_SIZE is 2048 (arch/x86/include/asm/setup.h): the kernel cuts a longer line
    ({"present": ["x=" + "a" * 5000]}, "x86 Linux keeps only 2047 (COMMAND_LINE_SIZE 2048"),
    ({"present": ["opt%d=%s" % (n, "b" * 100) for n in range(20)]}, "x86 Linux keeps only 2047"),
])
def test_module_bad_input_fails_clearly_and_writes_nothing(run_module, tmp_path: Path, bin_dir: Path,
                                                           params: dict, message: str) -> None:
    root = lab_vm(tmp_path / "root")
    (root / "etc/default/grub").write_text(LAB_GRUB.replace('LINUX="', 'LINUX="root=/dev/vda1 '))
    before = snapshot(root)
    result = run_module(MODULE, args(root, bin_dir, **params))
    assert result["rc"] == 1 and result["failed"] is True
    assert message in result["msg"], result["msg"]
    assert snapshot(root) == before


def test_module_refuses_a_tree_without_command_path(run_module, tmp_path: Path) -> None:
    root = lab_vm(tmp_path / "root")
    result = run_module(MODULE, {"root": str(root), "present": ["iommu=pt"]})
    assert result["failed"] is True and "give command_path too" in result["msg"]
    assert not (root / DROPIN).exists()


def test_module_unknown_boot_setup(run_module, tmp_path: Path, bin_dir: Path) -> None:
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    (root / "etc/os-release").write_text("ID=opensuse-leap\nID_LIKE=\"suse opensuse\"\n")
    result = run_module(MODULE, args(root, bin_dir, present=["iommu=pt"]))
    assert result["failed"] is True
    assert "unknown boot setup" in result["msg"] and "opensuse-leap" in result["msg"]


def test_module_without_proc_cmdline_reports_active_null(run_module, tmp_path: Path, bin_dir: Path) -> None:
    root = lab_vm(tmp_path / "root")
    (root / "proc/cmdline").unlink()
    result = run_module(MODULE, args(root, bin_dir, present=["iommu=pt"]))
    assert result["active"] is None and result["pending"] == []
    assert result["changed"] is False and result["reboot_required"] is False
    changed = run_module(MODULE, args(root, bin_dir, present=["quiet"]))
    assert changed["changed"] is True and changed["reboot_required"] is True


# --------------------------------------------------------------------------
# The kernel_args and reboot roles, playbooks/prepare.yml
# --------------------------------------------------------------------------

def test_prepare_without_consent_reports_the_pending_reboot(tmp_path: Path, bin_dir: Path) -> None:
    root = lab_vm(tmp_path / "root")
    proc = prepare(root, bin_dir)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert dropin_linux(root) == "console=ttyS0,115200n8 intel_iommu=on iommu=pt modprobe.blacklist=nouveau"
    assert "REBOOT PENDING on localhost" in proc.stdout and "modprobe.blacklist" in proc.stdout
    assert "Reboot pending on: localhost (rerun with -e reboot_consent=true)" in proc.stdout
    assert "TASK [confidential_gpu.host.reboot : Reboot]" in proc.stdout
    assert "would reboot the control node" not in proc.stdout

    again = prepare(root, bin_dir)
    assert again.returncode == 0 and recap_changed(again) == 0, "no change and no reboot when nothing changed"
    (root / "proc/cmdline").write_text("BOOT_IMAGE=/vmlinuz root=UUID=0a1b ro %s\n" % dropin_linux(root))
    settled = prepare(root, bin_dir, "-e", "reboot_consent=true")
    assert settled.returncode == 0 and "No reboot pending." in settled.stdout
    assert "would reboot the control node" not in settled.stdout, "no reboot when the configuration is active"


def test_prepare_fails_without_consent_when_asked(tmp_path: Path, bin_dir: Path) -> None:
    root = lab_vm(tmp_path / "root")
    proc = prepare(root, bin_dir, "-e", "reboot_fail_without_consent=true")
    assert proc.returncode != 0
    assert "localhost needs a reboot to apply its kernel arguments (modprobe.blacklist) and reboot_consent is " \
           "false" in proc.stdout


def test_prepare_with_consent_goes_to_the_reboot(tmp_path: Path, bin_dir: Path) -> None:
    root = lab_vm(tmp_path / "root")
    proc = prepare(root, bin_dir, "-e", "reboot_consent=true")
    assert proc.returncode != 0
    assert "Running ansible.builtin.reboot with local connection would reboot the control node" in proc.stdout
    assert "REBOOT PENDING" not in proc.stdout
    assert "TASK [confidential_gpu.host.reboot : Drain the Kubernetes node]" in proc.stdout
    assert "k8s_drain" not in proc.stdout, "no drain without a node name"


def test_kernel_args_composes_vendor_options_and_contributions(tmp_path: Path, bin_dir: Path) -> None:
    root = lab_vm(tmp_path / "root", vendor="AuthenticAMD")
    proc = prepare(root, bin_dir, "-e", json.dumps({
        "kernel_args_blacklist_nvidia": True, "kernel_args_vfio_pci_ids": ["10de:2330", "10de:22a3"],
        # what roles hugepages and pcie_acs contribute, given here in their place (an extra variable wins over
        # their set_fact; in prepare.yml on this host neither contributes anything)
        "confidential_gpu_kernel_args_contributions": {
            "pcie_acs": {"present": [], "absent": ["intel_iommu"], "reason": "test"},
            "hugepages": {"present": ["hugepagesz=1G", "hugepages=4"], "absent": [], "reason": "test"}},
        "kernel_args_extra": ["vfio-pci.disable_idle_d3=1"],
        # a string, as an AWX survey sends it: iommu=pt also on this AMD host, which could run SEV-SNP
        "kernel_args_iommu_passthrough": "true"}))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Linux turns SEV-SNP off at boot while the IOMMU is in passthrough mode" in proc.stdout
    assert dropin_linux(root) == ("console=ttyS0,115200n8 iommu=pt modprobe.blacklist=nouveau,nvidia "
                                  "vfio-pci.ids=10de:2330,10de:22a3 hugepagesz=1G hugepages=4 "
                                  "vfio-pci.disable_idle_d3=1")


def test_kernel_args_takes_no_variable_because_of_its_name(tmp_path: Path, bin_dir: Path) -> None:
    """Issue 16 point 5: an inventory variable that ends in _kernel_args (or _kernel_args_absent) once reached the
    boot configuration through the name bus; only confidential_gpu_kernel_args_contributions does now."""
    root = lab_vm(tmp_path / "root")
    inventory = tmp_path / "inventory.yml"
    inventory.write_text(json.dumps({"all": {"hosts": {"localhost": {
        "ansible_connection": "local", "ansible_python_interpreter": "{{ ansible_playbook_python }}",
        "site_kernel_args": ["init=/bin/sh"], "site_kernel_args_absent": ["intel_iommu"]}}}}))
    proc = prepare(root, bin_dir, "-i", str(inventory))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert dropin_linux(root) == "console=ttyS0,115200n8 intel_iommu=on iommu=pt modprobe.blacklist=nouveau"


@pytest.mark.parametrize("vendor, tables, grub_iommu, expected", [
    # AMD-Vi: Linux has it on by default, so only what switches it off goes (amd_iommu=on is no option of it);
    # a family-0x19 AMD CPU may run SEV-SNP, which iommu=pt turns off (see test_prepare_playbook's SNP host)
    ("AuthenticAMD", ("IVRS",), "amd_iommu=off iommu=off", "console=ttyS0,115200n8"),
    # the lab VM: QEMU's TCG CPU reports AMD beside an emulated Intel VT-d, whose DMAR table decides
    ("AuthenticAMD", ("DMAR",), "intel_iommu=off", "console=ttyS0,115200n8 intel_iommu=on iommu=pt"),
    ("GenuineIntel", ("DMAR",), "iommu=off", "console=ttyS0,115200n8 intel_iommu=on iommu=pt"),
    # no IOMMU table (firmware with it off, or no ACPI): the CPU vendor decides
    ("GenuineIntel", (), "", "console=ttyS0,115200n8 intel_iommu=on iommu=pt"),
])
def test_kernel_args_turns_on_the_iommu_the_firmware_describes(tmp_path: Path, bin_dir: Path, vendor: str,
                                                               tables: tuple, grub_iommu: str, expected: str) -> None:
    grub = 'GRUB_DEFAULT=0\nGRUB_CMDLINE_LINUX="console=ttyS0,115200n8 %s"\n' % grub_iommu
    root = lab_vm(tmp_path / "root", vendor=vendor, acpi_tables=tables, grub=grub)
    proc = prepare(root, bin_dir, "-e", json.dumps({"kernel_args_blacklist_nouveau": False}))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert dropin_linux(root) == expected


READ_HOST_TASK = "TASK [confidential_gpu.host.kernel_args : Read the CPU vendor and the IOMMU's ACPI table]"


def test_kernel_args_reads_the_host_itself_unless_given_its_facts(tmp_path: Path, bin_dir: Path) -> None:
    """Alone, the role reads cc_host_info; prepare.yml hands it discovery's result instead (read once a run)."""
    sys.path.insert(0, str(REPO / "tests" / "lib"))
    from role_play import run_role  # pylint: disable=import-outside-toplevel

    base = {"kernel_args_command_path": [str(bin_dir)], "kernel_args_blacklist_nouveau": False}
    grub = 'GRUB_DEFAULT=0\nGRUB_CMDLINE_LINUX="console=ttyS0,115200n8"\n'
    alone_root = lab_vm(tmp_path / "alone", vendor="GenuineIntel", acpi_tables=("DMAR",), grub=grub)
    alone = run_role(tmp_path, "kernel_args", dict(base, kernel_args_root=str(alone_root)), name="alone")
    given_root = lab_vm(tmp_path / "given", vendor="GenuineIntel", acpi_tables=("DMAR",), grub=grub)
    # an EPYC Rome (no SEV-SNP): iommu=pt stays on hosts that cannot run SEV-SNP guests
    amd = {"cpu": {"vendor": "amd", "vendor_id": "AuthenticAMD", "cc_support": {"snp": False}},
           "iommu": {"acpi_table": "IVRS"}}
    given = run_role(tmp_path, "kernel_args", dict(base, kernel_args_root=str(given_root), kernel_args_host_facts=amd),
                     name="given")

    assert alone.rc == 0 and given.rc == 0, alone.output + given.output
    assert alone.output.split(READ_HOST_TASK)[1].split("\n")[1].startswith("ok: [localhost]")
    assert dropin_linux(alone_root) == "console=ttyS0,115200n8 intel_iommu=on iommu=pt"
    assert given.output.split(READ_HOST_TASK)[1].split("\n")[1].startswith("skipping: [localhost]")
    assert dropin_linux(given_root) == "console=ttyS0,115200n8 iommu=pt", "the facts given decide: AMD-Vi"


def test_kernel_args_refuses_tdx_on_amd(tmp_path: Path, bin_dir: Path) -> None:
    root = lab_vm(tmp_path / "root", vendor="AuthenticAMD")
    proc = prepare(root, bin_dir, "-e", "kernel_args_tdx=true")
    assert proc.returncode != 0
    assert "has a CPU of vendor amd (AuthenticAMD): TDX needs an Intel CPU" in proc.stdout
    assert not (root / DROPIN).exists()


VERIFY_PLAY = """---
- name: Verify a host as the reboot role does after rebooting
  hosts: localhost
  gather_facts: false
  tasks:
    - name: Run the reboot role's check
      ansible.builtin.include_role:
        name: confidential_gpu.host.reboot
        tasks_from: verify.yml
"""


def test_reboot_verification_passes_or_fails_loudly(tmp_path: Path, bin_dir: Path) -> None:
    root = lab_vm(tmp_path / "root")
    play = tmp_path / "verify.yml"
    play.write_text(VERIFY_PLAY)
    verify_args = json.dumps({"reboot_verify_args": {"present": ["modprobe.blacklist=nouveau"], "root": str(root),
                                                     "command_path": [str(bin_dir)]}})
    assert prepare(root, bin_dir).returncode == 0

    failed = playbook(play, "-e", verify_args)
    assert failed.returncode != 0
    assert "localhost rebooted but does not run with its configured kernel arguments (backend grub)" in failed.stdout
    assert '{"key": "modprobe.blacklist", "configured": ["nouveau"], "active": []}' in failed.stdout
    assert "Not retrying" in failed.stdout

    (root / "proc/cmdline").write_text("BOOT_IMAGE=/vmlinuz root=UUID=0a1b ro %s\n" % dropin_linux(root))
    passed = playbook(play, "-e", verify_args)
    assert passed.returncode == 0, passed.stdout
    assert "localhost runs with its configured kernel arguments" in passed.stdout


def test_prepare_takes_booleans_as_command_line_strings(tmp_path: Path, bin_dir: Path) -> None:
    """-e name=false passes the string 'false'; the roles must read it as false."""
    root = lab_vm(tmp_path / "root")
    proc = prepare(root, bin_dir, "-e", "kernel_args_blacklist_nouveau=false", "-e", "cc_host_assert=false")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    # without the blacklist the image's own arguments are all that is asked for: nothing to write
    assert not (root / DROPIN).exists() and "No reboot pending." in proc.stdout
    assert "modprobe.blacklist" not in proc.stdout


@pytest.mark.parametrize("ids", [["zzzz:2330"], ["10de:*"], ["10de:2330", "10de"], ["10de:2330,10de:22a3"],
                                 ["10de:2330 quiet"]])
def test_kernel_args_refuses_vfio_pci_ids_that_vfio_pci_cannot_read(tmp_path: Path, bin_dir: Path, ids: list) -> None:
    """vfio-pci reads each entry of vfio-pci.ids with sscanf("%x:%x:%x:%x:%x:%x") (drivers/vfio/pci/vfio_pci.c):
    anything else would reach GRUB as given and be dropped at boot."""
    root = lab_vm(tmp_path / "root")
    before = snapshot(root)
    proc = prepare(root, bin_dir, "-e", json.dumps({"kernel_args_vfio_pci_ids": ids}))
    assert proc.returncode != 0
    assert "kernel_args_vfio_pci_ids holds" in proc.stdout and "like 10de:2330; nothing was changed" in proc.stdout
    assert snapshot(root) == before


def test_kernel_args_takes_the_long_vfio_pci_id_forms(tmp_path: Path, bin_dir: Path) -> None:
    root = lab_vm(tmp_path / "root")
    proc = prepare(root, bin_dir, "-e", json.dumps({"kernel_args_vfio_pci_ids": ["10de:2330", "10DE:22a3:ffffffff"]}))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "vfio-pci.ids=10de:2330,10DE:22a3:ffffffff" in dropin_linux(root)
