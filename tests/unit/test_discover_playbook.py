"""playbooks/discover.yml end to end: ansible-playbook, the role, its summary and reports."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from conftest import REPO

sys.path.insert(0, str(REPO / "tests" / "lib"))
from fake_sysfs import ServerShape, build_tree, gpu_server, lab_like_host  # noqa: E402


def run_playbook(*extra: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, ANSIBLE_CONFIG=str(REPO / "ansible.cfg"), ANSIBLE_NOCOLOR="1")
    command = [str(Path(sys.executable).with_name("ansible-playbook")), str(REPO / "playbooks/discover.yml"), *extra]
    return subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=300, check=False)


def test_summary_and_reports_of_a_gpu_server(tmp_path: Path) -> None:
    build_tree(tmp_path / "host", gpu_server(ServerShape(gpus=2, nvswitches=1, sockets=2)))
    reports = tmp_path / "reports"
    proc = run_playbook("-e", "discovery_root=%s" % (tmp_path / "host"), "-e", "discovery_report_dir=%s" % reports)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    summary = (reports / "localhost.txt").read_text()
    assert "PCI: 16 functions, 2 GPUs, 1 NVSwitches, 2 NICs, 16 IOMMU groups (0 with endpoints not viable)" in summary
    assert "gpu      0000:03:00.0 10de:2330 driver=nvidia group=5 (viable) numa=0" in summary
    assert "path 0000:00:01.0 > 0000:01:00.0 > 0000:02:00.0 > 0000:03:00.0; closest NICs 0000:04:00.0" in summary
    assert "nvswitch 0000:05:00.0 10de:22a3 driver=nvidia-nvswitch group=8 (viable) numa=0" in summary
    assert "not viable" not in summary.split("(0 with endpoints not viable)")[1], "host bridges are not listed"
    assert "IOMMU: on (other), default domain DMA" in summary
    assert "vfio_ready no" in summary and "vfio-pci is not available" in summary
    report = json.loads((reports / "localhost.json").read_text())
    assert report["pci"]["summary"]["gpus"] == 2 and "verdicts" in report["cc_host"]


def test_non_viable_group_is_named_and_required_verdict_fails(tmp_path: Path) -> None:
    build_tree(tmp_path / "host", lab_like_host())
    proc = run_playbook("-e", "discovery_root=%s" % (tmp_path / "host"), "-e", '{"discovery_require": ["vfio_ready"]}')
    assert proc.returncode != 0
    assert "group 1 not viable: 0000:00:1f.0 is an ISA/LPC bridge (driver lpc_ich) that the host needs" in proc.stdout
    assert "vfio_ready is false on localhost" in proc.stdout
    assert "group 3 is shared: 0000:01:00.0, 0000:01:00.1 (viable; not all on vfio-pci yet)" in proc.stdout


def test_summary_names_host_critical_devices(tmp_path: Path) -> None:
    """The lab VM tree (tests/lib/host_critical_tree.py): / on 00:03.0, default route on 00:04.0, console on 06:00.0."""
    from host_critical_tree import lab_vm

    lab_vm(tmp_path / "host")
    reports = tmp_path / "reports"
    proc = run_playbook("-e", "discovery_root=%s" % (tmp_path / "host"), "-e", "discovery_report_dir=%s" % reports)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    summary = (reports / "localhost.txt").read_text()
    assert "Host-critical: 3 functions in 3 IOMMU groups" in summary
    assert "host-critical 0000:00:03.0 (storage): it controls the disk holding / (/dev/vda1)" in summary
    assert "host-critical 0000:00:04.0 (nic): it carries the default route (interface enp0s4)" in summary
    assert "host-critical 0000:06:00.0 (other): fbcon draws the active console on its framebuffer fb0" in summary
    assert "nic      0000:00:04.0 1af4:1000 driver=virtio-pci group=2 (viable) HOST-CRITICAL (default_route)" in summary
    report = json.loads((reports / "localhost.json").read_text())
    group = next(group for group in report["pci"]["iommu_groups"] if group["id"] == 1)
    assert [entry["kind"] for entry in group["host_critical"]] == ["boot_disk"]
