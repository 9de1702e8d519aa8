"""playbooks/report.yml end to end on two fake-root hosts, its page opened in headless Chromium (issue 20 points 2
and 4): the Lenovo SD665-N V3 rebuilt from its captured ``lspci -tv`` (../shared/fixtures) and a synthetic
two-socket server whose previous report, in the history directory, had one GPU more."""

from __future__ import annotations

import json
import os
import sys
from html.parser import HTMLParser
from pathlib import Path
from typing import Dict, List, Tuple

import pytest
from conftest import REPO

sys.path.insert(0, str(REPO / "tests" / "lib"))
from fake_sysfs import ServerShape, build_tree, gpu_server  # noqa: E402
from fleet_hosts import entry_of, sd665_expected_pairs, sd665_functions  # noqa: E402
from headless_browser import dump_dom  # noqa: E402
from required_tools import require_tool  # noqa: E402
from prepare_run import playbook  # noqa: E402

from ansible_collections.confidential_gpu.host.plugins.plugin_utils.fleet_report import fleet_report  # noqa: E402

INVENTORY = """all:
  vars:
    ansible_connection: local
    ansible_python_interpreter: "{{ ansible_playbook_python }}"
  hosts:
    sd665: {confidential_gpu_root: %s}
    hgx: {confidential_gpu_root: %s}
"""


class IdsBySection(HTMLParser):
    """Element ids and summary rows of the dumped DOM, by the host section (data-host) they are in."""

    def __init__(self) -> None:
        super().__init__()
        self.section = ""
        self.ids: Dict[str, List[str]] = {}
        self.rows: Dict[str, List[str]] = {}
        self.row = ""

    def handle_starttag(self, tag: str, attrs: List[Tuple[str, str | None]]) -> None:
        attr = dict(attrs)
        if tag == "section":
            self.section = attr.get("data-host") or ""
        if tag == "tr" and attr.get("data-host"):
            self.row = attr["data-host"] or ""
            self.rows[self.row] = []
        if attr.get("id"):
            self.ids.setdefault(self.section, []).append(attr["id"] or "")

    def handle_endtag(self, tag: str) -> None:
        if tag == "tr":
            self.row = ""

    def handle_data(self, data: str) -> None:
        if self.row and data.strip():
            self.rows[self.row].append(data.strip())


def test_report_of_two_hosts_opens_offline_in_chromium(shared_fixtures: Path, tmp_path: Path) -> None:
    require_tool("dot", "Graphviz lays out the PCIe pictures")
    try:
        import graphviz  # noqa: F401
    except ImportError:
        if os.environ.get("CI") == "true":
            pytest.fail("the Python package graphviz (requirements.txt) is not installed")
        pytest.skip("the Python package graphviz (requirements.txt) is not installed")
    build_tree(tmp_path / "sd665", sd665_functions(shared_fixtures))
    build_tree(tmp_path / "hgx", gpu_server(ServerShape(gpus=2, nvswitches=1, sockets=2)))
    earlier = entry_of(tmp_path / "hgx-earlier", gpu_server(ServerShape(gpus=4, nvswitches=1, sockets=2)))
    history = tmp_path / "reports" / "history"
    history.mkdir(parents=True)
    (history / "fleet-2026-01-01T000000Z.json").write_text(json.dumps(
        fleet_report({"hgx": earlier}, None, "2026-01-01T00:00:00Z")))
    (tmp_path / "inventory.yml").write_text(INVENTORY % (tmp_path / "sd665", tmp_path / "hgx"))

    proc = playbook(REPO / "playbooks/report.yml", "-i", str(tmp_path / "inventory.yml"),
                    "-e", "report_dir=%s" % (tmp_path / "reports"))
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]

    report = json.loads((tmp_path / "reports" / "fleet.json").read_text())
    assert sorted(report["hosts"]) == ["hgx", "sd665"] and report["summary"]["hosts"] == 2
    sd665, hgx = report["hosts"]["sd665"], report["hosts"]["hgx"]
    pairs = {gpu["address"]: gpu["nic"] for gpu in sd665["gpus"]}
    assert pairs == sd665_expected_pairs(shared_fixtures)
    assert [c["kind"] for c in hgx["changes"]] == ["gpu_removed", "gpu_removed"] and sd665["changes"] == [
        {"kind": "host_added", "detail": "not in the previous report"}]
    assert report["previous"]["name"] == "fleet-2026-01-01T000000Z.json"
    assert hgx["validate"] is not None and sd665["validate"]["checks"], "validate's readiness part ran"
    assert len(list(history.glob("fleet-*.json"))) == 2, "the new report joined the history"

    page = (tmp_path / "reports" / "fleet.html").read_text()
    assert "<link" not in page and " src=" not in page and 'href="http' not in page, "the page loads nothing"
    dom = IdsBySection()
    dom.feed(dump_dom(tmp_path / "reports" / "fleet.html", tmp_path / "chromium-profile"))
    assert sorted(dom.rows) == ["hgx", "sd665"], "every host has its summary row"
    assert set(dom.ids) >= {"hgx", "sd665"}, "every host has its section"
    for name, entry in report["hosts"].items():
        row = dom.rows[name]
        assert row[2] == str(len(entry["gpus"])) and row[4] == str(len(entry["nvswitches"]))
        assert row[5] == str(len(entry["nics"])) and row[6] == str(sum(1 for g in entry["gpus"] if g["nic"]))
    assert "GPU 0000:" in " ".join(dom.rows["hgx"]), "the changed host says what changed"
    ids = dom.ids["sd665"]
    svg_gpus = sorted(i.split("--")[2] for i in ids if i.split("--")[1:2] == ["gpu"])
    svg_pairs = {i.split("--")[2]: i.split("--")[3] for i in ids if i.split("--")[1:2] == ["pair"]}
    assert svg_gpus == sorted(pairs) and len(svg_gpus) == 4
    assert svg_pairs == pairs and len(set(svg_pairs.values())) == 4, "each GPU drawn with its own NIC"
    assert all(any(i.endswith("--nic--" + nic) for i in ids) for nic in pairs.values())
