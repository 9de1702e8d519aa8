# Copyright: contributors to confidential_gpu.host
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Role validate's report (issue 18 point 5, docs/validate.md "Report"): per host a JSON document, one for the run,
the raw benchmark outputs apart, and one self-contained HTML page (inline CSS and SVG, no script, no network).

Inputs are what the role leaves: ``validate_checks`` (readiness lines) and ``validate_performance`` (runner,
repetitions, raw outputs, the validate_verdict filter's verdict, timings, host facts); either may be missing
(part not asked, or the host failed before it). The keys are stable and versioned by SCHEMA_VERSION.
"""

from __future__ import annotations

import typing as t

from ansible_collections.confidential_gpu.host.plugins.plugin_utils.fleet_report_html import _e, _table
from ansible_collections.confidential_gpu.host.plugins.plugin_utils.validate_verdict import shown_ratio

SCHEMA_VERSION = 1
NOT_RUN = "not_run"
VERDICT_MEANINGS = (
    ("equivalent", "the whole interval of sandbox/native is at or above the threshold: bare-metal speed"),
    ("below", "the whole interval is under the threshold: the sandbox is slower (the likeliest cause is named)"),
    ("inconclusive", "the interval straddles the threshold, or too few repetitions: measure again, with more"),
    ("no GPU", "no NVIDIA GPU visible: the GPU metric was not measured (never silently left out)"),
)
PERFORMANCE_KEYS = ("runner", "handler", "image", "devices", "repetitions", "order")


def readiness_section(checks: t.Optional[t.Sequence[t.Mapping[str, t.Any]]]) -> t.Dict[str, t.Any]:
    """``state``: pass (no check failed), fail, or not_run; ``failed``: the names of the failed checks."""
    if checks is None:
        return {"state": NOT_RUN, "failed": [], "checks": []}
    rows = [{key: check.get(key, "") for key in ("name", "state", "detail", "fix")} for check in checks]
    failed = [row["name"] for row in rows if row["state"] == "fail"]
    return {"state": "fail" if failed else "pass", "failed": failed, "checks": rows}


def performance_section(host: str, performance: t.Optional[t.Mapping[str, t.Any]]) -> t.Dict[str, t.Any]:
    """The verdict per metric as validate_verdict gave it, with the run's shape; the raw outputs are in the raw file."""
    if not performance:
        return {"state": NOT_RUN, "message": "", "metrics": [], "timings": {}, "raw_file": None, "raw_runs": 0,
                **dict.fromkeys(PERFORMANCE_KEYS)}
    verdict = performance.get("verdict") or {}
    raw = performance.get("raw") or []
    return {"state": verdict.get("verdict", NOT_RUN), "message": verdict.get("message", ""),
            "metrics": list(verdict.get("metrics", [])), "timings": dict(performance.get("timings") or {}),
            "raw_file": raw_file_name(host) if raw else None, "raw_runs": len(raw),
            **{key: performance.get(key) for key in PERFORMANCE_KEYS}}


def raw_file_name(host: str) -> str:
    return "%s.raw.json" % host


def header(context: t.Mapping[str, t.Any]) -> t.Dict[str, t.Any]:
    return {"schema_version": SCHEMA_VERSION, "report": "validate", "name": context.get("name", "validate"),
            "generated": context.get("generated", ""), "collection_version": context.get("collection_version", "")}


def host_report(host: str, checks: t.Optional[t.Sequence[t.Mapping[str, t.Any]]],
                performance: t.Optional[t.Mapping[str, t.Any]], context: t.Mapping[str, t.Any],
                facts: t.Optional[t.Mapping[str, t.Any]] = None, failure: str = "") -> t.Dict[str, t.Any]:
    """One host's document: header, host facts (``facts`` then the performance part's), readiness, performance."""
    host_facts = dict(facts or {})
    host_facts.update((performance or {}).get("host_facts") or {})
    return dict(header(context), host=host, host_facts=host_facts, readiness=readiness_section(checks),
                performance=performance_section(host, performance), failure=failure)


def host_raw(host: str, performance: t.Optional[t.Mapping[str, t.Any]],
             context: t.Mapping[str, t.Any]) -> t.Dict[str, t.Any]:
    """The raw file: every benchmark run's command, exit status, output and duration, in the order they ran."""
    return dict(header(context), host=host, raw=list((performance or {}).get("raw") or []))


def run_report(hosts: t.Mapping[str, t.Optional[t.Mapping[str, t.Any]]],
               context: t.Mapping[str, t.Any]) -> t.Dict[str, t.Any]:
    """Every host's document (a host without one failed before validate judged it) and the counts by state."""
    documents = {name: dict(document) if document else host_report(
        name, None, None, context, failure="no result: the host failed before validate judged it")
        for name, document in sorted(hosts.items())}
    summary: t.Dict[str, int] = {"hosts": len(documents)}
    for document in documents.values():
        for part in ("readiness", "performance"):
            key = "%s_%s" % (part, document[part]["state"])
            summary[key] = summary.get(key, 0) + 1
    return dict(header(context), summary=summary, hosts=documents)


# --------------------------------------------------------------------------------------------------------------
# The page

STYLE = """body{font-family:sans-serif;margin:1em 2em;color:#222}table{border-collapse:collapse;margin:.5em 0}
th,td{border:1px solid #bbb;padding:2px 6px;text-align:left;font-size:90%}th{background:#eee}
.fail,.below{background:#f8d0d0}.pass,.equivalent{background:#cfe9c4}.inconclusive{background:#fff1c2}
section{border-top:2px solid #999;margin-top:1.5em}svg text{font-family:sans-serif;font-size:11px}"""
COLORS = {"equivalent": "#2e7d32", "below": "#c62828", "inconclusive": "#b7791f"}
CHART = {"label": 330, "plot": 360, "numbers": 300, "row": 22, "top": 28}


def axis_range(metrics: t.Sequence[t.Mapping[str, t.Any]]) -> t.Tuple[float, float]:
    """The ratio axis: every ratio, interval end and threshold in view, 1.0 always, clamped to [0, 2] (an
    infinite ratio, null in the report, is beyond it)."""
    values = [1.0]
    for record in metrics:
        values.append(record["threshold"])
        if record.get("interval") is not None:
            values += [2.0 if value is None else value for value in [record["ratio"]] + list(record["interval"])]
    low = max(0.0, int(min(values) * 20 - 1) / 20.0)
    high = min(2.0, int(max(values) * 20 + 2) / 20.0)
    return low, high


def chart_svg(slug: str, host: str, metrics: t.Sequence[t.Mapping[str, t.Any]]) -> str:
    """Per metric a row: its name, the interval as a bar, the ratio as a point, the threshold as a red line, and
    the numbers as text; each row a ``<g class="metric">`` with a ``<title>``."""
    low, high = axis_range(metrics)
    left, width, row, top = CHART["label"], CHART["plot"], CHART["row"], CHART["top"]

    def x(value: t.Optional[float]) -> float:
        """The place of a ratio on the axis; null (infinite) at its high end."""
        return round(left + (min(max(high if value is None else value, low), high) - low) / (high - low) * width, 1)

    height = top + row * len(metrics) + 10
    parts = ['<svg xmlns="http://www.w3.org/2000/svg" id="%s-chart" role="img" aria-labelledby="%s-chart-title" '
             'width="%d" height="%d"><title id="%s-chart-title">%s: sandbox/native ratio per metric, with its '
             'interval and threshold</title>' % (slug, slug, left + width + CHART["numbers"], height, slug, _e(host))]
    step = 0.05 if high - low <= 0.5 else 0.1 if high - low <= 1 else 0.25
    for tick in range(int(round(low / step)), int(high / step + 1e-9) + 1):
        value = tick * step
        parts.append('<line x1="%s" x2="%s" y1="%d" y2="%d" stroke="%s"/><text x="%s" y="%d" '
                     'text-anchor="middle">%.2f</text>' % (x(value), x(value), top - 6, height - 10,
                                                           "#555" if abs(value - 1) < 1e-9 else "#ddd", x(value),
                                                           top - 10, value))
    for index, record in enumerate(metrics):
        y = top + row * index + row // 2
        color = COLORS.get(record["verdict"], "#777")
        threshold = record["threshold"]
        numbers = ("%s [%s, %s] threshold %.2f %s" % (shown_ratio(record["ratio"]), shown_ratio(record["interval"][0]),
                                                      shown_ratio(record["interval"][1]), threshold, record["verdict"])
                   if record.get("interval") is not None else "%s" % record["verdict"])
        parts.append('<g class="metric" data-metric="%s" data-verdict="%s"><title>%s: %s</title>'
                     % (_e(record["name"]), _e(record["verdict"]), _e(record["name"]), _e(numbers)))
        parts.append('<text x="%d" y="%d" text-anchor="end">%s</text>' % (left - 6, y + 4, _e(record["name"])))
        parts.append('<line class="threshold" data-threshold="%s" x1="%s" x2="%s" y1="%d" y2="%d" stroke="#c62828" '
                     'stroke-width="2"/>' % (threshold, x(threshold), x(threshold), y - row // 2, y + row // 2))
        if record.get("interval") is not None:
            parts.append('<line class="interval" x1="%s" x2="%s" y1="%d" y2="%d" stroke="%s" stroke-width="6" '
                         'stroke-opacity="0.4"/><circle class="ratio" cx="%s" cy="%d" r="4" fill="%s"/>'
                         % (x(record["interval"][0]), x(record["interval"][1]), y, y, color, x(record["ratio"]), y,
                            color))
        parts.append('<text class="numbers" x="%d" y="%d" fill="%s">%s</text></g>'
                     % (left + width + 8, y + 4, color, _e(numbers)))
    return "".join(parts) + "</svg>"


def host_section(index: int, document: t.Mapping[str, t.Any]) -> str:
    host = document["host"]
    readiness, performance = document["readiness"], document["performance"]
    parts = ['<section id="host-%d" data-host="%s"><h2>%s: readiness %s, performance %s</h2>' % (
        index, _e(host), _e(host), _e(readiness["state"]), _e(performance["state"]))]
    if document.get("failure"):
        parts.append("<p>%s</p>" % _e(document["failure"]))
    if document["host_facts"]:
        parts.append("<h3>Host facts</h3>" + _table(("fact", "value"), sorted(document["host_facts"].items())))
    if readiness["checks"]:
        parts.append("<h3>Readiness</h3><table class=\"readiness\"><thead><tr><th>check</th><th>state</th>"
                     "<th>detail</th><th>fix</th></tr></thead><tbody>%s</tbody></table>" % "".join(
                         '<tr><td>%s</td><td class="%s">%s</td><td>%s</td><td>%s</td></tr>' % (
                             _e(c["name"]), _e(c["state"]), _e(c["state"]), _e(c["detail"]), _e(c["fix"]))
                         for c in readiness["checks"]))
    if performance["metrics"]:
        parts.append("<h3>Performance: sandbox against native</h3><p>Runner %s, handler %s, image %s, devices %s, "
                     "%s repetitions each way.</p>" % (
                         _e(performance["runner"]), _e(performance["handler"]), _e(performance["image"]),
                         _e(", ".join(performance["devices"] or []) or "none"), _e(performance["repetitions"])))
        parts.append('<div class="chart">%s</div><p>Sandbox/native ratio of medians (point; above 1 the sandbox is '
                     'faster, latencies inverted), its 95%% bootstrap interval (bar) and the metric\'s threshold (red '
                     'line); values beyond the axis are drawn at its end.</p>'
                     % chart_svg("h%d" % index, host, performance["metrics"]))
        parts.append('<table class="metrics"><thead><tr>%s</tr></thead><tbody>%s</tbody></table>' % (
            "".join("<th>%s</th>" % h for h in ("metric", "unit", "native median", "sandbox median", "ratio",
                                                "interval low", "interval high", "threshold", "verdict", "cause")),
            "".join(metric_row(record) for record in performance["metrics"])))
    if performance["timings"]:
        parts.append("<h3>Timings (s)</h3>" + _table(("part", "seconds"), sorted(performance["timings"].items())))
    return "".join(parts) + "</section>"


def metric_row(record: t.Mapping[str, t.Any]) -> str:
    measured = record.get("interval") is not None
    cells = (record.get("unit"), record.get("native_median"), record.get("sandbox_median"),
             *(shown_ratio(value) if measured else None
               for value in (record.get("ratio"), *(record.get("interval") or [None, None]))),
             record["threshold"])
    return '<tr data-metric="%s"><td>%s</td>%s<td class="%s">%s</td><td>%s</td></tr>' % (
        _e(record["name"]), _e(record["name"]), "".join("<td>%s</td>" % ("-" if c is None else _e(c)) for c in cells),
        _e(record["verdict"]), _e(record["verdict"]), _e(record.get("cause") or ""))


def run_html(report: t.Mapping[str, t.Any]) -> str:
    """The page of a run: name, time, collection version, the counts, the verdicts' meanings, then each host."""
    hosts = report["hosts"]
    counts = ", ".join("%s %d" % (key.replace("_", " "), value) for key, value in sorted(report["summary"].items())
                       if key != "hosts")
    return "".join([
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>Validation report %s</title>'
        % _e(report["name"]),
        "<style>%s</style></head><body><h1>Validation report %s</h1>" % (STYLE, _e(report["name"])),
        '<p id="run">Generated %s by confidential_gpu.host %s; %d hosts: %s.</p>' % (
            _e(report["generated"]), _e(report["collection_version"]), report["summary"]["hosts"], _e(counts)),
        "<details open><summary>What the verdicts mean</summary>%s</details>"
        % _table(("verdict", "meaning"), VERDICT_MEANINGS),
        "".join(host_section(index, hosts[name]) for index, name in enumerate(sorted(hosts))),
        "</body></html>\n",
    ])
