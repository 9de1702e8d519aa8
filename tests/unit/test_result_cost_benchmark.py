"""benchmarks/result_cost.py runs: it reaches into ansible-core's result handling (``remove_values``, the module
encoder), which an ansible-core upgrade may move; this fails then, instead of the benchmark failing when someone
next measures. No figure is judged here (benchmarks measure, tests do not time)."""

from __future__ import annotations

import re
import subprocess
import sys

from conftest import REPO

sys.path.insert(0, str(REPO / "tests" / "lib"))
from rich_server import missing_fixtures  # noqa: E402

LINE = re.compile(r"^(\w+) tree: (\d+) functions, (\d+) values, (\d+) bytes of JSON; imports ([0-9.]+) s$")
FIGURE = re.compile(r"^  (read|remove_values|encode|plain_json) +([0-9.]+) s \((\d+) us per function\)$")


def test_result_cost_splits_the_module_run_on_both_trees() -> None:
    out = subprocess.run([sys.executable, str(REPO / "benchmarks" / "result_cost.py"), "--runs", "1",
                          "--shape", "small"], capture_output=True, text=True, check=True, cwd=REPO).stdout
    trees = {}
    for line in out.splitlines():
        head, figure = LINE.match(line), FIGURE.match(line)
        if head:
            name = head.group(1)
            trees[name] = {"functions": int(head.group(2)), "values": int(head.group(3)), "bytes": int(head.group(4))}
        elif figure:
            trees[name][figure.group(1)] = float(figure.group(2))
    expected = {"synthetic"} if missing_fixtures() else {"synthetic", "rich"}
    assert set(trees) == expected, out
    if missing_fixtures():
        assert "rich tree skipped: %s" % missing_fixtures() in out
    for name, figures in trees.items():
        # 402 functions, each with its identity, place, capabilities, group and pairs: dozens of values apiece.
        assert figures["functions"] == 402 and figures["values"] > 30 * figures["functions"], (name, figures)
        assert all(figures[key] > 0 for key in ("read", "remove_values", "encode", "plain_json")), (name, figures)
