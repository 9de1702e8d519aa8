"""Role reboot decides from one fact, confidential_gpu_reboot_reasons, which every role that needs a reboot sets
the same way (issue 16 point 5); the results of other roles are not read by name any more."""

from __future__ import annotations

import sys
from pathlib import Path

from conftest import REPO

sys.path.insert(0, str(REPO / "tests" / "lib"))
from role_play import run_role  # noqa: E402

REPORT = ("reboot_pending", "reboot_done")


def test_a_role_entry_with_reasons_asks_for_the_reboot(tmp_path: Path) -> None:
    result = run_role(tmp_path, "reboot", {
        "confidential_gpu_reboot_reasons": {"cc_host": [], "site": [{"key": "firmware", "reason": "test"}]}},
        REPORT)
    assert result.rc == 0, result.output
    assert result.facts["reboot_pending"] is True
    assert "REBOOT PENDING on localhost" in result.output
    assert '{\\"role\\": \\"site\\", \\"key\\": \\"firmware\\", \\"reason\\": \\"test\\"}' in result.output


def test_empty_entries_and_other_roles_results_ask_for_none(tmp_path: Path) -> None:
    result = run_role(tmp_path, "reboot", {
        "confidential_gpu_reboot_reasons": {"cc_host": [], "kernel_args": []},
        # the names role reboot read before: no longer part of its contract
        "kernel_args_result": {"reboot_required": True, "pending": [{"key": "iommu"}]},
        "cc_host_reboot_required": True}, REPORT)
    assert result.rc == 0, result.output
    assert result.facts["reboot_pending"] is False
    assert "REBOOT PENDING" not in result.output
