"""kernel_module_config run as a process, the way a host runs it, on a fake root; its files read back by the
real tool that reads it on a host (``modprobe --showconfig`` of kmod)."""

from __future__ import annotations

import stat
import subprocess
from pathlib import Path

from required_tools import require_tool

MODULE = "kernel_module_config"
MODPROBE = "etc/modprobe.d/confidential-gpu-kvm-amd.conf"
MODULES_LOAD = "etc/modules-load.d/confidential-gpu.conf"
NAMES = {"modprobe_conf": "confidential-gpu-kvm-amd.conf", "modules_load_conf": "confidential-gpu.conf"}
SNP = dict(NAMES, options={"kvm_amd": "sev=1 sev_es=1  sev_snp=1"}, load=["ccp", "iommufd", "ccp"])


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_writes_both_files_in_one_call_then_changes_nothing(run_module, tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()

    first = run_module(MODULE, dict(SNP, root=str(root)))

    assert first["rc"] == 0 and first["changed"] is True, first
    assert first["files"] == ["/etc/modprobe.d/confidential-gpu-kvm-amd.conf",
                              "/etc/modules-load.d/confidential-gpu.conf"]
    assert (root / MODPROBE).read_text().splitlines()[-1] == "options kvm_amd sev=1 sev_es=1 sev_snp=1"
    assert (root / MODULES_LOAD).read_text().splitlines()[1:] == ["ccp", "iommufd"], "each module once, in order"
    assert mode(root / MODPROBE) == 0o644 and mode(root / "etc/modules-load.d") == 0o755
    assert "diff" not in first, "no diff outside diff mode"

    second = run_module(MODULE, dict(SNP, root=str(root)))

    assert second["rc"] == 0 and second["changed"] is False and second["files"] == [], second


def test_check_mode_reports_and_writes_nothing_and_diff_mode_shows_both_files(run_module, tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()

    result = run_module(MODULE, dict(SNP, root=str(root), _ansible_check_mode=True, _ansible_diff=True))

    assert result["rc"] == 0 and result["changed"] is True, result
    assert list(root.iterdir()) == []
    assert [entry["after_header"] for entry in result["diff"]] == [
        "/etc/modprobe.d/confidential-gpu-kvm-amd.conf", "/etc/modules-load.d/confidential-gpu.conf"]
    assert [entry["before_header"].endswith("(absent)") for entry in result["diff"]] == [True, True]
    assert "options kvm_amd sev=1 sev_es=1 sev_snp=1\n" in result["diff"][0]["after"]


def test_empty_list_removes_the_boot_list_and_leaves_modprobe_alone(run_module, tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    assert run_module(MODULE, dict(SNP, root=str(root)))["changed"] is True
    (root / MODPROBE).chmod(0o600)
    (root / MODPROBE).write_text("options kvm_amd sev_snp=1 # edited by hand\n")

    result = run_module(MODULE, dict(NAMES, root=str(root), load=[]))

    assert result["rc"] == 0 and result["files"] == ["/etc/modules-load.d/confidential-gpu.conf"], result
    assert not (root / MODULES_LOAD).exists()
    assert (root / MODPROBE).read_text() == "options kvm_amd sev_snp=1 # edited by hand\n"
    assert mode(root / MODPROBE) == 0o600


def test_a_mode_that_drifted_is_set_back(run_module, tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    run_module(MODULE, dict(SNP, root=str(root)))
    (root / MODULES_LOAD).chmod(0o600)

    result = run_module(MODULE, dict(SNP, root=str(root), _ansible_diff=True))

    assert result["changed"] is True and result["files"] == ["/etc/modules-load.d/confidential-gpu.conf"], result
    assert result["diff"][0]["after_header"].endswith("(mode 0644)")
    assert mode(root / MODULES_LOAD) == 0o644


def test_modprobe_reads_the_options_file_back(run_module, tmp_path: Path) -> None:
    modprobe = require_tool("modprobe", "the options file is read back by the tool that reads it on a host")
    root = tmp_path / "root"
    root.mkdir()
    assert run_module(MODULE, dict(SNP, root=str(root)))["rc"] == 0
    # kmod 30 (Debian 12) man/modprobe.xml: -C/--config replaces the search of /etc/modprobe.d with the given path.
    shown = subprocess.run([modprobe, "--showconfig", "--config", str(root / "etc/modprobe.d")],
                           capture_output=True, text=True, timeout=60, check=False)
    assert shown.returncode == 0, shown.stderr
    assert "options kvm_amd sev=1 sev_es=1 sev_snp=1" in shown.stdout.splitlines()
