"""kernel_cmdline: the argument model, and every backend on fake roots.

The backends run real processes: /bin/sh sources GRUB settings, and the boot
tools are the stand-ins in tests/lib/standins (grubby and rpm-ostree are not in
Debian; update-grub, grub-mkconfig and kernel-install would change this machine).
Each stand-in says at its top which documentation it follows; each logs its
arguments to <root>/.standin-calls, which the tests read.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Dict, List

import pytest
from conftest import REPO

from ansible_collections.confidential_gpu.host.plugins.module_utils.boot_backend import Runner
from ansible_collections.confidential_gpu.host.plugins.module_utils.kernel_args_model import (
    KernelCmdlineError,
    apply_request,
    build_request,
    join_args,
    pending_changes,
    satisfied,
    split_cmdline,
)
from ansible_collections.confidential_gpu.host.plugins.module_utils.kernel_cmdline import (
    detect_backend,
    make_backend,
    manage,
)
from ansible_collections.confidential_gpu.host.plugins.module_utils.sysfs import HostRoot

sys.path.insert(0, str(REPO / "tests" / "lib"))
from tree_state import tree_state  # noqa: E402

STANDINS = REPO / "tests" / "lib" / "standins"
DROPIN = "etc/default/grub.d/99-confidential-gpu.cfg"

# The lab VM's /etc/default/grub (Debian 12, GRUB on a serial console).
LAB_GRUB = """GRUB_DEFAULT=0
GRUB_TIMEOUT=0
GRUB_DISTRIBUTOR=`lsb_release -i -s 2> /dev/null || echo Debian`
GRUB_TERMINAL="serial console"
GRUB_CMDLINE_LINUX_DEFAULT=""
GRUB_CMDLINE_LINUX="console=ttyS0,115200n8 intel_iommu=on iommu=pt"
"""
LAB_PROC = "BOOT_IMAGE=/boot/vmlinuz-6.1.0-28-amd64 root=UUID=0a1b ro console=ttyS0,115200n8 intel_iommu=on iommu=pt\n"


# --------------------------------------------------------------------------
# Trees and runs
# --------------------------------------------------------------------------

def make_tree(root: Path, files: Dict[str, str]) -> Path:
    for host_path, content in files.items():
        path = root / host_path.lstrip("/")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content)
    return root


def debian_vm(root: Path, grub: str = LAB_GRUB, proc: str = LAB_PROC) -> Path:
    return make_tree(root, {"/etc/os-release": 'ID=debian\nVERSION_ID="12"\n', "/etc/default/grub": grub,
                            "/proc/cmdline": proc, "/boot/grub/grub.cfg": "# generated at install\n"})


BLS_OPTIONS = ("root=/dev/mapper/rhel-root ro crashkernel=1G-4G:192M,4G-64G:256M resume=/dev/mapper/rhel-swap "
               "rd.lvm.lv=rhel/root $tuned_params")
MID = "0123456789abcdef0123456789abcdef"


def bls_entry(version: str, options: str) -> str:
    return ("title Red Hat Enterprise Linux (%s) 9.4 (Plow)\nversion %s\nlinux /vmlinuz-%s\n"
            "initrd /initramfs-%s.img $tuned_initrd\noptions %s\ngrub_users $grub_users\n"
            "grub_arg --unrestricted\ngrub_class rhel\n" % (version, version, version, version, options))


def rhel9(root: Path, options: str = BLS_OPTIONS) -> Path:
    return make_tree(root, {
        "/etc/os-release": 'NAME="Red Hat Enterprise Linux"\nID="rhel"\nID_LIKE="fedora"\nVERSION_ID="9.4"\n',
        "/boot/loader/entries/%s-5.14.0-427.13.1.el9_4.x86_64.conf" % MID: bls_entry("5.14.0-427.13.1.el9_4.x86_64",
                                                                                     options),
        "/boot/loader/entries/%s-5.14.0-362.8.1.el9_3.x86_64.conf" % MID: bls_entry("5.14.0-362.8.1.el9_3.x86_64",
                                                                                    options),
        "/boot/grub2/grubenv": "# GRUB Environment Block\nsaved_entry=%s-5.14.0-427.13.1.el9_4.x86_64\n" % MID,
        "/proc/cmdline": "BOOT_IMAGE=(hd0,gpt2)/vmlinuz-5.14.0-427.13.1.el9_4.x86_64 %s\n"
                         % options.replace(" $tuned_params", ""),
    })


def sd_entry(version: str, options: str) -> str:
    return ("title      Ubuntu 24.04\nversion    %s\nmachine-id %s\noptions    %s\nlinux      /%s/%s/linux\n"
            "initrd     /%s/%s/initrd\n" % (version, MID, options, MID, version, MID, version))


def systemd_boot(root: Path, cmdline: str = "root=UUID=1234 rw quiet") -> Path:
    files = {"/etc/os-release": "ID=ubuntu\nID_LIKE=debian\n", "/etc/machine-id": MID + "\n",
             "/boot/efi/loader/loader.conf": "timeout 3\n", "/etc/kernel/cmdline": cmdline + "\n",
             "/proc/cmdline": "initrd=\\%s\\6.8.0-45-generic\\initrd %s\n" % (MID, cmdline)}
    for version in ("6.8.0-45-generic", "6.8.0-47-generic"):
        files["/usr/lib/modules/%s/vmlinuz" % version] = "kernel image\n"
        files["/boot/efi/loader/entries/%s-%s.conf" % (MID, version)] = sd_entry(version, cmdline)
    return make_tree(root, files)


OSTREE_KARGS = "rhgb quiet root=UUID=7d1c rw ostree=/ostree/boot.1/fedora/4b1f/0 hugepages=4"


def ostree_host(root: Path) -> Path:
    return make_tree(root, {"/etc/os-release": "ID=fedora\nVARIANT_ID=coreos\n", "/run/ostree-booted": "",
                            "/.standin-rpm-ostree-kargs": OSTREE_KARGS + "\n",
                            "/proc/cmdline": "BOOT_IMAGE=(hd0,gpt3)/ostree/fedora-4b1f/vmlinuz %s\n" % OSTREE_KARGS})


def run(root: Path, bin_dir: Path, present=(), absent=(), backend: str = "auto", check: bool = False,
        allow_removing=(), dropin: str = "99-confidential-gpu.cfg") -> dict:
    host = HostRoot(str(root))
    runner = Runner([str(bin_dir)], check, host.root)
    request = build_request(list(present), list(absent), allow_removing=list(allow_removing))
    return manage(host, runner, backend, request, dropin)


def calls(root: Path) -> List[dict]:
    log = root / ".standin-calls"
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


def changing_calls(root: Path) -> List[List[str]]:
    """Calls that change something (not grubby --info / --default-index, not a bare rpm-ostree kargs)."""
    out = []
    for call in calls(root):
        argv = call["argv"]
        if call["tool"] == "grubby" and not any(a.startswith("--update-kernel") for a in argv):
            continue
        if call["tool"] == "rpm-ostree" and argv == ["kargs"]:
            continue
        out.append([call["tool"]] + argv)
    return out


def snapshot(root: Path) -> Dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and p.name != ".standin-calls"}


def grub_linux_lines(root: Path) -> List[str]:
    return [line.strip() for line in (root / "boot/grub/grub.cfg").read_text().splitlines()
            if line.strip().startswith("linux")]


def keys_values(text: str) -> List[tuple]:
    return [(a.key, a.value) for a in split_cmdline(text)[0]]


# --------------------------------------------------------------------------
# The model
# --------------------------------------------------------------------------

def test_split_like_the_kernel() -> None:
    args, init = split_cmdline('ro "foo=a b" bar="x;y" hugepagesz=1G quiet= -- single emergency')
    assert [(a.key, a.value, a.text) for a in args] == [
        ("ro", None, "ro"), ("foo", "a b", '"foo=a b"'), ("bar", "x;y", 'bar="x;y"'),
        ("hugepagesz", "1G", "hugepagesz=1G"), ("quiet", "", "quiet=")]
    assert init == "single emergency"


def test_request_items_are_rendered_canonically() -> None:
    request = build_request(['"x=a b"', 'dyndbg="file a.c +p; file b.c +p"', "foo=a;b", "quiet", "k="], [])
    assert [a.text for a in request.present] == ['x="a b"', 'dyndbg="file a.c +p; file b.c +p"', 'foo="a;b"',
                                                 "quiet", "k="]
    assert [a.value for a in request.present] == ["a b", "file a.c +p; file b.c +p", "a;b", None, ""]


@pytest.mark.parametrize(("item", "message"), [
    ("", "empty argument"),
    ("intel_iommu=on iommu=pt", "is not one kernel argument"),
    ("--", "is not one kernel argument"),
    ("=on", "has no valid key"),
    ("ke$y=1", "has no valid key"),
    ('foo="a b', "unbalanced double quote"),
    ("memmap=12G$4G", "holds a quote, backslash, '$'"),
    ("foo=a\\b", "holds a quote, backslash, '$'"),
    ('foo=a"b"', "holds a quote, backslash, '$'"),
])
def test_malformed_argument_is_refused(item: str, message: str) -> None:
    with pytest.raises(KernelCmdlineError, match="present: .*" + __import__("re").escape(message)):
        build_request([item], [])


@pytest.mark.parametrize("pair", [("intel_iommu=on", "intel_iommu=off"), ("intel_iommu=on", "intel-iommu=on,sm_on"),
                                  ("quiet", "quiet=1")])
def test_conflicting_values_for_one_key_are_refused(pair) -> None:
    with pytest.raises(KernelCmdlineError, match="conflicting values for intel.iommu|conflicting values for quiet"):
        build_request(list(pair), [])


def test_multi_value_keys_repeat_and_exact_duplicates_collapse() -> None:
    request = build_request(["iommu=pt", "hugepagesz=1G", "hugepages=4", "hugepagesz=2M", "hugepages=4", "iommu=pt"],
                            [])
    assert [a.text for a in request.present] == ["iommu=pt", "hugepagesz=1G", "hugepages=4", "hugepagesz=2M",
                                                 "hugepages=4"]
    assert [u.names for u in request.units] == [("iommu",), ("hugepagesz", "hugepages")]


def test_present_and_absent_together_is_refused() -> None:
    with pytest.raises(KernelCmdlineError, match="iommu=pt is both present and absent"):
        build_request(["iommu=pt"], ["iommu"])
    with pytest.raises(KernelCmdlineError, match="absent: .*not one kernel argument"):
        build_request([], ["a b"])


def test_values_compare_exactly_and_keys_like_the_kernel() -> None:
    request = build_request(["intel_iommu=on", "vfio-pci.ids=10de:2330"], [])
    assert not satisfied(split_cmdline("intel_iommu=on,sm_on vfio-pci.ids=10de:2330")[0], request)
    assert satisfied(split_cmdline("intel-iommu=on vfio_pci.ids=10de:2330")[0], request)
    assert not satisfied(split_cmdline("intel_iommu=on intel_iommu=off vfio-pci.ids=10de:2330")[0], request)


def test_rewrite_replaces_in_place_and_keeps_hugepage_order() -> None:
    args = split_cmdline("ro intel_iommu=off hugepagesz=2M hugepages=512 quiet")[0]
    request = build_request(["intel_iommu=on", "hugepagesz=1G", "hugepages=16", "hugepagesz=2M", "hugepages=512"], [])
    new = apply_request(args, request)
    assert join_args(new) == "ro intel_iommu=on hugepagesz=1G hugepages=16 hugepagesz=2M hugepages=512 quiet"
    assert satisfied(new, request) and apply_request(new, request) == new
    swapped = split_cmdline("intel_iommu=on hugepagesz=2M hugepages=512 hugepagesz=1G hugepages=16")[0]
    assert not satisfied(swapped, request), "hugepages=N belongs to the hugepagesz before it: order counts"


def test_absent_key_takes_every_value_absent_pair_only_that_one() -> None:
    args = split_cmdline("hugepages=4 quiet splash=1 hugepages=8 splash")[0]
    assert join_args(apply_request(args, build_request([], ["splash"]))) == "hugepages=4 quiet hugepages=8"
    assert join_args(apply_request(args, build_request([], ["hugepages=4"]))) == "quiet splash=1 hugepages=8 splash"


def test_pending_ignores_loader_arguments_and_sees_removed_ones() -> None:
    request = build_request(["modprobe.blacklist=nouveau"], ["iommu"])
    configured = split_cmdline("console=ttyS0,115200n8 intel_iommu=on modprobe.blacklist=nouveau")[0]
    active = split_cmdline("BOOT_IMAGE=/vmlinuz root=UUID=1 ro console=ttyS0,115200n8 intel_iommu=on iommu=pt")[0]
    assert pending_changes(configured, active, request) == [
        {"key": "modprobe.blacklist", "configured": ["nouveau"], "active": []},
        {"key": "iommu", "configured": [], "active": ["pt"]}]
    assert pending_changes(configured, configured, request) == []


# --------------------------------------------------------------------------
# GRUB (Debian, Ubuntu): drop-in, sourced like grub-mkconfig, update-grub
# --------------------------------------------------------------------------

EXPECTED_LAB_DROPIN = """# Managed by confidential_gpu.host.kernel_cmdline (Ansible): changes here are overwritten.
# grub-mkconfig (update-grub) sources this file after /etc/default/grub and the drop-ins that sort
# before it. It sets the kernel arguments asked for on top of the values it was written
# for; when those have changed since, it only adds its arguments and says so.
if [ "${GRUB_CMDLINE_LINUX-}" = 'console=ttyS0,115200n8 intel_iommu=on iommu=pt' ]; then
    GRUB_CMDLINE_LINUX='console=ttyS0,115200n8 intel_iommu=on iommu=pt modprobe.blacklist=nouveau \
vfio-pci.ids=10de:2330'
else
    echo '/etc/default/grub.d/99-confidential-gpu.cfg: GRUB_CMDLINE_LINUX changed since this file was written; \
only its added arguments apply: run confidential_gpu.host.kernel_cmdline (role kernel_args) again' >&2
    GRUB_CMDLINE_LINUX="${GRUB_CMDLINE_LINUX-}"' modprobe.blacklist=nouveau vfio-pci.ids=10de:2330'
fi
"""

GPU_ARGS = ["intel_iommu=on", "iommu=pt", "modprobe.blacklist=nouveau", "vfio-pci.ids=10de:2330"]


def test_grub_lab_vm_adds_arguments_once(tmp_path: Path, bin_dir: Path) -> None:
    root = debian_vm(tmp_path / "root")
    result = run(root, bin_dir, present=GPU_ARGS)

    assert result["backend"] == "grub" and result["changed"] is True
    assert (root / DROPIN).read_text() == EXPECTED_LAB_DROPIN
    assert (root / "etc/default/grub").read_text() == LAB_GRUB
    assert changing_calls(root) == [["update-grub"]] and result["commands"] == [["update-grub"]]
    assert result["files"] == ["/" + DROPIN]
    configured = "console=ttyS0,115200n8 intel_iommu=on iommu=pt modprobe.blacklist=nouveau vfio-pci.ids=10de:2330"
    assert result["configured"] == configured.split()
    assert result["configured_before"] == ["console=ttyS0,115200n8", "intel_iommu=on", "iommu=pt"]
    assert grub_linux_lines(root)[0].split()[4:] == configured.split(), "grub.cfg holds what configured says"
    assert result["reboot_required"] is True
    assert [p["key"] for p in result["pending"]] == ["modprobe.blacklist", "vfio-pci.ids"]

    again = run(root, bin_dir, present=GPU_ARGS)
    assert again["changed"] is False and again["commands"] == [] and again["files"] == []
    assert changing_calls(root) == [["update-grub"]], "no second update-grub"
    assert again["configured"] == result["configured"] and again["reboot_required"] is True

    (root / "proc/cmdline").write_text("BOOT_IMAGE=/boot/vmlinuz root=UUID=0a1b ro %s\n" % configured)
    assert run(root, bin_dir, present=GPU_ARGS)["reboot_required"] is False


def test_grub_check_mode_lists_commands_and_changes_nothing(tmp_path: Path, bin_dir: Path) -> None:
    root = debian_vm(tmp_path / "root")
    before = snapshot(root)
    result = run(root, bin_dir, present=GPU_ARGS, check=True)

    assert snapshot(root) == before and calls(root) == []
    assert result["changed"] is True and result["commands"] == [["update-grub"]]
    assert result["files"] == ["/" + DROPIN]
    assert result["diff"][0]["after"] == EXPECTED_LAB_DROPIN and result["diff"][0]["before"] == ""
    assert "vfio-pci.ids=10de:2330" in result["configured"]


def test_grub_removes_an_argument_that_lives_in_etc_default_grub(tmp_path: Path, bin_dir: Path) -> None:
    root = debian_vm(tmp_path / "root")
    result = run(root, bin_dir, absent=["iommu=pt"])

    assert (root / "etc/default/grub").read_text() == LAB_GRUB, "the distribution's file is left alone"
    dropin = (root / DROPIN).read_text()
    assert "    GRUB_CMDLINE_LINUX='console=ttyS0,115200n8 intel_iommu=on'\n" in dropin
    assert result["configured"] == ["console=ttyS0,115200n8", "intel_iommu=on"]
    assert all("iommu=pt" not in line for line in grub_linux_lines(root))
    assert result["pending"] == [{"key": "iommu", "configured": [], "active": ["pt"]}]
    assert run(root, bin_dir, absent=["iommu=pt"])["changed"] is False


UBUNTU_GRUB = 'GRUB_DEFAULT=0\nGRUB_CMDLINE_LINUX_DEFAULT="quiet splash"\nGRUB_CMDLINE_LINUX=""\n'


def test_grub_edits_the_default_variable_where_an_argument_lives_there(tmp_path: Path, bin_dir: Path) -> None:
    root = debian_vm(tmp_path / "root", grub=UBUNTU_GRUB, proc="BOOT_IMAGE=/vmlinuz root=UUID=1 ro quiet splash\n")
    make_tree(root, {"/etc/os-release": "ID=ubuntu\nID_LIKE=debian\n",
                     "/etc/default/grub.d/50-cloudimg-settings.cfg": 'GRUB_CMDLINE_LINUX_DEFAULT="$GRUB_CMDLINE_'
                                                                     'LINUX_DEFAULT console=tty1 console=ttyS0"\n'})
    result = run(root, bin_dir, present=["amd_iommu=on"], absent=["splash"])

    assert result["configured_before"] == ["quiet", "splash", "console=tty1", "console=ttyS0"]
    assert result["configured"] == ["amd_iommu=on", "quiet", "console=tty1", "console=ttyS0"]
    normal, recovery = grub_linux_lines(root)
    assert normal.split()[4:] == ["amd_iommu=on", "quiet", "console=tty1", "console=ttyS0"]
    assert recovery.split()[4:] == ["single", "amd_iommu=on"], "GRUB_CMDLINE_LINUX reaches recovery entries too"


def test_grub_dropin_after_a_later_edit_of_etc_default_grub(tmp_path: Path, bin_dir: Path) -> None:
    root = debian_vm(tmp_path / "root")
    run(root, bin_dir, present=["modprobe.blacklist=nouveau"], absent=["iommu=pt"])
    grub = root / "etc/default/grub"
    grub.write_text(LAB_GRUB.replace("iommu=pt", "iommu=pt mitigations=off"))

    env = dict(os.environ, CONFIDENTIAL_GPU_ROOT=str(root))
    proc = __import__("subprocess").run([str(bin_dir / "update-grub")], env=env, capture_output=True, text=True)
    assert proc.returncode == 0
    assert "GRUB_CMDLINE_LINUX changed since this file was written" in proc.stderr
    words = grub_linux_lines(root)[0].split()
    assert "mitigations=off" in words and "modprobe.blacklist=nouveau" in words, "the admin's edit and ours both apply"
    assert "iommu=pt" in words, "the removal waits for the module to run again"

    result = run(root, bin_dir, present=["modprobe.blacklist=nouveau"], absent=["iommu=pt"])
    assert result["changed"] is True
    assert result["configured"] == ["console=ttyS0,115200n8", "intel_iommu=on", "mitigations=off",
                                    "modprobe.blacklist=nouveau"]
    assert grub_linux_lines(root)[0].split()[4:] == result["configured"]


def test_grub_dropin_overridden_by_a_later_one_fails_and_writes_nothing(tmp_path: Path, bin_dir: Path) -> None:
    root = debian_vm(tmp_path / "root")
    make_tree(root, {"/etc/default/grub.d/zz-site.cfg": 'GRUB_CMDLINE_LINUX="console=ttyS0,115200n8"\n'})
    before = snapshot(root)
    with pytest.raises(KernelCmdlineError, match=r"would not take effect.*zz-site\.cfg.*grub_dropin_name"):
        run(root, bin_dir, present=["iommu=pt"])
    assert snapshot(root) == before and calls(root) == []
    assert run(root, bin_dir, present=["iommu=pt"], dropin="zz-zz-confidential-gpu.cfg")["changed"] is True


def test_grub_update_failure_restores_the_dropin(tmp_path: Path, bin_dir: Path) -> None:
    root = debian_vm(tmp_path / "root")
    run(root, bin_dir, present=["iommu=pt", "quiet"])
    first = (root / DROPIN).read_text()
    (root / ".standin-fail-update-grub").write_text("")
    with pytest.raises(KernelCmdlineError, match=r"update-grub failed \(rc=1\).*99-confidential-gpu.cfg was restored"):
        run(root, bin_dir, present=["iommu=pt", "splash"])
    assert (root / DROPIN).read_text() == first


def test_grub_regenerates_a_grub_cfg_older_than_the_dropin(tmp_path: Path, bin_dir: Path) -> None:
    root = debian_vm(tmp_path / "root")
    run(root, bin_dir, present=["quiet"])
    os.utime(root / "boot/grub/grub.cfg", (1_000_000, 1_000_000))
    result = run(root, bin_dir, present=["quiet"])
    assert result["changed"] is True and result["commands"] == [["update-grub"]] and result["files"] == []
    assert run(root, bin_dir, present=["quiet"])["changed"] is False


def test_grub_uses_grub_mkconfig_without_update_grub(tmp_path: Path, bin_dir: Path) -> None:
    root = debian_vm(tmp_path / "root")
    (bin_dir / "update-grub").unlink()
    result = run(root, bin_dir, present=["quiet"])
    assert result["commands"] == [["grub-mkconfig", "-o", "/boot/grub/grub.cfg"]]
    assert changing_calls(root) == [["grub-mkconfig", "-o", "/boot/grub/grub.cfg"]]
    assert "quiet" in grub_linux_lines(root)[0].split()


def test_grub_without_update_grub_or_grub_mkconfig_fails_before_writing(tmp_path: Path, bin_dir: Path) -> None:
    root = debian_vm(tmp_path / "root")
    run(root, bin_dir, present=["quiet"])
    (bin_dir / "update-grub").unlink()
    (bin_dir / "grub-mkconfig").unlink()
    assert run(root, bin_dir, present=["quiet"])["changed"] is False, "reading needs neither"
    before = snapshot(root)
    with pytest.raises(KernelCmdlineError, match="neither update-grub nor grub-mkconfig is in .*grub2-common"):
        run(root, bin_dir, present=["quiet", "splash"])
    assert snapshot(root) == before


def test_grub_quotes_values_with_spaces_and_semicolons(tmp_path: Path, bin_dir: Path) -> None:
    root = debian_vm(tmp_path / "root")
    result = run(root, bin_dir, present=['dyndbg="file a.c +p; file b.c +p"', "foo=a;b"])
    assert result["configured"][-2:] == ['dyndbg="file a.c +p; file b.c +p"', 'foo="a;b"']
    line = grub_linux_lines(root)[0]
    assert line.endswith('dyndbg="file a.c +p; file b.c +p" foo="a;b"'), "quoted for GRUB's script parser"
    assert keys_values(line)[-2:] == [("dyndbg", "file a.c +p; file b.c +p"), ("foo", "a;b")]


def test_grub_refuses_to_remove_the_console(tmp_path: Path, bin_dir: Path) -> None:
    root = debian_vm(tmp_path / "root")
    before = snapshot(root)
    with pytest.raises(KernelCmdlineError, match=r"refusing to remove console=ttyS0,115200n8 .*allow_removing"):
        run(root, bin_dir, absent=["console"])
    with pytest.raises(KernelCmdlineError, match=r"refusing to remove console=ttyS0,115200n8"):
        run(root, bin_dir, present=["console=tty0"])
    assert snapshot(root) == before and calls(root) == []
    assert run(root, bin_dir, present=["console=tty0"], allow_removing=["console"])["configured"][0] == "console=tty0"


# --------------------------------------------------------------------------
# grubby (EL 9, Fedora), through the stand-in
# --------------------------------------------------------------------------

def entry_options(root: Path) -> Dict[str, str]:
    out = {}
    for path in sorted((root / "boot/loader/entries").glob("*.conf")):
        line = next(li for li in path.read_text().splitlines() if li.startswith("options "))
        out[path.name.split("-", 1)[1]] = line[len("options "):]
    return out


def test_grubby_updates_every_entry_once(tmp_path: Path, bin_dir: Path) -> None:
    root = rhel9(tmp_path / "root")
    present = ["intel_iommu=on", "iommu=pt", "hugepagesz=1G", "hugepages=8"]
    result = run(root, bin_dir, present=present)

    assert result["backend"] == "grubby" and result["changed"] is True
    assert result["commands"] == [["grubby", "--update-kernel=ALL",
                                   "--args=intel_iommu=on iommu=pt hugepagesz=1G hugepages=8"]]
    assert changing_calls(root) == result["commands"]
    want = BLS_OPTIONS + " intel_iommu=on iommu=pt hugepagesz=1G hugepages=8"
    assert entry_options(root) == {"5.14.0-362.8.1.el9_3.x86_64.conf": want, "5.14.0-427.13.1.el9_4.x86_64.conf": want}
    assert result["configured"][0] == "root=/dev/mapper/rhel-root", "grubby prints root= apart; put back first"
    assert "$tuned_params" not in result["configured"], "GRUB variables are not arguments"
    assert result["pending"] == [{"key": k, "configured": [v], "active": []} for k, v in
                                 (("intel_iommu", "on"), ("iommu", "pt"), ("hugepagesz", "1G"), ("hugepages", "8"))]

    again = run(root, bin_dir, present=present)
    assert again["changed"] is False and again["commands"] == []
    assert len(changing_calls(root)) == 1


def test_grubby_check_mode_records_the_call_only(tmp_path: Path, bin_dir: Path) -> None:
    root = rhel9(tmp_path / "root")
    before = snapshot(root)
    result = run(root, bin_dir, present=["intel_iommu=on"], check=True)
    assert snapshot(root) == before and changing_calls(root) == []
    assert [c["argv"] for c in calls(root)] == [["--info=ALL"], ["--default-index"]]
    assert result["commands"] == [["grubby", "--update-kernel=ALL", "--args=intel_iommu=on"]]
    assert result["configured"][-1] == "intel_iommu=on" and len(result["diff"]) == 2


def test_grubby_replaces_and_removes_and_keeps_kernel_cmdline_in_step(tmp_path: Path, bin_dir: Path) -> None:
    options = "root=/dev/sda2 ro intel_iommu=off iommu=pt vfio_pci.ids=10de:1111 quiet"
    root = rhel9(tmp_path / "root", options=options)
    make_tree(root, {"/etc/kernel/cmdline": options + "\n"})
    result = run(root, bin_dir, present=["intel_iommu=on", "vfio-pci.ids=10de:2330"], absent=["iommu"])

    assert result["commands"] == [["grubby", "--update-kernel=ALL", "--remove-args=intel_iommu vfio_pci.ids iommu=pt",
                                   "--args=intel_iommu=on vfio-pci.ids=10de:2330"]]
    want = "root=/dev/sda2 ro quiet intel_iommu=on vfio-pci.ids=10de:2330"
    assert set(entry_options(root).values()) == {want}
    kernel_cmdline = (root / "etc/kernel/cmdline").read_text()
    assert kernel_cmdline == "root=/dev/sda2 ro intel_iommu=on vfio-pci.ids=10de:2330 quiet\n", "replaced in place"
    assert result["files"] == ["/etc/kernel/cmdline"]
    again = run(root, bin_dir, present=["intel_iommu=on", "vfio-pci.ids=10de:2330"], absent=["iommu"])
    assert again["changed"] is False


def test_grubby_refuses_a_value_with_a_space(tmp_path: Path, bin_dir: Path) -> None:
    root = rhel9(tmp_path / "root")
    with pytest.raises(KernelCmdlineError, match="grubby backend cannot set a value that holds a space"):
        run(root, bin_dir, present=['acpi_osi="Windows 2015"'])
    assert calls(root) == []


# --------------------------------------------------------------------------
# systemd-boot / kernel-install
# --------------------------------------------------------------------------

def test_systemd_boot_writes_kernel_cmdline_and_reinstalls_every_kernel(tmp_path: Path, bin_dir: Path) -> None:
    root = systemd_boot(tmp_path / "root")
    result = run(root, bin_dir, present=["amd_iommu=on", "iommu=pt"])

    assert result["backend"] == "systemd_boot" and result["files"] == ["/etc/kernel/cmdline"]
    assert (root / "etc/kernel/cmdline").read_text() == "root=UUID=1234 rw quiet amd_iommu=on iommu=pt\n"
    assert result["commands"] == changing_calls(root) == [
        ["kernel-install", "add", "6.8.0-45-generic", "/usr/lib/modules/6.8.0-45-generic/vmlinuz"],
        ["kernel-install", "add", "6.8.0-47-generic", "/usr/lib/modules/6.8.0-47-generic/vmlinuz"]]
    for path in (root / "boot/efi/loader/entries").glob("*.conf"):
        assert "options    root=UUID=1234 rw quiet amd_iommu=on iommu=pt\n" in path.read_text()
    assert result["configured"] == ["root=UUID=1234", "rw", "quiet", "amd_iommu=on", "iommu=pt"]
    assert [p["key"] for p in result["pending"]] == ["amd_iommu", "iommu"], "initrd= comes from the loader"
    assert run(root, bin_dir, present=["amd_iommu=on", "iommu=pt"])["changed"] is False


def test_systemd_boot_rewrites_a_stale_entry(tmp_path: Path, bin_dir: Path) -> None:
    root = systemd_boot(tmp_path / "root", cmdline="root=UUID=1234 rw iommu=pt")
    stale = root / ("boot/efi/loader/entries/%s-6.8.0-45-generic.conf" % MID)
    stale.write_text(sd_entry("6.8.0-45-generic", "root=UUID=1234 rw"))
    result = run(root, bin_dir, present=["iommu=pt"])
    assert result["changed"] is True and result["files"] == [] and len(result["commands"]) == 2
    assert "options    root=UUID=1234 rw iommu=pt\n" in stale.read_text()


def test_systemd_boot_kernel_install_failure_restores_kernel_cmdline(tmp_path: Path, bin_dir: Path) -> None:
    root = systemd_boot(tmp_path / "root")
    (root / ".standin-fail-kernel-install").write_text("")
    with pytest.raises(KernelCmdlineError, match=r"kernel-install add 6\.8\.0-45-generic .* failed.*restored"):
        run(root, bin_dir, present=["iommu=pt"])
    assert (root / "etc/kernel/cmdline").read_text() == "root=UUID=1234 rw quiet\n"


# --------------------------------------------------------------------------
# rpm-ostree
# --------------------------------------------------------------------------

def test_rpm_ostree_deletes_then_appends_in_one_call(tmp_path: Path, bin_dir: Path) -> None:
    root = ostree_host(tmp_path / "root")
    result = run(root, bin_dir, present=["intel_iommu=on", "hugepages=16"], absent=["rhgb"])

    assert result["backend"] == "rpm_ostree"
    assert result["commands"] == changing_calls(root) == [
        ["rpm-ostree", "kargs", "--delete=rhgb", "--delete=hugepages=4", "--append=intel_iommu=on",
         "--append=hugepages=16"]]
    assert (root / ".standin-rpm-ostree-kargs").read_text() == (
        "quiet root=UUID=7d1c rw ostree=/ostree/boot.1/fedora/4b1f/0 intel_iommu=on hugepages=16\n")
    assert [p["key"] for p in result["pending"]] == ["intel_iommu", "hugepages", "rhgb"], "ostree= is not pending"
    assert run(root, bin_dir, present=["intel_iommu=on", "hugepages=16"], absent=["rhgb"])["changed"] is False


def test_rpm_ostree_check_mode(tmp_path: Path, bin_dir: Path) -> None:
    root = ostree_host(tmp_path / "root")
    result = run(root, bin_dir, present=["iommu=pt"], check=True)
    assert result["commands"] == [["rpm-ostree", "kargs", "--append=iommu=pt"]] and changing_calls(root) == []
    assert (root / ".standin-rpm-ostree-kargs").read_text() == OSTREE_KARGS + "\n"


# --------------------------------------------------------------------------
# Detection
# --------------------------------------------------------------------------

@pytest.mark.parametrize(("builder", "backend"), [(debian_vm, "grub"), (rhel9, "grubby"),
                                                  (systemd_boot, "systemd_boot"), (ostree_host, "rpm_ostree")])
def test_detect_backend(tmp_path: Path, builder, backend: str) -> None:
    assert detect_backend(HostRoot(str(builder(tmp_path / "root")))) == backend


def test_unknown_boot_setup_and_unknown_backend_name(tmp_path: Path, bin_dir: Path) -> None:
    root = make_tree(tmp_path / "root", {"/etc/os-release": "ID=arch\n"})
    with pytest.raises(KernelCmdlineError, match=r"unknown boot setup: .*ID_LIKE arch .*pass backend explicitly"):
        run(root, bin_dir, present=["quiet"])
    host = HostRoot(str(root))
    with pytest.raises(KernelCmdlineError, match=r"unknown backend 'lilo': use auto or one of grub, grubby"):
        make_backend("lilo", host, Runner([str(bin_dir)], False, host.root), "99-x.cfg")
    assert calls(root) == []


# --------------------------------------------------------------------------
# Configuration read from the host that cannot be edited safely (issue 17 point 2)
# --------------------------------------------------------------------------

def test_systemd_boot_unbalanced_quote_in_kernel_cmdline_is_refused_before_writing(
        tmp_path: Path, bin_dir: Path) -> None:
    """Before: the new argument was folded into the quoted value, kernel-install ran, then an unrelated failure."""
    root = systemd_boot(tmp_path / "root", cmdline='root=UUID=1234 rw acpi_osi="Linux quiet')
    before = tree_state(root)
    with pytest.raises(KernelCmdlineError) as error:
        run(root, bin_dir, present=["iommu=pt"])
    assert "/etc/kernel/cmdline holds an unbalanced double quote" in str(error.value)
    assert "close or remove the quote" in str(error.value)
    assert calls(root) == [], "no kernel-install ran"
    assert tree_state(root) == before


@pytest.mark.parametrize(("builder", "files", "where"), [
    (rhel9, {"/etc/kernel/cmdline": 'root=/dev/sda2 ro foo="bar\n'}, "/etc/kernel/cmdline"),
    (lambda root: rhel9(root, options='root=/dev/sda2 ro foo="bar quiet'), {}, "grubby entry /vmlinuz-"),
    (ostree_host, {"/.standin-rpm-ostree-kargs": 'rw root=UUID=7d1c foo="bar\n'}, "rpm-ostree kargs"),
    (debian_vm, {"/etc/default/grub": LAB_GRUB + "GRUB_CMDLINE_LINUX='foo=\"bar'\n"}, "GRUB_CMDLINE_LINUX"),
])
def test_every_backend_refuses_an_unbalanced_quote_it_reads(tmp_path: Path, bin_dir: Path, builder, files,
                                                            where: str) -> None:
    root = make_tree(builder(tmp_path / "root"), files)
    before = tree_state(root)
    with pytest.raises(KernelCmdlineError, match="unbalanced double quote") as error:
        run(root, bin_dir, present=["iommu=pt"])
    assert where in str(error.value) and "nothing was changed" in str(error.value)
    assert changing_calls(root) == []
    assert tree_state(root) == before


def test_grubby_failure_after_writing_kernel_cmdline_restores_it(tmp_path: Path, bin_dir: Path) -> None:
    """grubby reads its entries, then fails on --update-kernel: /etc/kernel/cmdline, written first, is put back."""
    root = rhel9(tmp_path / "root")
    make_tree(root, {"/etc/kernel/cmdline": BLS_OPTIONS + "\n"})
    real = bin_dir / "grubby.real"
    (bin_dir / "grubby").rename(real)
    wrapper = bin_dir / "grubby"
    wrapper.write_text('#!/bin/sh\ncase "$1" in --update-kernel=*) echo "grubby: failing on purpose" >&2; exit 1;; '
                       'esac\nexec "%s" "$@"\n' % real)
    wrapper.chmod(0o755)
    before = tree_state(root)
    with pytest.raises(KernelCmdlineError, match=r"grubby --update-kernel=ALL .*failed \(rc=1\).*failing on purpose"
                                                 r".*/etc/kernel/cmdline was restored"):
        run(root, bin_dir, present=["iommu=pt"])
    assert tree_state(root) == before
