"""The hostile-input suite: shared checks. Each case is one collected test of this directory; the count in the
test output (``hostile-input cases: N``) is printed by tests/unit/conftest.py."""

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
