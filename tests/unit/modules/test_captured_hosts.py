"""Replay real host captures (tests/fixtures/hosts) through the info modules.

Each capture carries the host's own lspci and nvidia-smi output; the modules,
run on the captured tree, must agree with them.
"""

from __future__ import annotations

import json
import sys
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any, Dict, List

import pytest

from conftest import REPO

sys.path.insert(0, str(REPO / "tests" / "lib"))
from capture_archive import extract  # noqa: E402
from lspci_oracle import mismatches, parse_lspci  # noqa: E402

CAPTURES = sorted((REPO / "tests" / "fixtures" / "hosts").glob("*/capture.tar.xz"))


@pytest.fixture(params=CAPTURES, ids=[path.parent.name for path in CAPTURES])
def capture(request: pytest.FixtureRequest, tmp_path: Path) -> Path:
    return extract(request.param, tmp_path / "capture")


def nvidia_smi_gpus(capture: Path) -> List[Dict[str, str]]:
    xml = capture / "commands" / "nvidia-smi-q.xml"
    if not xml.is_file():
        return []
    root = ET.parse(xml).getroot()
    return [{"address": gpu.findtext("pci/pci_bus_id", "").lower()[4:], "name": gpu.findtext("product_name", "")}
            for gpu in root.findall("gpu")]


def test_there_is_a_capture_of_a_real_gpu_host() -> None:
    assert any(path.parent.name.startswith(("h100", "h200")) for path in CAPTURES), CAPTURES


def test_topology_agrees_with_the_hosts_own_lspci(capture: Path, run_module) -> None:
    summary: Dict[str, Any] = json.loads((capture / "CAPTURE.json").read_text())
    result = run_module("pci_topology_info", {"root": str(capture / "root")})
    # The captures hold no /proc/self/mountinfo: discovery says it cannot check the boot disk, and nothing else.
    assert result["rc"] == 0 and result["warnings"] == [
        "no mount of / in /proc/self/mountinfo or /proc/mounts: the boot disk's controller is not checked as "
        "host-critical"], result
    assert result["summary"]["functions"] == summary["pci_functions"]
    ours = {dev["address"]: dev for dev in result["devices"]}
    theirs = parse_lspci((capture / "commands" / "lspci-vvv.txt").read_text())
    assert sorted(ours) == sorted(theirs)
    assert mismatches(ours, theirs) == []


def test_gpus_are_the_ones_nvidia_smi_saw(capture: Path, run_module) -> None:
    result = run_module("pci_topology_info", {"root": str(capture / "root"), "roles": ["gpu"]})
    smi = nvidia_smi_gpus(capture)
    assert [dev["address"] for dev in result["devices"]] == sorted(gpu["address"] for gpu in smi)
    assert all(dev["vendor_id"] == "10de" and dev["class_id"].startswith("03") for dev in result["devices"])


def test_host_facts_replay(capture: Path, run_module) -> None:
    summary: Dict[str, Any] = json.loads((capture / "CAPTURE.json").read_text())
    result = run_module("cc_host_info", {"root": str(capture / "root")})
    assert result["rc"] == 0, result
    assert result["kernel"]["release"] == summary["kernel"]
    assert result["kernel"]["cmdline"] == (capture / "root" / "proc" / "cmdline").read_text().strip()
    assert result["gpu_drivers"]["nvidia"] is bool(nvidia_smi_gpus(capture))
    groups = capture / "root" / "sys" / "kernel" / "iommu_groups"
    if not groups.is_dir() or not any(groups.iterdir()):
        assert result["iommu"]["enabled"] is False
        assert result["verdicts"]["vfio_ready"] is False and result["verdicts"]["vfio_ready_reasons"], result
