# Copyright: contributors to confidential_gpu.host
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""What every module does with a planned result before it exits or fails.

The planning code returns plain data: ``warnings`` (also collected on the
:class:`HostRoot` it read through) and ``diff`` (before/after of the files or
registers it changes).  Ansible wants the warnings through ``module.warn`` and
the diff only in diff mode.

Standard library only: this runs on target hosts with Python >= 3.8.
"""

from __future__ import annotations

from typing import Any, Dict, Optional

from ansible_collections.confidential_gpu.host.plugins.module_utils.sysfs import HostRoot


def hand_over(module: Any, host: Optional[HostRoot], result: Dict[str, Any], show_diff: bool = True) -> Dict[str, Any]:
    """Send the host's and the result's warnings to ``module.warn``; keep ``diff`` only in diff mode (and when
    ``show_diff``).  Returns ``result``, ready for ``exit_json`` or ``fail_json``."""
    for warning in (host.warnings if host is not None else []) + result.pop("warnings", []):
        module.warn(warning)
    diff = result.pop("diff", None)
    if diff is not None and module._diff and show_diff:
        result["diff"] = diff
    return result
