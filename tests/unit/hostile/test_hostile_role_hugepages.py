"""Hostile input against role hugepages: each case is refused naming the variable and the fix, and the two-node
tree of tests/lib/hugepages_tree.py of the case stays byte-identical.

All cases run in one ansible-playbook process (tests/lib/hostile_roles.py); each is its own test here.
"""

from __future__ import annotations

from typing import List

from hostile_roles import Case, role_refusal_test
from role_roots import ROLE_ROOTS

ROLE = "hugepages"
SPEC = "Validation of arguments failed"
SIZE_FIX = "is not a size: write it like 2M, 1G or 2048kB"
TWO_M = [{"size": "2M", "count": 1}]

CASES: List[Case] = [
    Case("pools-string", {"hugepages_pools": "1G:4"}, [SPEC, "'hugepages_pools' is of type str", "to dict"]),
    Case("size-shell", {"hugepages_pools": [{"size": "2M;id", "count": 1}]}, ["hugepage size '2M;id'", SIZE_FIX]),
    Case("count-word", {"hugepages_pools": [{"size": "2M", "count": "lots"}]},
         [SPEC, "argument 'count' is of type str found in 'hugepages_pools'"]),
    # AWX strings where numbers belong: normalised, then refused for what they ask
    Case("count-string-normalised", {"hugepages_pools": [{"size": "2M", "count": "999999999"}]},
         ["would take 1999999998 MiB", "ask for fewer pages"]),
    # a number in exponent form is not a whole number as AWX would send one: refused at the entry, naming the forms
    Case("reserve-mb-exponent", {"hugepages_pools": TWO_M, "hugepages_reserve_mb": "1e9"},
         ['hugepages_reserve_mb is "1e9": give a whole number such as 3']),
    Case("reserve-mb-string-normalised", {"hugepages_pools": TWO_M, "hugepages_reserve_mb": "1000000000"},
         ["minus the 2000000000 MiB reserve", "lower reserve_mb or reserve_percent"]),
    Case("node-negative", {"hugepages_pools": [{"size": "1G", "count": 1, "node": -1}]},
         ["pools[0].node is -1; it must be 0 or more"]),
    Case("reserve-percent-over", {"hugepages_pools": TWO_M, "hugepages_reserve_percent": 150},
         ["reserve_percent is 150; it must be at least 0 and below 100"]),
    Case("shortfall-unknown", {"hugepages_on_shortfall": "ignore"},
         [SPEC, "hugepages_on_shortfall must be one of: fail, warn, got: ignore"]),
    Case("persist-word", {"hugepages_persist": "sometimes"}, [SPEC, "'hugepages_persist' is of type str"]),
    Case("boot-size-newline", {"hugepages_pools": TWO_M, "hugepages_kernel_args_sizes": ["1G\nquiet"]}, [SIZE_FIX]),
    Case("pool-unknown-key", {"hugepages_pools": [{"size": "2M", "count": 1, "nodes": 1}]},
         [SPEC, "hugepages_pools.nodes. Supported parameters include: count, node, size"]),
]


test_hugepages_role_refuses = role_refusal_test(ROLE, CASES, ROLE_ROOTS[ROLE])
