# Copyright: contributors to confidential_gpu.host
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The fleet report's HTML page: a summary table, then per host its PCIe tree as inline SVG laid out by Graphviz.

The page is rendered from the report's JSON alone (plugins/plugin_utils/fleet_report.py), needs no network
(no external CSS, scripts or fonts) and marks its parts with ids a test or a script can find (docs/report.md):
``host-<n>`` per host section, SVG nodes ``<slug>--<role>--<address>`` and GPU-NIC edges
``<slug>--pair--<gpu>--<nic>``. Graphviz (``dot``) lays out the picture; the Python binding ``graphviz`` writes
the DOT source and runs it.
"""

from __future__ import annotations

import functools
import html
import re
import typing as t

from ansible_collections.confidential_gpu.host.plugins.plugin_utils.fleet_report import STATES

try:
    import graphviz  # type: ignore[import-untyped]  # ships no type information (0.21)
except ImportError:  # reported by :func:`pcie_svg` when a page is asked for
    graphviz = None

ROLE_STYLE = {"gpu": ("GPU", "#b7e1a1"), "nvswitch": ("NVSwitch", "#c9d7f2"), "nic": ("NIC", "#f6d29b"),
              "storage": ("storage", "#e3e3e3"), "bridge": ("bridge", "#ffffff"), "other": ("other", "#ffffff")}
PORT_NAMES = {"root_port": "root port", "upstream_port": "switch upstream", "downstream_port": "switch downstream"}
STATE_WORDS = {"failed": "failed", "not_ready": "not ready", "ready_no_cc": "ready (no CC)", "ready_cc": "ready (CC)"}


class ReportRenderError(RuntimeError):
    """Graphviz is missing or failed: the message says what to install."""


def _node_name(address: str) -> str:
    return "n" + re.sub(r"[^0-9a-f]", "_", address)


def _label(node: t.Mapping[str, t.Any]) -> str:
    role, _color = ROLE_STYLE.get(node["role"], ROLE_STYLE["other"])
    if node["role"] == "bridge" and node.get("port_type") in PORT_NAMES:
        role = PORT_NAMES[node["port_type"]]
    return "%s %s\n%s %s" % (role, node["address"], node["device_id"], node.get("driver") or "no driver")


def pcie_dot(slug: str, entry: t.Mapping[str, t.Any]) -> t.Any:
    """The DOT graph of one host: NUMA nodes and IOMMU groups as clusters, the bridge tree as edges, each GPU's
    closest NIC as a dashed edge labelled with the link class."""
    if graphviz is None:
        raise ReportRenderError("the Python package graphviz is missing on the controller: pip install "
                                "graphviz (requirements.txt pins it) and the Debian package graphviz (dot)")
    graph = graphviz.Digraph(name=slug, graph_attr={"rankdir": "LR", "fontname": "sans-serif", "fontsize": "10",
                                                    "id": slug},
                             node_attr={"shape": "box", "style": "filled", "fontname": "sans-serif",
                                        "fontsize": "9"})
    tree = entry.get("pcie_tree", [])
    numa_groups: t.Dict[t.Any, t.Dict[t.Any, t.List[t.Mapping[str, t.Any]]]] = {}
    for node in tree:
        numa_groups.setdefault(node.get("numa_node"), {}).setdefault(node.get("iommu_group"), []).append(node)
    for numa, groups in sorted(numa_groups.items(), key=lambda item: str(item[0])):
        with graph.subgraph(name="cluster_numa_%s" % numa) as numa_graph:
            numa_graph.attr(label="NUMA node %s" % ("?" if numa is None else numa), style="rounded",
                            color="#7a7a7a", id="%s--numa--%s" % (slug, numa))
            for group, nodes in sorted(groups.items(), key=lambda item: str(item[0])):
                _group_cluster(numa_graph, slug, group, nodes, entry)
    drawn = {node["address"] for node in tree}
    for node in tree:
        if node.get("parent") in drawn:
            graph.edge(_node_name(node["parent"]), _node_name(node["address"]),
                       id="%s--link--%s--%s" % (slug, node["parent"], node["address"]))
    for gpu in entry.get("gpus", []):
        if gpu.get("nic") in drawn and gpu["address"] in drawn:
            graph.edge(_node_name(gpu["address"]), _node_name(gpu["nic"]), label="pair %s" % gpu["link"],
                       style="dashed", color="#c0392b", fontcolor="#c0392b", constraint="false", dir="both",
                       id="%s--pair--%s--%s" % (slug, gpu["address"], gpu["nic"]))
    return graph


def _group_cluster(parent: t.Any, slug: str, group: t.Any, nodes: t.Sequence[t.Mapping[str, t.Any]],
                   entry: t.Mapping[str, t.Any]) -> None:
    viable = {g["id"]: g["viable"] for g in entry.get("iommu_groups", [])}
    with parent.subgraph(name="cluster_group_%s" % group) as cluster:
        if group is None:
            cluster.attr(label="no IOMMU group", style="dotted")
        else:
            cluster.attr(label="IOMMU group %s%s" % (group, "" if viable.get(group, True) else " (not viable)"),
                         style="solid", color="#2e7d32" if viable.get(group, True) else "#c62828",
                         id="%s--group--%s" % (slug, group))
        for node in nodes:
            _role, color = ROLE_STYLE.get(node["role"], ROLE_STYLE["other"])
            cluster.node(_node_name(node["address"]), label=_label(node), fillcolor=color,
                         id="%s--%s--%s" % (slug, node["role"], node["address"]))


# Servers of one model have one PCIe tree: each distinct picture is laid out once (dot takes most of a large report's
# time, docs/report.md), drawn under this name, which the host's slug then replaces.
SLUG_PLACEHOLDER = "slugplaceholder0e5c1a9f"  # no "-": dot writes it as &#45; in ids


@functools.lru_cache(maxsize=512)
def _laid_out(dot_source: str) -> str:
    return graphviz.Source(dot_source).pipe(format="svg", encoding="utf-8")


def pcie_svg(slug: str, entry: t.Mapping[str, t.Any]) -> str:
    """The picture as an inline ``<svg>`` element (Graphviz's XML prologue and DOCTYPE dropped)."""
    graph = pcie_dot(SLUG_PLACEHOLDER, entry)
    try:
        svg = _laid_out(graph.source).replace(SLUG_PLACEHOLDER, slug)
    except graphviz.ExecutableNotFound as exc:
        raise ReportRenderError("Graphviz's dot is not on the controller's PATH: install the Debian package "
                                "graphviz (%s)" % exc) from exc
    except graphviz.CalledProcessError as exc:
        raise ReportRenderError("dot failed on the picture of %s: %s" % (slug, exc)) from exc
    return svg[svg.index("<svg"):]


STYLE = """body{font-family:sans-serif;margin:1em 2em;color:#222}table{border-collapse:collapse;margin:.5em 0}
th,td{border:1px solid #bbb;padding:2px 6px;text-align:left;font-size:90%}th{background:#eee;cursor:pointer}
tr.failed td.state,tr.not_ready td.state{background:#f8d0d0}tr.ready_cc td.state{background:#cfe9c4}
tr.ready_no_cc td.state{background:#fff1c2}td.changed{font-weight:bold;color:#a33}.picture{overflow-x:auto}
section{border-top:2px solid #999;margin-top:1.5em}code{font-size:95%}"""
SORT_SCRIPT = """document.querySelectorAll('#summary th').forEach(function(th,i){th.addEventListener('click',
function(){var body=th.closest('table').tBodies[0];var rows=Array.from(body.rows);var up=th.dataset.up!=='1';
th.dataset.up=up?'1':'0';rows.sort(function(a,b){var x=a.cells[i].dataset.key||a.cells[i].textContent;
var y=b.cells[i].dataset.key||b.cells[i].textContent;var n=parseFloat(x)-parseFloat(y);
var c=isNaN(n)?x.localeCompare(y):n;return up?c:-c;});rows.forEach(function(r){body.appendChild(r);});});});"""


def _e(value: t.Any) -> str:
    return html.escape("" if value is None else str(value))


def _yes(value: t.Any) -> str:
    return "-" if value is None else ("yes" if value else "no")


def _summary_row(index: int, name: str, entry: t.Mapping[str, t.Any]) -> str:
    cc = entry.get("cc") or {}
    gpus = entry.get("gpus", [])
    cells = [
        '<td data-key="%s"><a href="#host-%d">%s</a></td>' % (_e(name), index, _e(name)),
        '<td class="state" data-key="%d">%s</td>' % (STATES.index(entry["state"]), _e(STATE_WORDS[entry["state"]])),
        "<td>%d</td>" % len(gpus),
        "<td>%d</td>" % sum(1 for gpu in gpus if gpu["driver"] == "vfio-pci"),
        "<td>%d</td>" % len(entry.get("nvswitches", [])),
        "<td>%d</td>" % len(entry.get("nics", [])),
        "<td>%d</td>" % sum(1 for gpu in gpus if gpu.get("nic")),
        "<td>%d</td>" % sum(1 for group in entry.get("iommu_groups", []) if not group["viable"]),
        "<td>%d</td>" % len(entry.get("host_critical", [])),
        "<td>%s</td><td>%s</td><td>%s</td>" % (_yes(cc.get("vfio_ready")), _yes(cc.get("snp_ready")),
                                               _yes(cc.get("tdx_ready"))),
        "<td>%s</td>" % _e((entry.get("validate") or {}).get("verdict", "-")),
        '<td class="%s">%s</td>' % ("changed" if entry.get("changes") else "",
                                    _e("; ".join(c["detail"] if c["kind"] != "host_added" else "new host"
                                                 for c in entry.get("changes", [])) or "-")),
    ]
    return '<tr class="%s" data-host="%s">%s</tr>' % (entry["state"], _e(name), "".join(cells))


SUMMARY_HEAD = ("host", "state", "GPUs", "on vfio-pci", "NVSwitches", "NICs", "GPU-NIC pairs", "groups not viable",
                "host-critical", "vfio_ready", "snp_ready", "tdx_ready", "validate", "changes since last report")


def _table(head: t.Sequence[str], rows: t.Iterable[t.Sequence[t.Any]]) -> str:
    body = "".join("<tr>%s</tr>" % "".join("<td>%s</td>" % _e(cell) for cell in row) for row in rows)
    return "<table><thead><tr>%s</tr></thead><tbody>%s</tbody></table>" % (
        "".join("<th>%s</th>" % _e(h) for h in head), body)


def _host_section(index: int, name: str, entry: t.Mapping[str, t.Any]) -> str:
    parts = ['<section id="host-%d" data-host="%s"><h2>%s: %s</h2>' % (
        index, _e(name), _e(name), _e(STATE_WORDS[entry["state"]]))]
    if entry.get("failure"):
        return parts[0] + "<p>%s</p></section>" % _e(entry["failure"])
    if entry.get("changes"):
        parts.append("<h3>Changes since the last report</h3><ul>%s</ul>" % "".join(
            "<li>%s: %s</li>" % (_e(c["kind"]), _e(c["detail"])) for c in entry["changes"]))
    parts.append('<div class="picture">%s</div>' % pcie_svg("h%d" % index, entry))
    parts.append("<h3>GPUs</h3>" + _table(
        ("address", "device", "driver", "IOMMU group", "viable", "NUMA", "closest NIC", "link"),
        [(g["address"], g["device_id"], g["driver"], g["iommu_group"], _yes(g["viable"]), g["numa_node"],
          g["nic"], g["link"]) for g in entry["gpus"]]))
    parts.append("<h3>NVSwitches and NICs</h3>" + _table(
        ("address", "device", "driver", "IOMMU group", "NUMA", "host-critical"),
        [(d["address"], d["device_id"], d["driver"], d["iommu_group"], d["numa_node"], ", ".join(d["host_critical"]))
         for d in entry["nvswitches"] + entry["nics"]]))
    not_viable = [g for g in entry["iommu_groups"] if not g["viable"]]
    if not_viable:
        parts.append("<h3>Groups not viable</h3>" + _table(("group", "devices", "reasons"), [
            (g["id"], ", ".join(g["devices"]), "; ".join(g["reasons"])) for g in not_viable]))
    if entry["host_critical"]:
        parts.append("<h3>Host-critical devices</h3>" + _table(("address", "kind", "reason"), [
            (h["address"], h["kind"], h["reason"]) for h in entry["host_critical"]]))
    cc = entry["cc"]
    parts.append("<h3>Confidential computing</h3>" + _table(("verdict", "value", "reasons"), [
        (name, _yes(cc[name]), "; ".join(cc["reasons"][name])) for name in ("vfio_ready", "snp_ready", "tdx_ready")]))
    if entry.get("validate"):
        parts.append("<h3>What prepare would change (validate readiness: %s)</h3>" % _e(entry["validate"]["verdict"])
                     + _table(("check", "state", "detail", "fix"), [
                         (c["name"], c["state"], c["detail"], c["fix"]) for c in entry["validate"]["checks"]]))
    return "".join(parts) + "</section>"


def fleet_html(report: t.Mapping[str, t.Any]) -> str:
    """The whole page; hosts in the summary grouped by state, worst first."""
    hosts = report["hosts"]
    order = sorted(hosts, key=lambda name: (STATES.index(hosts[name]["state"]), name))
    index = {name: number for number, name in enumerate(sorted(hosts))}
    summary = report["summary"]
    previous = report.get("previous")
    counts = ", ".join("%s %d" % (STATE_WORDS[state], summary[state]) for state in STATES)
    removed = report.get("removed_hosts", [])
    return "".join([
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>GPU fleet report</title>',
        "<style>%s</style></head><body><h1>GPU fleet report</h1>" % STYLE,
        "<p>Generated %s; %d hosts: %s; %d changed since %s.</p>" % (
            _e(report.get("generated")), summary["hosts"], _e(counts), summary["changed"],
            _e(previous["generated"] or previous["name"]) if previous else "no previous report"),
        "<p>Removed since the last report: %s</p>" % _e(", ".join(removed)) if removed else "",
        '<table id="summary"><thead><tr>%s</tr></thead><tbody>%s</tbody></table>' % (
            "".join("<th>%s</th>" % _e(h) for h in SUMMARY_HEAD),
            "".join(_summary_row(index[name], name, hosts[name]) for name in order)),
        "".join(_host_section(index[name], name, hosts[name]) for name in sorted(hosts)),
        "<script>%s</script></body></html>\n" % SORT_SCRIPT,
    ])
