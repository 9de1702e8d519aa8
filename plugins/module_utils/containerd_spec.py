# Copyright: contributors to confidential_gpu.host
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The options of containerd_runtimes, shared by its action plugin and its documentation module."""

from __future__ import annotations

from typing import Any, Dict

ARGUMENT_SPEC: Dict[str, Dict[str, Any]] = {
    "path": {"type": "str", "required": True},
    "root": {"type": "str", "default": "/"},
    "imports_present": {"type": "list", "elements": "str", "default": []},
    "imports_absent": {"type": "list", "elements": "str", "default": []},
    "runtimes": {"type": "dict", "default": {}},
    "runtimes_absent": {"type": "list", "elements": "str", "default": []},
    "tables": {"type": "list", "elements": "dict", "default": [],
               "options": {"path": {"type": "list", "elements": "str", "required": True},
                           "values": {"type": "dict", "required": True}}},
    "plugin_id": {"type": "str"},
    "backup": {"type": "bool", "default": False},
}
