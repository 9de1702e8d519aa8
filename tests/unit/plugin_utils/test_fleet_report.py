"""The fleet report's JSON and its changes since the previous report (plugins/plugin_utils/fleet_report.py).

Host entries come from fake sysfs trees read by the info modules' own code (pci_topology.read_topology with
host_critical.mark_host_critical, cc_host.gather_facts): the Lenovo SD665-N V3 rebuilt from its captured
``lspci -tv`` (../shared/fixtures) and the synthetic servers of tests/lib/fake_sysfs.py.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path
from typing import Any, Dict, List

import pytest
from conftest import FIXTURES, REPO

from ansible_collections.confidential_gpu.host.plugins.plugin_utils.fleet_report import fleet_report, host_entry

sys.path.insert(0, str(REPO / "tests" / "lib"))
from fake_sysfs import ServerShape, gpu_server  # noqa: E402
from fleet_hosts import entry_of, sd665_expected_pairs, sd665_functions  # noqa: E402

PASSING = [{"name": "iommu", "state": "pass", "detail": "IOMMU on", "fix": ""}]
FAILING = [{"name": "vfio_devices", "state": "fail", "detail": "0000:06:00.0 is on nvidia", "fix": "run prepare"}]


@pytest.fixture(scope="module")
def sd665_entry(tmp_path_factory: pytest.TempPathFactory) -> Dict[str, Any]:
    """The SD665 as captured, validate passing: built once for the tests of this file."""
    if not FIXTURES.is_dir():
        pytest.skip("../shared/fixtures is absent: the SD665 capture lives beside the checkout, not in it")
    return entry_of(tmp_path_factory.mktemp("sd665"), sd665_functions(FIXTURES), PASSING)


def kinds(report: Dict[str, Any], host: str) -> List[str]:
    return [change["kind"] for change in report["hosts"][host]["changes"]]


def test_sd665_pairs_each_h100_with_the_connectx7_of_its_root_port(
        shared_fixtures: Path, sd665_entry: Dict[str, Any]) -> None:
    entry = sd665_entry
    expected = sd665_expected_pairs(shared_fixtures)
    assert len(expected) == 4 and None not in expected.values()
    assert {gpu["address"]: gpu["nic"] for gpu in entry["gpus"]} == expected
    drawn = {node["address"]: node for node in entry["pcie_tree"]}
    for gpu in entry["gpus"]:  # the picture holds each GPU, its NIC and every bridge above both
        assert gpu["address"] in drawn and gpu["nic"] in drawn
        assert drawn[gpu["address"]]["parent"] in drawn


def test_an_unchanged_host_has_no_changes_also_through_json(sd665_entry: Dict[str, Any]) -> None:
    entry = sd665_entry
    first = fleet_report({"sd665": entry}, None, "2026-01-01T00:00:00Z")
    assert first["hosts"]["sd665"]["changes"] == [] and first["previous"] is None
    again = fleet_report({"sd665": entry}, json.loads(json.dumps(first)), "2026-01-02T00:00:00Z", "fleet-1.json")
    assert again["hosts"]["sd665"]["changes"] == [] and again["summary"]["changed"] == 0
    assert again["previous"] == {"generated": "2026-01-01T00:00:00Z", "name": "fleet-1.json"}


def test_a_removed_and_a_new_gpu_are_named(shared_fixtures: Path, sd665_entry: Dict[str, Any],
                                           tmp_path: Path) -> None:
    functions = sd665_functions(shared_fixtures)
    full = sd665_entry
    lost = entry_of(tmp_path / "lost", [f for f in functions if f.address != "0000:c6:00.0"])
    report = fleet_report({"sd665": lost}, fleet_report({"sd665": full}))
    assert report["hosts"]["sd665"]["changes"] == [{"kind": "gpu_removed", "detail": "GPU 0000:c6:00.0 (10de:2330)"}]
    assert kinds(fleet_report({"sd665": full}, fleet_report({"sd665": lost})), "sd665") == ["gpu_added"]


def test_a_group_no_longer_viable_and_the_flipped_verdicts(shared_fixtures: Path, sd665_entry: Dict[str, Any],
                                                           tmp_path: Path) -> None:
    """The H100 at 06:00.0 moved into the group of the host's ISA bridge (what a BIOS update turning ACS off
    does): its group is no longer viable, and validate's verdict flips with the failing check given."""
    functions = sd665_functions(shared_fixtures)
    isa = next(f for f in functions if f.config[0x0A:0x0C] == bytes([0x01, 0x06]))
    merged = [dataclasses.replace(f, iommu_group=isa.iommu_group) if f.address == "0000:06:00.0" else f
              for f in functions]
    before = sd665_entry
    after = entry_of(tmp_path / "after", merged, FAILING)
    report = fleet_report({"sd665": after}, fleet_report({"sd665": before}))
    changes = report["hosts"]["sd665"]["changes"]
    no_longer = [c for c in changes if c["kind"] == "group_no_longer_viable"]
    assert len(no_longer) == 1
    assert no_longer[0]["detail"].startswith("GPU 0000:06:00.0: IOMMU group %s" % isa.iommu_group)
    assert isa.address in no_longer[0]["detail"]
    assert {"kind": "verdict_flipped", "detail": "validate: pass -> fail"} in changes
    assert report["hosts"]["sd665"]["state"] == "not_ready"
    assert report["hosts"]["sd665"]["prepare_would_change"] == [
        {"check": "vfio_devices", "detail": "0000:06:00.0 is on nvidia", "fix": "run prepare"}]


def test_new_removed_and_failed_hosts(tmp_path: Path) -> None:
    server = entry_of(tmp_path / "a", gpu_server(ServerShape(gpus=2, nvswitches=1, sockets=2)))
    previous = fleet_report({"a": server, "gone": server})
    report = fleet_report({"a": server, "b": server, "down": host_entry(None, None)}, previous)
    assert kinds(report, "b") == ["host_added"] and kinds(report, "a") == []
    assert report["removed_hosts"] == ["gone"] and report["summary"]["removed"] == 1
    assert report["hosts"]["down"]["state"] == "failed" and "unreachable" in report["hosts"]["down"]["failure"]
    assert report["summary"]["failed"] == 1 and report["summary"]["hosts"] == 3
    assert report["hosts"]["a"]["counts"] is not None and len(report["hosts"]["a"]["gpus"]) == 2
    assert len(report["hosts"]["a"]["nvswitches"]) == 1
