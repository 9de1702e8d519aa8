# Copyright: contributors to confidential_gpu.host
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Filters discovery_summary and discovery_lines: role discovery's per-host summaries
(see plugins/plugin_utils/discovery_summary.py)."""

from __future__ import annotations

from typing import Any, Callable, Dict, List, Mapping

from ansible.errors import AnsibleFilterError

# The code behind these filters is imported when a filter runs, not when this file loads: ansible-core loads every
# filter file of the collection in each worker process whenever any collection filter is used (docs/design.md,
# "Controller code").


def _checked(result: Any, name: str) -> Mapping[str, Any]:
    if not isinstance(result, Mapping) or not isinstance(result.get("cc_host"), Mapping):
        raise AnsibleFilterError("%s: give the result of confidential_gpu.host.pci_topology_info gathered with "
                                 "gather_subset [all, cc_host], not %r" % (name, type(result).__name__))
    return result


def discovery_summary(result: Any, host: str) -> Dict[str, Any]:
    """The compact summary (fact discovery_summary) of one host."""
    from ansible_collections.confidential_gpu.host.plugins.plugin_utils.discovery_summary import compact_summary
    try:
        return compact_summary(_checked(result, "discovery_summary"), str(host))
    except (KeyError, TypeError) as error:
        raise AnsibleFilterError("discovery_summary: the result lacks %s" % error) from None


def discovery_lines(result: Any, host: str) -> List[str]:
    """The printed summary of one host, one line per item."""
    from ansible_collections.confidential_gpu.host.plugins.plugin_utils.discovery_summary import summary_lines
    try:
        return summary_lines(_checked(result, "discovery_lines"), str(host))
    except (KeyError, TypeError) as error:
        raise AnsibleFilterError("discovery_lines: the result lacks %s" % error) from None


class FilterModule:
    def filters(self) -> Dict[str, Callable[..., Any]]:
        return {"discovery_summary": discovery_summary, "discovery_lines": discovery_lines}
