"""The collection's files/ (boot programs, systemd units) as a module's action plugin hands them over, for tests
that run the module or call its module_utils without a task (plugins/plugin_utils/shipped_files.py)."""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Dict

from ansible_collections.confidential_gpu.host.plugins.plugin_utils.shipped_files import FILES_DIR, OPTION, read_shipped

REPO = Path(__file__).resolve().parents[2]
FILES = Path(FILES_DIR)


def shipped_for(module: str) -> Dict[str, str]:
    """The texts the action plugin of ``module`` hands over ({} when it has no such plugin)."""
    if not (REPO / "plugins" / "action" / (module + ".py")).exists():
        return {}
    action = importlib.import_module("ansible_collections.confidential_gpu.host.plugins.action." + module)
    return read_shipped(getattr(action.ActionModule, "SHIPPED", ()))


def added_args(module: str) -> Dict[str, Dict[str, str]]:
    """What the action plugin of ``module`` adds to a task's arguments."""
    shipped = shipped_for(module)
    return {OPTION: shipped} if shipped else {}
