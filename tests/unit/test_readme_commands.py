"""The README's first command, run as the README gives it: the main job on the embedded default host.

README.md opens with two commands. The second (``./scripts/test``) is what CI runs (.ci/run). This runs the
first (``./scripts/run``: the fleet report of the lab VM, tests/lab, booted and stopped by the script itself)
and reads what it wrote, so that the README stays true. The reports go below ``CGPU_REPORTS_DIR`` (a temporary
directory) instead of the checkout's reports/. One lab VM boot and one report.yml run: about 70 s here.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from html.parser import HTMLParser
from typing import Any, Dict, List, Optional, Set, Tuple

import pytest
from conftest import REPO

sys.path.insert(0, str(REPO / "tests" / "lib"))
from required_tools import require_tool  # noqa: E402

# The lab VM (docs/lab.md): its inventory name, the boot disk's and the management NIC's functions.
LAB_HOST = "gpu-lab"
LAB_BOOT_DISK = "0000:00:03.0"
LAB_MANAGEMENT_NIC = "0000:00:04.0"
# The lab's GPU stand-in and its audio function (one IOMMU group), which scripts/run names for vfio-pci.
LAB_GPU_FUNCTIONS = ("0000:02:00.0", "0000:02:00.1")


def readme_commands() -> List[str]:
    """The commands of the README's shell blocks, in order."""
    blocks = re.findall(r"```sh\n(.*?)```", (REPO / "README.md").read_text(encoding="utf-8"), re.DOTALL)
    return [line.strip() for block in blocks for line in block.splitlines() if line.strip()]


def test_readme_opens_with_the_main_job_then_the_test_command() -> None:
    commands = readme_commands()
    assert commands[:2] == ["./scripts/run", "./scripts/test"], commands[:2]
    assert "exec ./scripts/test" in (REPO / ".ci" / "run").read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def main_job(tmp_path_factory: pytest.TempPathFactory) -> Dict[str, Any]:
    """Run the README's first command once; its output and the directory its reports went to."""
    require_tool("qemu-system-x86_64", "the README's main job boots the lab VM")
    reports = tmp_path_factory.mktemp("reports")
    command = readme_commands()[0]
    proc = subprocess.run(["bash", "-c", command], cwd=REPO, capture_output=True, text=True, timeout=1200,
                          env=dict(os.environ, CGPU_REPORTS_DIR=str(reports)), check=False)
    output = "%s\n%s" % (proc.stdout[-4000:], proc.stderr[-4000:])
    assert proc.returncode == 0, "%s failed (%d):\n%s" % (command, proc.returncode, output)
    return {"reports": reports, "stdout": proc.stdout}


def test_main_job_says_where_its_reports_are(main_job: Dict[str, Any]) -> None:
    assert "the fleet report: %s/fleet/fleet.html" % main_job["reports"] in main_job["stdout"]
    recap = re.search(r"^%s\s+: ok=\d+\s+changed=\d+\s+unreachable=(\d+)\s+failed=(\d+)" % LAB_HOST,
                      main_job["stdout"], re.MULTILINE)
    assert recap is not None and recap.groups() == ("0", "0"), main_job["stdout"][-3000:]


def test_fleet_report_reads_the_lab_vm(main_job: Dict[str, Any]) -> None:
    report = json.loads((main_job["reports"] / "fleet" / "fleet.json").read_text(encoding="utf-8"))
    assert list(report["hosts"]) == [LAB_HOST] and report["summary"]["hosts"] == 1
    entry = report["hosts"][LAB_HOST]
    assert not entry["failure"] and entry["state"] != "failed", entry["failure"]
    assert entry["cc"]["vfio_ready"] is True, entry["cc"]["reasons"]  # the lab boots with its IOMMU on
    critical = {item["address"]: item["kind"] for item in entry["host_critical"]}
    assert critical.get(LAB_BOOT_DISK) == "boot_disk" and critical.get(LAB_MANAGEMENT_NIC) == "default_route"
    # validate's readiness part ran (in check mode): each check judged, and the ones that failed are what
    # prepare would change.
    checks = entry["validate"]["checks"]
    assert checks and {check["state"] for check in checks} <= {"pass", "fail", "not_asked"}
    assert [item["check"] for item in entry["prepare_would_change"]] == [
        check["name"] for check in checks if check["state"] == "fail"]
    # scripts/run names the GPU stand-in: prepare would bind it with its group's other function.
    would_change = {item["check"]: item["detail"] for item in entry["prepare_would_change"]}
    assert all(address in would_change.get("vfio_devices", "") for address in LAB_GPU_FUNCTIONS), would_change
    assert len(list((main_job["reports"] / "fleet" / "history").glob("fleet-*.json"))) == 1


class ElementIds(HTMLParser):
    """Every element id of a page (attribute values unescaped: dot writes "-" in ids as &#45;)."""

    def __init__(self) -> None:
        super().__init__()
        self.ids: Set[str] = set()

    def handle_starttag(self, tag: str, attrs: List[Tuple[str, Optional[str]]]) -> None:
        self.ids.update(value for name, value in attrs if name == "id" and value)


def test_fleet_page_draws_the_lab_vms_tree(main_job: Dict[str, Any]) -> None:
    page = (main_job["reports"] / "fleet" / "fleet.html").read_text(encoding="utf-8")
    assert page.startswith("<!DOCTYPE html>")
    parser = ElementIds()
    parser.feed(page)
    wanted = {"host-0", "h0--nic--" + LAB_MANAGEMENT_NIC, "h0--storage--" + LAB_BOOT_DISK}
    assert wanted <= parser.ids, sorted(parser.ids)


def test_discovery_reports_per_host(main_job: Dict[str, Any]) -> None:
    found = json.loads((main_job["reports"] / "discovery" / ("%s.json" % LAB_HOST)).read_text(encoding="utf-8"))
    addresses = {dev["address"] for dev in found["pci"]["devices"]}
    assert {LAB_BOOT_DISK, LAB_MANAGEMENT_NIC} <= addresses
    assert found["pci"]["summary"]["functions"] == len(addresses)
    summary = (main_job["reports"] / "discovery" / ("%s.txt" % LAB_HOST)).read_text(encoding="utf-8")
    assert summary.startswith("%s: " % LAB_HOST)
