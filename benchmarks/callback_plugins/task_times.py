# Copyright: contributors to confidential_gpu.host
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Record how long each task of a play took, for benchmarks/prepare.py (not part of the collection)."""

from __future__ import annotations

import json
import os
import time
from typing import Any, Dict, List, Optional

from ansible.plugins.callback import CallbackBase

DOCUMENTATION = """
name: task_times
type: aggregate
short_description: task durations as JSON, for the benchmarks
description:
  - Writes each task's name, role, action, result and seconds, in order, to the file named by
    E(CONFIDENTIAL_GPU_TASK_TIMES) when the play ends.
requirements:
  - enabled in callbacks_enabled
"""


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "aggregate"
    CALLBACK_NAME = "task_times"
    CALLBACK_NEEDS_ENABLED = True

    def __init__(self) -> None:
        super().__init__()
        self.tasks: List[Dict[str, Any]] = []
        self.current: Optional[Dict[str, Any]] = None

    def _close(self, status: str) -> None:
        """A task's last result sets its time; one changed or failed result (of a loop) sets its status."""
        if self.current is None:
            return
        if self.current["status"] not in ("changed", "failed"):
            self.current["status"] = status
        self.current["seconds"] = time.perf_counter() - self.current["started"]

    def v2_playbook_on_task_start(self, task: Any, is_conditional: bool) -> None:
        self.current = {"name": task.name or task.action, "role": task._role.get_name() if task._role else None,
                        "action": task.action, "started": time.perf_counter(), "status": None}
        self.tasks.append(self.current)

    def v2_runner_on_ok(self, result: Any) -> None:
        self._close("changed" if result._result.get("changed") else "ok")

    def v2_runner_on_skipped(self, result: Any) -> None:
        self._close("skipped")

    def v2_runner_on_failed(self, result: Any, ignore_errors: bool = False) -> None:
        self._close("failed")

    def v2_playbook_on_stats(self, stats: Any) -> None:
        path = os.environ.get("CONFIDENTIAL_GPU_TASK_TIMES")
        if path:
            with open(path, "w") as handle:
                json.dump([{key: value for key, value in task.items() if key != "started"} for task in self.tasks],
                          handle)
