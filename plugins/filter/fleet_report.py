# Copyright: contributors to confidential_gpu.host
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Filters fleet_report_host, fleet_report and fleet_report_html: the fleet report of playbooks/report.yml
(see plugins/plugin_utils/fleet_report.py and fleet_report_html.py, docs/report.md)."""

from __future__ import annotations

from typing import Any, Callable, Dict, Mapping, Optional, Sequence

from ansible.errors import AnsibleFilterError

# The code behind these filters is imported when a filter runs, not when this file loads: ansible-core loads every
# filter file of the collection in each worker process whenever any collection filter is used (docs/design.md,
# "Controller code").


def fleet_report_host(pci: Optional[Mapping[str, Any]], cc: Optional[Mapping[str, Any]] = None,
                      checks: Optional[Sequence[Mapping[str, Any]]] = None, failure: str = "") -> Dict[str, Any]:
    """One host's entry from pci_topology_info's and cc_host_info's results and validate's checks."""
    from ansible_collections.confidential_gpu.host.plugins.plugin_utils.fleet_report import host_entry
    return host_entry(pci, cc, checks, failure)


def fleet_report(entries: Mapping[str, Optional[Mapping[str, Any]]], previous: Optional[Mapping[str, Any]] = None,
                 generated: str = "", previous_name: str = "") -> Dict[str, Any]:
    """The report of every host (a host without an entry is ``failed``), with changes since ``previous``."""
    from ansible_collections.confidential_gpu.host.plugins.plugin_utils.fleet_report import (
        fleet_report as build_report,
        host_entry,
    )
    hosts = {name: dict(entry) if entry else host_entry(None, None) for name, entry in entries.items()}
    if previous is not None and not isinstance(previous, Mapping):
        raise AnsibleFilterError("previous report %s is not a JSON object: give a report written by "
                                 "playbooks/report.yml, or none" % (previous_name or "(unnamed)"))
    return build_report(hosts, previous or None, generated, previous_name)


def fleet_report_html(report: Mapping[str, Any]) -> str:
    """The self-contained HTML page of a report."""
    from ansible_collections.confidential_gpu.host.plugins.plugin_utils.fleet_report_html import (
        ReportRenderError,
        fleet_html,
    )
    try:
        return fleet_html(report)
    except ReportRenderError as exc:
        raise AnsibleFilterError(str(exc)) from exc


class FilterModule:
    def filters(self) -> Dict[str, Callable[..., Any]]:
        return {"fleet_report_host": fleet_report_host, "fleet_report": fleet_report,
                "fleet_report_html": fleet_report_html}
