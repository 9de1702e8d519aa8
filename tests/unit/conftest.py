"""Shared pytest fixtures: the collection on sys.path, modules run as processes."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any, Dict

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parents[2]
COLLECTIONS = REPO / ".collections"
SHARED = REPO.parent / "shared"
FIXTURES = SHARED / "fixtures"

if str(COLLECTIONS) not in sys.path:
    sys.path.insert(0, str(COLLECTIONS))
sys.path.insert(0, str(REPO / "tests" / "lib"))
from shipped_files import added_args  # noqa: E402  (the files a module's action plugin hands over)


def requirement_lines(path: Path) -> Dict[str, Requirement]:
    """The requirements of a pip requirements file, by canonical project name."""
    found = {}
    for line in path.read_text().splitlines():
        text = line.split("#", 1)[0].strip()
        if text:
            requirement = Requirement(text)
            found[canonicalize_name(requirement.name)] = requirement
    return found


def module_path(name: str) -> Path:
    return REPO / "plugins" / "modules" / (name + ".py")


def run_module_process(name: str, args: Dict[str, Any], tmp_path: Path) -> Dict[str, Any]:
    """Run a module the way a host runs it: a Python process given a JSON args file, with the arguments its
    action plugin adds in a task (a test may override them).

    Returns the module's JSON result; ``rc`` is added with the exit status.
    """
    args_file = tmp_path / ("%s-args.json" % name)
    args_file.write_text(json.dumps({"ANSIBLE_MODULE_ARGS": dict(added_args(name), **args)}))
    env = dict(os.environ, PYTHONPATH=str(COLLECTIONS))
    proc = subprocess.run(
        [sys.executable, str(module_path(name)), str(args_file)],
        capture_output=True, text=True, env=env, timeout=120, check=False,
    )
    try:
        result = json.loads(proc.stdout)
    except ValueError:
        raise AssertionError("module %s printed no JSON (rc=%d)\nstdout: %s\nstderr: %s"
                             % (name, proc.returncode, proc.stdout, proc.stderr)) from None
    result["rc"] = proc.returncode
    result["warnings"] = [warning_text(warning) for warning in result.get("warnings", [])]
    return result


def warning_text(warning: Any) -> str:
    """A module warning as text (ansible-core 2.19 emits structured warning summaries)."""
    if isinstance(warning, dict):
        return warning.get("event", {}).get("msg", str(warning))
    return str(warning)


@pytest.fixture
def run_module(tmp_path: Path):
    """``run_module(name, args)`` -> result dict of the module run as a process."""
    def _run(name: str, args: Dict[str, Any]) -> Dict[str, Any]:
        return run_module_process(name, args, tmp_path)
    return _run


@pytest.fixture
def bin_dir(tmp_path: Path) -> Path:
    """The stand-in boot tools of tests/lib/standins, copied and made executable
    (a checkout may have lost the mode bits)."""
    target = tmp_path / "bin"
    shutil.copytree(REPO / "tests" / "lib" / "standins", target)
    for path in target.iterdir():
        path.chmod(0o755)
    return target


@pytest.fixture
def shared_fixtures() -> Path:
    """../shared/fixtures, or a skip that says why the test cannot run."""
    if not FIXTURES.is_dir():
        pytest.skip("../shared/fixtures is absent: the third-party captures these tests "
                    "compare against live beside the checkout, not in it")
    return FIXTURES


# The hostile-input suite's count
HOSTILE_PREFIX = "tests/unit/hostile/"
# A case's outcome is the worst of its reports (setup, call, teardown).
OUTCOME_RANK = {"seen": 0, "passed": 1, "skipped": 2, "failed": 3, "error": 3}


def case_outcome(category: str, when: str) -> str:
    if category in ("failed", "error", "skipped"):
        return category
    return "passed" if category == "passed" and when == "call" else "seen"


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    """The count of hostile-input cases (tests/unit/hostile), from their reports: under pytest-xdist only this
    conftest, the one of the directory given on the command line, is loaded by the process that prints the
    summary, and the reports are all it sees (collection happens in the workers)."""
    outcomes: Dict[str, str] = {}
    for category, reports in terminalreporter.stats.items():
        for report in reports:
            nodeid = getattr(report, "nodeid", "")
            # Test reports only: "deselected" holds the items -k or -m left out, which did not run.
            if nodeid.startswith(HOSTILE_PREFIX) and hasattr(report, "when"):
                outcome = case_outcome(category, getattr(report, "when", ""))
                if OUTCOME_RANK[outcome] >= OUTCOME_RANK[outcomes.get(nodeid, "seen")]:
                    outcomes[nodeid] = outcome
    if outcomes:
        passed = sum(1 for outcome in outcomes.values() if outcome == "passed")
        terminalreporter.write_line("hostile-input cases: %d (%d passed)" % (len(outcomes), passed))
