"""Hostile input against hugepages: each case is refused naming the pool, option or node and the fix, and the
two-node tree of tests/lib/hugepages_tree.py stays byte-identical."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Tuple

import pytest
from hugepages_tree import HugepagesTree

MODULE = "hugepages"
SIZE_FIX = "is not a size: write it like 2M, 1G or 2048kB"
TWO_M = [{"size": "2M", "count": 1}]

CASES: List[Tuple[str, Dict[str, Any], List[str]]] = [
    ("size-unknown", {"pools": [{"size": "3M", "count": 1}]},
     ["this kernel has no 3M hugepages", "sizes here: 2M, 1G"]),
    ("size-shell", {"pools": [{"size": "2M;id", "count": 1}]}, ["hugepage size '2M;id'", SIZE_FIX]),
    ("size-traversal", {"pools": [{"size": "../../2M", "count": 1}]}, ["hugepage size '../../2M'", SIZE_FIX]),
    ("size-subshell", {"pools": [{"size": "$(id)", "count": 1}]}, ["hugepage size '$(id)'", SIZE_FIX]),
    ("size-embedded-newline", {"pools": [{"size": "2M\n1G", "count": 1}]}, [SIZE_FIX]),
    ("size-overlong", {"pools": [{"size": "9" * 400 + "G", "count": 1}]}, ["hugepages"]),
    ("size-empty", {"pools": [{"size": "", "count": 1}]}, ["pools[0] has no size: give one like 2M or 1G"]),
    ("count-negative", {"pools": [{"size": "2M", "count": -1}]}, ["pools[0].count is -1; it must be 0 or more"]),
    ("count-beyond-memory", {"pools": [{"size": "2M", "count": 10 ** 12}]},
     ["more than its 8192 MiB of memory minus the 4096 MiB reserve", "ask for fewer pages"]),
    ("node-absent", {"pools": [{"size": "1G", "count": 1, "node": 7}]},
     ["NUMA node 7 does not exist on this host (nodes: 0, 1)"]),
    ("node-huge", {"pools": [{"size": "1G", "count": 1, "node": 2 ** 40}]}, ["NUMA node 1099511627776 does not exist"]),
    ("count-not-a-number", {"pools": [{"size": "2M", "count": "many"}]}, ["count"]),
    ("node-negative", {"pools": [{"size": "1G", "count": 1, "node": -1}]},
     ["pools[0].node is -1; it must be 0 or more"]),
    ("pool-twice", {"pools": [{"size": "2M", "count": 1}, {"size": "2048k", "count": 2}]},
     ["pools[0] and pools[1] both set the 2M system-wide pool: give it once"]),
    ("reserve-mb-negative", {"pools": TWO_M, "reserve_mb": -1}, ["reserve_mb is -1; it must be 0 or more"]),
    ("reserve-percent-over", {"pools": TWO_M, "reserve_percent": 101},
     ["reserve_percent is 101; it must be at least 0 and below 100"]),
    ("reserve-percent-100", {"pools": TWO_M, "reserve_percent": 100}, ["reserve_percent is 100"]),
    ("reserve-percent-negative", {"pools": TWO_M, "reserve_percent": -5}, ["reserve_percent is -5"]),
    ("kernel-args-size-shell", {"pools": TWO_M, "kernel_args_sizes": ["1G;x"]}, ["hugepage size '1G;x'", SIZE_FIX]),
    ("kernel-args-size-newline", {"pools": TWO_M, "kernel_args_sizes": ["1G\nquiet"]}, [SIZE_FIX]),
]


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two NUMA nodes of 4 GiB with 2M and 1G pools, for all cases (each asserts it changed nothing)."""
    return HugepagesTree(tmp_path_factory.mktemp("hugepages") / "root").root


@pytest.mark.parametrize("args, fragments", [case[1:] for case in CASES], ids=[case[0] for case in CASES])
def test_hugepages_refuses(refuses, lab: Path, args: Dict[str, Any], fragments: List[str]) -> None:
    refuses(MODULE, dict(args, root=str(lab)), lab, *fragments)
