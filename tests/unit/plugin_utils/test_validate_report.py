"""Role validate's report (plugins/plugin_utils/validate_report.py): JSON documents and the HTML page, built from
verdicts that the validate_verdict filter computes on the real benchmark outputs of tests/fixtures/benchmarks/;
the page opened offline in headless Chromium must show one mark per metric, the thresholds, and the JSON's numbers.

The runs: a host whose sandbox has one vCPU against two native threads (sysbench on 2 threads natively, on 1 in the
sandbox: below), GEMM and memory measured alike on both sides (equivalent), bandwidthTest from three different
GPUs spread over both sides (inconclusive), and the nvbandwidth metrics marked "no GPU".
"""

from __future__ import annotations

import json
import re
import sys
from html.parser import HTMLParser
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import pytest

from conftest import REPO

sys.path.insert(0, str(REPO / "tests" / "lib"))
from headless_browser import dump_dom  # noqa: E402

from ansible_collections.confidential_gpu.host.plugins.filter.validate import (  # noqa: E402
    validate_no_gpu,
    validate_parse,
    validate_report_host,
    validate_report_html,
    validate_report_raw,
    validate_report_run,
    validate_verdict,
)

BENCH = REPO / "tests" / "fixtures" / "benchmarks"
CONTEXT = {"name": "lab-check", "generated": "2026-12-06T10:00:00Z", "collection_version": "0.1.0"}
FACTS = {"sandbox_vcpus": 1, "native_threads": 2, "hugepages_backing": True}
CHECKS = [{"name": "iommu", "state": "pass", "detail": "the IOMMU is on", "fix": ""},
          {"name": "hugepages", "state": "fail", "detail": "2M node 0: 0 of 16 pages", "fix": "rerun prepare"},
          {"name": "cc_state", "state": "not_asked", "detail": "cc_host_technology none", "fix": ""}]


def output(path: str) -> str:
    return (BENCH / path).read_bytes().decode()


def runs() -> Tuple[List[Any], List[Any], List[Dict[str, Any]]]:
    """Three repetitions per side, each run the metrics of every benchmark, and the raw records as the role keeps
    them (side, repetition, benchmark, command, rc, output, seconds)."""
    cpu = {side: validate_parse(output("sysbench-1.0.20/cpu-threads-%d.txt" % threads), "sysbench", "cpu_all")
           for side, threads in (("native", 2), ("sandbox", 1))}
    mbw = validate_parse(output("mbw-1.2.2/mbw-n3-64.txt"), "mbw")
    gemm = validate_parse(output("gpu-burn-18e6cce/a100-sxm4-80gb-x8-doubles-tc.txt"), "gpu_burn")
    bandwidth = {gpu: validate_parse(output("cuda-samples-bandwidthTest/%s.txt" % gpu), "bandwidthTest")
                 for gpu in ("a100", "v100")}
    gpus = {"native": ["a100", "a100", "v100"], "sandbox": ["a100", "v100", "v100"]}
    # nvbandwidth did not run: its metrics say "no GPU" (GEMM came from gpu-burn)
    no_nvbandwidth = [m for m in validate_no_gpu() if m["name"].startswith("nvbandwidth.")]
    sides: Dict[str, List[Any]] = {"native": [], "sandbox": []}
    raw = []
    for repetition in range(3):
        for side in ("native", "sandbox"):
            sides[side].append(cpu[side] + mbw + gemm + bandwidth[gpus[side][repetition]] + no_nvbandwidth)
            raw.append({"side": side, "repetition": repetition, "benchmark": "bandwidthTest",
                        "command": "bandwidthTest", "rc": 0,
                        "output": output("cuda-samples-bandwidthTest/%s.txt" % gpus[side][repetition]),
                        "seconds": 1.5})
    return sides["native"], sides["sandbox"], raw


def performance() -> Dict[str, Any]:
    native, sandbox, raw = runs()
    return {"runner": "containerd", "handler": "runc", "image": "localhost/validate:lab", "repetitions": 3,
            "order": [[side, rep] for rep in range(3) for side in ("native", "sandbox")], "raw": raw,
            "verdict": validate_verdict(native, sandbox, {"gemm.sum": "0.98"}, FACTS),
            "timings": {"readiness": 12.5, "performance": 301.0}, "host_facts": FACTS}


@pytest.fixture(scope="module")
def report() -> Dict[str, Any]:
    measured = performance()
    documents = {"gpu1": validate_report_host("gpu1", CHECKS, measured, CONTEXT, {"cpu_vendor": "amd"}),
                 "gpu2": validate_report_host("gpu2", CHECKS[:1], None, CONTEXT), "lost": None}
    return {"performance": measured, "run": validate_report_run(documents, CONTEXT)}


def test_the_verdicts_from_the_real_outputs_cover_every_meaning(report: Dict[str, Any]) -> None:
    verdicts = {m["name"]: m["verdict"] for m in report["performance"]["verdict"]["metrics"]}
    assert verdicts["cpu_all.events_per_second"] == "below"
    assert verdicts["gemm.sum"] == verdicts["gemm.min"] == verdicts["mbw.dumb"] == "equivalent"
    assert verdicts["bandwidthTest.host_to_device"] == "inconclusive"
    assert verdicts["nvbandwidth.device_local_copy.sum"] == "no GPU"


def test_the_host_document_has_the_documented_keys_and_the_verdicts_numbers(report: Dict[str, Any]) -> None:
    document = report["run"]["hosts"]["gpu1"]
    assert sorted(document) == ["collection_version", "failure", "generated", "host", "host_facts", "name",
                                "performance", "readiness", "report", "schema_version"]
    assert (document["schema_version"], document["report"], document["name"], document["generated"],
            document["collection_version"]) == (1, "validate", "lab-check", "2026-12-06T10:00:00Z", "0.1.0")
    assert document["host_facts"] == dict(FACTS, cpu_vendor="amd")
    assert document["readiness"] == {"state": "fail", "failed": ["hugepages"], "checks": CHECKS}
    measured = document["performance"]
    assert measured["state"] == "below" and measured["metrics"] == report["performance"]["verdict"]["metrics"]
    gemm = next(m for m in measured["metrics"] if m["name"] == "gemm.sum")
    assert (gemm["ratio"], gemm["interval"], gemm["threshold"]) == (1.0, [1.0, 1.0], 0.98)
    assert "cpu_all.events_per_second below" in measured["message"]
    assert (measured["raw_file"], measured["raw_runs"], measured["runner"], measured["repetitions"]) == (
        "gpu1.raw.json", 6, "containerd", 3)
    assert "raw" not in measured and "output" not in json.dumps(document), "raw outputs live in the raw file"
    raw = validate_report_raw("gpu1", report["performance"], CONTEXT)
    assert raw["host"] == "gpu1" and raw["raw"] == report["performance"]["raw"] and raw["schema_version"] == 1


def test_the_run_document_counts_and_keeps_hosts_without_a_result(report: Dict[str, Any]) -> None:
    run = report["run"]
    assert run["summary"] == {"hosts": 3, "readiness_fail": 1, "readiness_pass": 1, "readiness_not_run": 1,
                              "performance_below": 1, "performance_not_run": 2}
    assert run["hosts"]["gpu2"]["performance"]["state"] == "not_run"
    assert run["hosts"]["lost"]["failure"] == "no result: the host failed before validate judged it"
    assert json.loads(json.dumps(run)) == run, "the document is plain JSON"


class Page(HTMLParser):
    """From the DOM: the chart's marks per host section, the threshold lines, the numbers shown next to each mark,
    and the metrics table's cells."""

    def __init__(self) -> None:
        super().__init__()
        self.host = ""
        self.metric: Optional[str] = None
        self.marks: Dict[str, Dict[str, Dict[str, Any]]] = {}
        self.in_numbers = False
        self.row: Optional[str] = None
        self.cells: Dict[str, Dict[str, List[str]]] = {}
        self.cell = ""
        self.in_cell = False

    def handle_starttag(self, tag: str, attrs: List[Tuple[str, Optional[str]]]) -> None:
        attr = dict(attrs)
        classes = (attr.get("class") or "").split()
        if tag == "section":
            self.host = attr.get("data-host") or ""
        elif tag == "g" and "metric" in classes:
            self.metric = attr.get("data-metric") or ""
            self.marks.setdefault(self.host, {})[self.metric] = {"ratio": 0, "threshold": [], "numbers": ""}
        elif self.metric is not None and tag == "circle" and "ratio" in classes:
            self.marks[self.host][self.metric]["ratio"] += 1
        elif self.metric is not None and tag == "line" and "threshold" in classes:
            self.marks[self.host][self.metric]["threshold"].append(float(attr["data-threshold"] or "nan"))
        elif self.metric is not None and tag == "text" and "numbers" in classes:
            self.in_numbers = True
        elif tag == "tr" and attr.get("data-metric"):
            self.row = attr["data-metric"]
            self.cells.setdefault(self.host, {})[self.row or ""] = []
        elif tag == "td" and self.row:
            self.in_cell, self.cell = True, ""

    def handle_endtag(self, tag: str) -> None:
        if tag == "g":
            self.metric = None
        elif tag == "text":
            self.in_numbers = False
        elif tag == "td" and self.in_cell:
            self.cells[self.host][self.row or ""].append(self.cell)
            self.in_cell = False
        elif tag == "tr":
            self.row = None

    def handle_data(self, data: str) -> None:
        if self.in_numbers and self.metric is not None:
            self.marks[self.host][self.metric]["numbers"] += data
        if self.in_cell:
            self.cell += data


def test_an_infinite_ratio_is_null_in_the_json_and_inf_on_the_page() -> None:
    """A latency the sandbox measured as 0 in two of three runs: ratio and the interval's high end are infinite,
    null in the document (standard JSON), "inf" in the chart and the table, and the page still renders."""
    def latency(value: float) -> List[Dict[str, Any]]:
        return [{"name": "lat.avg", "value": value, "unit": "ms", "higher_is_better": False}]

    measured = dict(performance(), verdict=validate_verdict([latency(1.0)] * 3,
                                                            [latency(0.0), latency(0.0), latency(2.0)], {}, FACTS))
    run = validate_report_run({"gpu1": validate_report_host("gpu1", CHECKS[:1], measured, CONTEXT)}, CONTEXT)
    (record,) = run["hosts"]["gpu1"]["performance"]["metrics"]
    assert (record["ratio"], record["interval"], record["verdict"]) == (None, [0.5, None], "inconclusive")
    assert json.loads(json.dumps(run, allow_nan=False)) == run
    page = validate_report_html(run)
    assert "inf [0.5000, inf] threshold 0.95 inconclusive" in page
    assert "<td>inf</td><td>0.5000</td><td>inf</td><td>0.95</td>" in page


def test_the_page_needs_nothing_from_the_network(report: Dict[str, Any]) -> None:
    page = validate_report_html(report["run"])
    assert not re.search(r"<script|<link|<img|\bsrc=|url\(|@import|href=\"http", page), "the page loads nothing"
    assert set(re.findall(r"https?://[^\"' ]+", page)) == {"http://www.w3.org/2000/svg"}, "only the SVG namespace"
    for needle in ("Validation report lab-check", "2026-12-06T10:00:00Z", "confidential_gpu.host 0.1.0",
                   "cpu_vendor", "the interval straddles the threshold"):
        assert needle in page


def test_the_page_in_chromium_shows_one_mark_per_metric_the_thresholds_and_the_jsons_numbers(
        report: Dict[str, Any], tmp_path: Path) -> None:
    (tmp_path / "validate.html").write_text(validate_report_html(report["run"]))
    page = Page()
    page.feed(dump_dom(tmp_path / "validate.html", tmp_path / "chromium-profile"))

    metrics = {m["name"]: m for m in report["run"]["hosts"]["gpu1"]["performance"]["metrics"]}
    marks = page.marks["gpu1"]
    assert sorted(marks) == sorted(metrics), "a row in the chart for every metric"
    assert set(page.marks) == {"gpu1"}, "hosts without a performance part have no chart"
    for name, record in metrics.items():
        mark = marks[name]
        assert mark["threshold"] == [record["threshold"]], name
        if record["ratio"] is None:
            assert mark["ratio"] == 0 and mark["numbers"] == record["verdict"] == "no GPU", name
            continue
        assert mark["ratio"] == 1, name
        shown = re.fullmatch(r"([0-9.]+) \[([0-9.]+), ([0-9.]+)\] threshold ([0-9.]+) (\w+)", mark["numbers"])
        assert shown, mark["numbers"]
        assert [float(v) for v in shown.groups()[:4]] == [record["ratio"]] + record["interval"] + [record["threshold"]]
        assert shown.group(5) == record["verdict"]
        cells = page.cells["gpu1"][name]
        assert cells[0] == name and float(cells[4]) == record["ratio"] and cells[8] == record["verdict"]
        assert [float(cells[5]), float(cells[6]), float(cells[7])] == record["interval"] + [record["threshold"]]
        assert float(cells[2]) == record["native_median"] and float(cells[3]) == record["sandbox_median"]
