"""The fleet page lays out each distinct PCIe picture once (issue 20 point 3: the report for 500 hosts in under a
minute, docs/report.md): hosts of one model share one ``dot`` run, and each host's picture still carries its own
element ids. ``dot`` is the real Graphviz, behind a wrapper on PATH that counts its runs."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
from conftest import REPO

from ansible_collections.confidential_gpu.host.plugins.plugin_utils import fleet_report_html
from ansible_collections.confidential_gpu.host.plugins.plugin_utils.fleet_report import fleet_report

sys.path.insert(0, str(REPO / "tests" / "lib"))
from fake_sysfs import ServerShape, gpu_server  # noqa: E402
from fleet_hosts import entry_of  # noqa: E402
from required_tools import require_tool  # noqa: E402


def test_hosts_of_one_model_share_one_layout(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    dot = require_tool("dot", "Graphviz lays out the PCIe pictures")
    if fleet_report_html.graphviz is None:
        pytest.skip("the Python package graphviz (requirements.txt) is not installed")
    wrapper = tmp_path / "bin" / "dot"
    wrapper.parent.mkdir()
    wrapper.write_text('#!/bin/sh\necho run >> "%s"\nexec "%s" "$@"\n' % (tmp_path / "dot-runs", dot))
    wrapper.chmod(0o755)
    monkeypatch.setenv("PATH", "%s%s%s" % (wrapper.parent, os.pathsep, os.environ["PATH"]))
    two_gpus = entry_of(tmp_path / "two", gpu_server(ServerShape(gpus=2, nvswitches=1, sockets=2)))
    four_gpus = entry_of(tmp_path / "four", gpu_server(ServerShape(gpus=4, sockets=2)))
    report = fleet_report({"a": two_gpus, "b": two_gpus, "c": four_gpus, "d": two_gpus}, None, "2026-01-01T00:00:00Z")
    fleet_report_html._laid_out.cache_clear()
    page = fleet_report_html.fleet_html(report)
    assert (tmp_path / "dot-runs").read_text().splitlines() == ["run", "run"], "one dot run per distinct picture"
    gpu = two_gpus["gpus"][0]["address"]
    for slug in ("h0", "h1", "h3"):
        # dot writes "-" in ids as &#45; (the browser reads h0--gpu--<address>)
        assert 'id="%s&#45;&#45;gpu&#45;&#45;%s"' % (slug, gpu) in page and 'id="%s"' % slug in page
    assert fleet_report_html.SLUG_PLACEHOLDER not in page
    assert page.count("<svg") == 4
