# Copyright: contributors to confidential_gpu.host
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Filters readiness_checks, readiness_lines and readiness_cc_technology: the validate role's checks
(see plugins/plugin_utils/readiness.py)."""

from __future__ import annotations

from typing import Any, Callable, Dict, List, Mapping, Sequence

# The code behind these filters is imported when a filter runs, not when this file loads: ansible-core loads every
# filter file of the collection in each worker process whenever any collection filter is used (docs/design.md,
# "Controller code").


def readiness_checks(facts: Mapping[str, Any]) -> List[Dict[str, str]]:
    """Every readiness check, in a fixed order (plugin_utils/readiness.py, readiness_checks)."""
    from ansible_collections.confidential_gpu.host.plugins.plugin_utils import readiness
    return readiness.readiness_checks(facts)


def readiness_lines(checks: Sequence[Mapping[str, str]]) -> List[str]:
    """One printable line per check."""
    from ansible_collections.confidential_gpu.host.plugins.plugin_utils.readiness import check_line
    return [check_line(item) for item in checks]


def readiness_cc_technology(asked: str, cc_host: Mapping[str, Any]) -> str:
    """The technology role cc_host prepares for ``cc_host_technology`` (``asked``) on this host."""
    from ansible_collections.confidential_gpu.host.plugins.plugin_utils.readiness import cc_technology
    return cc_technology(str(asked), cc_host)


class FilterModule:
    def filters(self) -> Dict[str, Callable[..., Any]]:
        return {"readiness_checks": readiness_checks, "readiness_lines": readiness_lines,
                "readiness_cc_technology": readiness_cc_technology}
