# Copyright: contributors to confidential_gpu.host
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Filters readiness_checks, readiness_lines and readiness_cc_technology: the validate role's checks
(see plugins/plugin_utils/readiness.py)."""

from __future__ import annotations

from typing import Any, Callable, Dict, List, Mapping, Sequence

from ansible_collections.confidential_gpu.host.plugins.plugin_utils.readiness import (
    cc_technology, check_line, readiness_checks)


def readiness_lines(checks: Sequence[Mapping[str, str]]) -> List[str]:
    """One printable line per check."""
    return [check_line(item) for item in checks]


def readiness_cc_technology(asked: str, cc_host: Mapping[str, Any]) -> str:
    """The technology role cc_host prepares for ``cc_host_technology`` (``asked``) on this host."""
    return cc_technology(str(asked), cc_host)


class FilterModule:
    def filters(self) -> Dict[str, Callable[..., Any]]:
        return {"readiness_checks": readiness_checks, "readiness_lines": readiness_lines,
                "readiness_cc_technology": readiness_cc_technology}
