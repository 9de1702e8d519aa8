"""Role discovery's results for AWX (issue 19, point 5): a cacheable compact summary, set_stats for workflows,
report files that change only when the host does, and the summary in check mode too.

The host is a fake tree (tests/lib/fake_sysfs); the role runs with ansible-playbook (tests/lib/role_play).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, Dict

from conftest import REPO

sys.path.insert(0, str(REPO / "tests" / "lib"))
from fact_cache import cached_facts  # noqa: E402
from fake_sysfs import ServerShape, build_tree, gpu_server  # noqa: E402
from role_play import run_role  # noqa: E402

SUMMARY_KEYS = {"host", "gpu_count", "gpus", "gpus_on_vfio", "nvswitch_count", "nic_count", "iommu_enabled",
                "iommu_groups_not_viable", "host_critical", "vfio_ready", "snp_ready", "tdx_ready", "reasons"}


def two_gpu_server(root: Path) -> Path:
    build_tree(root, gpu_server(ServerShape(gpus=2, nvswitches=1, sockets=2)))
    return root


def custom_stats(output: str) -> Dict[str, Any]:
    """The aggregated set_stats data that ansible-playbook prints (ANSIBLE_SHOW_CUSTOM_STATS) after the recap."""
    lines = [line for line in output.split("CUSTOM STATS:", 1)[-1].splitlines() if line.startswith("\tRUN: ")]
    assert len(lines) == 1, "no CUSTOM STATS line:\n%s" % output
    return json.loads(lines[0][len("\tRUN: "):])


def check_summary(summary: Dict[str, Any]) -> None:
    """What tests/unit/test_discover_playbook.py reads in the text summary of the same tree, as data."""
    assert set(summary) == SUMMARY_KEYS, summary
    assert summary["host"] == "localhost"
    assert (summary["gpu_count"], summary["nvswitch_count"], summary["nic_count"]) == (2, 1, 2)
    assert summary["gpus"][0] == {"address": "0000:03:00.0", "device_id": "10de:2330", "driver": "nvidia",
                                  "iommu_group": 5, "viable": True, "numa_node": 0, "host_critical": False}
    assert len(summary["gpus"]) == 2 and summary["gpus_on_vfio"] == 0
    assert summary["iommu_enabled"] is True and summary["iommu_groups_not_viable"] == 0
    assert summary["host_critical"] == 0
    assert summary["vfio_ready"] is False
    assert any("vfio-pci is not available" in reason for reason in summary["reasons"]["vfio_ready"])
    assert summary["snp_ready"] is False and summary["reasons"]["snp_ready"]
    assert summary["tdx_ready"] is False and summary["reasons"]["tdx_ready"]


def test_summary_fact_set_stats_and_reports_that_change_only_with_the_host(tmp_path: Path) -> None:
    root = two_gpu_server(tmp_path / "host")
    reports = tmp_path / "reports"
    cache = tmp_path / "facts"
    env = {"ANSIBLE_CACHE_PLUGIN": "jsonfile", "ANSIBLE_CACHE_PLUGIN_CONNECTION": str(cache),
           "ANSIBLE_SHOW_CUSTOM_STATS": "1"}
    variables = {"discovery_root": str(root), "discovery_report_dir": str(reports)}

    first = run_role(tmp_path, "discovery", variables, report=["discovery_summary"], env=env, name="first")
    assert first.rc == 0, first.output
    check_summary(first.facts["discovery_summary"])
    assert first.recap["changed"] == 3, "the directory and both reports are new: %s" % first.output
    assert cached_facts(cache, "localhost")["discovery_summary"] == first.facts["discovery_summary"], \
        "the fact cache holds the summary"
    assert custom_stats(first.output) == {"confidential_gpu_discovery": {"localhost": first.facts["discovery_summary"]}}
    report_json = (reports / "localhost.json").read_text()
    report_txt = (reports / "localhost.txt").read_text()

    again = run_role(tmp_path, "discovery", variables, report=["discovery_summary"], env=env, name="again")
    assert again.rc == 0, again.output
    assert again.recap["changed"] == 0, "nothing changed on the host, so neither report changes: %s" % again.output
    assert (reports / "localhost.json").read_text() == report_json
    assert (reports / "localhost.txt").read_text() == report_txt

    # the host changes (a GPU moves to vfio-pci): the reports change, and only they
    gpu = root / "sys/bus/pci/devices/0000:03:00.0"
    (gpu / "driver").unlink()
    (root / "sys/bus/pci/drivers/vfio-pci").mkdir(parents=True, exist_ok=True)
    (gpu / "driver").symlink_to(root / "sys/bus/pci/drivers/vfio-pci")
    (root / "sys/bus/pci/drivers/nvidia/0000:03:00.0").unlink()
    (root / "sys/bus/pci/drivers/vfio-pci/0000:03:00.0").symlink_to(gpu.resolve())
    moved = run_role(tmp_path, "discovery", variables, report=["discovery_summary"], env=env, name="moved")
    assert moved.rc == 0, moved.output
    assert moved.facts["discovery_summary"]["gpus"][0]["driver"] == "vfio-pci", moved.facts
    assert moved.facts["discovery_summary"]["gpus_on_vfio"] == 1
    assert moved.recap["changed"] == 2, "both reports say the new driver: %s" % moved.output


def test_check_mode_computes_and_shows_the_summary_and_writes_nothing(tmp_path: Path) -> None:
    root = two_gpu_server(tmp_path / "host")
    reports = tmp_path / "reports"
    cache = tmp_path / "facts"
    env = {"ANSIBLE_CACHE_PLUGIN": "jsonfile", "ANSIBLE_CACHE_PLUGIN_CONNECTION": str(cache)}
    result = run_role(tmp_path, "discovery", {"discovery_root": str(root), "discovery_report_dir": str(reports)},
                      report=["discovery_summary"], check=True, env=env)
    assert result.rc == 0, result.output
    check_summary(result.facts["discovery_summary"])
    assert "localhost: " in result.output and "2 GPUs, 1 NVSwitches, 2 NICs" in result.output, "the summary is shown"
    assert not reports.exists(), "check mode writes no report"
    assert cached_facts(cache, "localhost")["discovery_summary"]["gpu_count"] == 2
