# Copyright: contributors to confidential_gpu.host
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Filter redact_url: URLs shown without their credentials (see plugins/plugin_utils/redaction.py)."""

from __future__ import annotations

from typing import Any, Callable, Dict

# The code behind these filters is imported when a filter runs, not when this file loads: ansible-core loads every
# filter file of the collection in each worker process whenever any collection filter is used (docs/design.md,
# "Controller code").


def redact_url(value: Any) -> Any:
    """``value`` (a URL, a text holding URLs, or a mapping or list of them) with every URL's user-info, query
    values and fragment masked."""
    from ansible_collections.confidential_gpu.host.plugins.plugin_utils.redaction import redact_urls
    return redact_urls(value)


class FilterModule:
    def filters(self) -> Dict[str, Callable[..., Any]]:
        return {"redact_url": redact_url}
