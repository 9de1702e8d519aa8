"""The hostile-input suite: shared checks, and the count of its cases in the test output.

Each case of the suite is one collected test of this directory; the terminal summary says how many ran.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Callable, Dict, List

import pytest

HERE = Path(__file__).resolve().parent
LIB = HERE.parents[1] / "lib"
if str(LIB) not in sys.path:
    sys.path.insert(0, str(LIB))

from tree_state import changed_entries, tree_state  # noqa: E402

HOSTILE_PREFIX = "tests/unit/hostile/"
# A case's outcome is the worst of its reports (setup, call, teardown).
OUTCOME_RANK = {"seen": 0, "passed": 1, "skipped": 2, "failed": 3, "error": 3}


def case_outcome(category: str, when: str) -> str:
    if category in ("failed", "error", "skipped"):
        return category
    return "passed" if category == "passed" and when == "call" else "seen"


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    """Count the cases from their reports, which reach the process that prints the summary also when
    pytest-xdist runs the tests in workers (collection happens only there)."""
    outcomes: Dict[str, str] = {}
    for category, reports in terminalreporter.stats.items():
        for report in reports:
            nodeid = getattr(report, "nodeid", "")
            if nodeid.startswith(HOSTILE_PREFIX):
                outcome = case_outcome(category, getattr(report, "when", ""))
                if OUTCOME_RANK[outcome] >= OUTCOME_RANK[outcomes.get(nodeid, "seen")]:
                    outcomes[nodeid] = outcome
    if outcomes:
        passed = sum(1 for outcome in outcomes.values() if outcome == "passed")
        terminalreporter.write_line("hostile-input cases: %d (%d passed)" % (len(outcomes), passed))


def assert_refused(result: Dict[str, Any], fragments: List[str]) -> None:
    """The module failed, changed nothing it reports, and its message holds every fragment."""
    assert result.get("failed") and result.get("rc", 1) != 0, result
    assert not result.get("changed"), result
    for fragment in fragments:
        assert fragment in result["msg"], (fragment, result["msg"])


@pytest.fixture
def refuses(run_module: Callable[[str, Dict[str, Any]], Dict[str, Any]]):
    """``refuses(module, args, top, *fragments)``: run the module for real (not in check mode, the stricter
    test) with diff mode on; it fails with every fragment in its message and everything below ``top`` (the
    root, or a folder holding the root and what its links point to) stays byte-identical."""
    def _refuses(module: str, args: Dict[str, Any], top: Path, *fragments: str) -> Dict[str, Any]:
        before = tree_state(top)
        result = run_module(module, dict(args, _ansible_diff=True))
        assert_refused(result, list(fragments))
        after = tree_state(top)
        assert after == before, changed_entries(before, after)
        return result
    return _refuses
