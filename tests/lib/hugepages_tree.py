"""Fake hosts for the hugepages tests: NUMA nodes with meminfo, hugepage pools system-wide and per node.

The layout is the kernel's: ``sys/devices/system/node/online``,
``sys/devices/system/node/node<N>/meminfo`` (``Node N MemTotal: ... kB``),
``sys/devices/system/node/node<N>/hugepages/hugepages-<size>kB/{nr,free,surplus}_hugepages``,
``sys/kernel/mm/hugepages/hugepages-<size>kB/{nr,free,resv,surplus}_hugepages`` and ``proc/meminfo``.
There is no kernel behind it: a count written to ``nr_hugepages`` reads back as written, and the
system-wide count is not the sum of the nodes' unless :meth:`HugepagesTree.sync_totals` makes it so.
"""

from __future__ import annotations

from pathlib import Path
from typing import Dict, Iterable, Optional

from tree_state import Entry, tree_state

GIB_KB = 1 << 20
SIZE_2M = 2048
SIZE_1G = GIB_KB

NODE_MEMINFO = """Node {node} MemTotal:       {total} kB
Node {node} MemFree:        {free} kB
Node {node} MemUsed:        {used} kB
Node {node} HugePages_Total:     0
Node {node} HugePages_Free:      0
Node {node} HugePages_Surp:      0
"""


class HugepagesTree:
    """A host root with ``nodes`` NUMA nodes of ``node_mem_kb`` each and pools of ``sizes_kb`` (kB)."""

    def __init__(self, root: Path, nodes: int = 2, node_mem_kb: int = 4 * GIB_KB,
                 sizes_kb: Iterable[int] = (SIZE_2M, SIZE_1G), numa: bool = True) -> None:
        self.root = root
        self.nodes = list(range(nodes)) if numa else []
        self.sizes = sorted(sizes_kb)
        mem_total = node_mem_kb * max(nodes, 1)
        self.write("proc/meminfo", "MemTotal:       %d kB\nMemFree:        %d kB\nHugepagesize:       2048 kB\n"
                   % (mem_total, mem_total // 2))
        for size in self.sizes:
            for name in ("nr_hugepages", "free_hugepages", "resv_hugepages", "surplus_hugepages"):
                self.write("sys/kernel/mm/hugepages/hugepages-%dkB/%s" % (size, name), "0\n")
        if numa:
            self.write("sys/devices/system/node/online", "0-%d\n" % (nodes - 1) if nodes > 1 else "0\n")
            for node in self.nodes:
                self.write("sys/devices/system/node/node%d/cpulist" % node, "%d\n" % node)
                self.write("sys/devices/system/node/node%d/meminfo" % node,
                           NODE_MEMINFO.format(node=node, total=node_mem_kb, free=node_mem_kb // 2,
                                               used=node_mem_kb - node_mem_kb // 2))
                for size in self.sizes:
                    for name in ("nr_hugepages", "free_hugepages", "surplus_hugepages"):
                        self.write(self.pool_dir(size, node) + "/" + name, "0\n")

    def write(self, relative: str, content: str) -> None:
        path = self.root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content)

    @staticmethod
    def pool_dir(size_kb: int, node: Optional[int]) -> str:
        if node is None:
            return "sys/kernel/mm/hugepages/hugepages-%dkB" % size_kb
        return "sys/devices/system/node/node%d/hugepages/hugepages-%dkB" % (node, size_kb)

    def set_pool(self, size_kb: int, node: Optional[int], total: int, free: Optional[int] = None,
                 surplus: int = 0) -> HugepagesTree:
        base = self.pool_dir(size_kb, node)
        self.write(base + "/nr_hugepages", "%d\n" % total)
        self.write(base + "/free_hugepages", "%d\n" % (total if free is None else free))
        self.write(base + "/surplus_hugepages", "%d\n" % surplus)
        return self

    def count(self, size_kb: int, node: Optional[int]) -> int:
        return int((self.root / self.pool_dir(size_kb, node) / "nr_hugepages").read_text())

    def sync_totals(self) -> HugepagesTree:
        """Make each system-wide count the sum of the nodes' counts, as the kernel keeps it."""
        for size in self.sizes:
            total = sum(self.count(size, node) for node in self.nodes)
            self.write(self.pool_dir(size, None) + "/nr_hugepages", "%d\n" % total)
        return self

    def snapshot(self) -> Dict[str, Entry]:
        """Every file, link and directory below the root, for 'nothing changed' checks (tests/lib/tree_state)."""
        return tree_state(self.root)
