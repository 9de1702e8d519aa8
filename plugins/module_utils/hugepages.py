# Copyright: contributors to confidential_gpu.host
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Hugepage pools per page size and NUMA node: plan, memory check, runtime writes, boot-time persistence.

:func:`build_requests` turns the user's pools into :class:`PoolRequest` items
(bad input raises :class:`HugepagesError` before anything is read).
:func:`read_host` reads the pools and node memory once through a
:class:`HostRoot` (the readers of ``cc_host``), :func:`check_host` and
:func:`memory_budget` refuse what the host cannot hold, :func:`plan` compares
the request with the current pools and :func:`apply_pools` writes
``nr_hugepages`` and reads back what the kernel gave.  :func:`shortfalls`,
:func:`boot_kernel_args` and :func:`render_config` are pure; the boot program and unit are the
collection's ``files/`` (see systemd_units).  :func:`manage` runs the whole sequence for the module.

Standard library only: this runs on target hosts with Python >= 3.8.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Any, Dict, Iterable, List, Mapping, NamedTuple, Optional, Sequence, Tuple

from ansible_collections.confidential_gpu.host.plugins.module_utils.cc_host import (
    kernel_version,
    read_hugepages,
    read_numa,
    size_label,
)
from ansible_collections.confidential_gpu.host.plugins.module_utils.host_write import SysfsWriteError, write_attribute
from ansible_collections.confidential_gpu.host.plugins.module_utils.host_files import FileChange
from ansible_collections.confidential_gpu.host.plugins.module_utils.systemd_units import (
    LINK,
    change_diff,
    shipped_text,
    unit_changes,
    write_changes,
)
from ansible_collections.confidential_gpu.host.plugins.module_utils.sysfs import HostRoot

GIB_KB = 1 << 20
MIB_KB = 1 << 10

UNIT_NAME = "confidential-gpu-hugepages.service"
UNIT_PATH = "/etc/systemd/system/" + UNIT_NAME
SHIPPED_SCRIPT = "confidential-gpu-hugepages.sh"  # the collection's files/, with UNIT_NAME: from the action plugin
CONFIG_PATH = "/etc/confidential-gpu/hugepages.conf"
SCRIPT_PATH = "/usr/local/sbin/confidential-gpu-hugepages"

# hugepages= takes per-node counts (hugepages=0:2,1:2) from Linux 5.16 on (commit b5389086ad7b, "hugetlbfs:
# extend the definition of hugepages parameter to support node allocation"); before, the kernel reads only the
# leading number.
NODE_FORMAT_SINCE = (5, 16)

_SIZE = re.compile(r"^\s*(\d+)\s*([kmgt]?)(i?b)?\s*$", re.IGNORECASE)
_UNIT_KB = {"k": 1, "m": MIB_KB, "g": GIB_KB, "t": 1 << 30}


class HugepagesError(Exception):
    """The request cannot be carried out; the message names the pool, file or value and the fix."""


@dataclass(frozen=True)
class PoolRequest:
    """One pool the user asks for: ``count`` pages of ``size_kb`` on ``node`` (``None``: system-wide).

    A frozen dataclass, not a NamedTuple, whose ``count`` field would shadow ``tuple.count``.
    """

    size_kb: int
    node: Optional[int]
    count: int

    @property
    def label(self) -> str:
        return pool_label(self.size_kb, self.node)


class HostPools(NamedTuple):
    """What the host has: node memory and, per page size, the system-wide and per-node page counts."""

    node_mem_kb: Dict[int, Optional[int]]  # node -> MemTotal (kB); empty on a kernel without NUMA in sysfs
    total_mem_kb: Optional[int]  # /proc/meminfo MemTotal, used when there are no nodes
    pools: Dict[int, Dict[str, Any]]  # size_kb -> cc_host pool: total, free, surplus, nodes [{node, total, ...}]


class PoolPlan(NamedTuple):
    request: PoolRequest
    before: Optional[int]
    path: str

    @property
    def changes(self) -> bool:
        return self.before != self.request.count


# --------------------------------------------------------------------------
# Input (pure)
# --------------------------------------------------------------------------

def parse_size(text: Any) -> int:
    """``2M``, ``2MB``, ``2MiB``, ``1G``, ``2048kB`` -> page size in kB; a bare number is refused."""
    match = _SIZE.match(str(text))
    if not match:
        raise HugepagesError("hugepage size %r is not a size: write it like 2M, 1G or 2048kB" % (text,))
    number, unit = int(match.group(1)), match.group(2).lower()
    if not unit:
        raise HugepagesError("hugepage size %r has no unit: write 2M, 1G or %skB" % (text, number))
    size_kb = number * _UNIT_KB[unit]
    if size_kb <= 0:
        raise HugepagesError("hugepage size %r is zero: write a page size like 2M or 1G" % (text,))
    return size_kb


def pool_label(size_kb: int, node: Optional[int]) -> str:
    """``2M pool on node 1`` / ``1G system-wide pool``: how messages name a pool."""
    where = "system-wide pool" if node is None else "pool on node %d" % node
    return "%s %s" % (size_label(size_kb), where)


def _int_field(item: Dict[str, Any], name: str, index: int, minimum: int) -> Optional[int]:
    value = item.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        try:
            value = int(str(value).strip())
        except ValueError:
            raise HugepagesError("pools[%d].%s is %r, not a whole number" % (index, name, value)) from None
    if value < minimum:
        raise HugepagesError("pools[%d].%s is %d; it must be %d or more" % (index, name, value, minimum))
    return value


def build_requests(items: Sequence[Dict[str, Any]]) -> List[PoolRequest]:
    """User pools (``[{size, count, node}]``) -> requests, in the order given; refuses duplicates and mixes.

    A size is either one system-wide pool (``node`` null; the kernel spreads it over the nodes) or pools
    on named nodes, not both: writing a system-wide count redistributes the per-node ones.
    """
    requests: List[PoolRequest] = []
    seen: Dict[Tuple[int, Optional[int]], int] = {}
    for index, item in enumerate(items):
        if not isinstance(item, dict):
            raise HugepagesError("pools[%d] is %r, not a mapping with size, count and node" % (index, item))
        if item.get("size") in (None, ""):
            raise HugepagesError("pools[%d] has no size: give one like 2M or 1G" % index)
        count = _int_field(item, "count", index, 0)
        if count is None:
            raise HugepagesError("pools[%d] (%s) has no count: give the number of pages" % (index, item["size"]))
        request = PoolRequest(parse_size(item["size"]), _int_field(item, "node", index, 0), count)
        key = (request.size_kb, request.node)
        if key in seen:
            raise HugepagesError("pools[%d] and pools[%d] both set the %s: give it once"
                                 % (seen[key], index, request.label))
        seen[key] = index
        requests.append(request)
    for request in requests:
        if request.node is None and any(o.size_kb == request.size_kb and o.node is not None for o in requests):
            raise HugepagesError("%s pages are asked for both system-wide and on named nodes: a system-wide "
                                 "count redistributes the per-node pools; give either node null or one item "
                                 "per node" % size_label(request.size_kb))
    return requests


# --------------------------------------------------------------------------
# Reading and checking the host
# --------------------------------------------------------------------------

def _proc_mem_total_kb(host: HostRoot) -> Optional[int]:
    for line in (host.read_text("/proc/meminfo") or "").splitlines():
        if line.startswith("MemTotal:"):
            words = line.split()
            if len(words) >= 2 and words[1].isdigit():
                return int(words[1])
    return None


def read_host(host: HostRoot) -> HostPools:
    """Node memory and pools, read once (``cc_host.read_numa`` and ``cc_host.read_hugepages``)."""
    nodes = {entry["node"]: entry["mem_total_kb"] for entry in read_numa(host)["nodes"]}
    pools = {pool["size_kb"]: pool for pool in read_hugepages(host, sorted(nodes))["pools"]}
    return HostPools(nodes, _proc_mem_total_kb(host) if not nodes else None, pools)


def pool_path(size_kb: int, node: Optional[int]) -> str:
    """The ``nr_hugepages`` file of a pool (host path)."""
    if node is None:
        return "/sys/kernel/mm/hugepages/hugepages-%dkB/nr_hugepages" % size_kb
    return "/sys/devices/system/node/node%d/hugepages/hugepages-%dkB/nr_hugepages" % (node, size_kb)


def current_count(state: HostPools, size_kb: int, node: Optional[int]) -> Optional[int]:
    pool = state.pools.get(size_kb)
    if pool is None:
        return None
    if node is None:
        return pool["total"]
    for entry in pool["nodes"]:
        if entry["node"] == node:
            return entry["total"]
    return None


def check_host(host: HostRoot, requests: Iterable[PoolRequest], state: HostPools) -> None:
    """Every node and page size asked for exists here, with a readable page count; else fail naming it."""
    sizes = ", ".join(size_label(size) for size in sorted(state.pools)) or "none"
    for request in requests:
        if request.node is not None and request.node not in state.node_mem_kb:
            known = ", ".join(str(node) for node in sorted(state.node_mem_kb)) or "none (no NUMA in sysfs)"
            raise HugepagesError("NUMA node %d does not exist on this host (nodes: %s): fix the node of the %s"
                                 % (request.node, known, request.label))
        if request.size_kb not in state.pools:
            raise HugepagesError("this kernel has no %s hugepages (no /sys/kernel/mm/hugepages/hugepages-%dkB; "
                                 "sizes here: %s): use one of those, or for 1G pages a CPU with pdpe1gb"
                                 % (size_label(request.size_kb), request.size_kb, sizes))
        if current_count(state, request.size_kb, request.node) is None:
            path = pool_path(request.size_kb, request.node)
            directory = os.path.dirname(path)
            if not host.exists(directory):
                raise HugepagesError("NUMA node %s has no %s pages (%s does not exist): leave the node out of "
                                     "this size's pools" % (request.node, size_label(request.size_kb), directory))
            raise HugepagesError("cannot read %s: the %s cannot be managed; run as root with sysfs mounted"
                                 % (path, request.label))


def reserve_kb(mem_kb: int, reserve_mb: int, reserve_percent: int) -> int:
    """Memory kept out of hugepages on a node: ``reserve_mb`` MiB or ``reserve_percent`` % of it, the larger."""
    return max(reserve_mb * MIB_KB, int(mem_kb * reserve_percent / 100))


def _node_memory(state: HostPools) -> Dict[Optional[int], int]:
    """MemTotal per node (``None``: the whole host when sysfs has no nodes); fails when one is unreadable."""
    if not state.node_mem_kb:
        if state.total_mem_kb is None:
            raise HugepagesError("cannot read MemTotal from /proc/meminfo: the request cannot be checked "
                                 "against the host's memory")
        return {None: state.total_mem_kb}
    missing = [node for node, mem in sorted(state.node_mem_kb.items()) if mem is None]
    if missing:
        raise HugepagesError("cannot read MemTotal from /sys/devices/system/node/node%d/meminfo: the request "
                             "cannot be checked against the node's memory" % missing[0])
    return {node: mem for node, mem in state.node_mem_kb.items() if mem is not None}


def memory_budget(requests: Sequence[PoolRequest], state: HostPools, reserve_mb: int,
                  reserve_percent: int) -> List[Dict[str, Any]]:
    """Hugepage memory per node after the request against MemTotal minus the reserve; fails when over.

    A node counts its pinned pools at the requested size and the pools this request leaves alone at
    their current size.  System-wide pools, which the kernel spreads over the nodes, are checked against
    the whole host: all pools together must fit in the sum of the nodes' limits (a last row, node null).
    """
    requested = {(r.size_kb, r.node): r.count for r in requests}
    if not requested:
        return []  # nothing asked for: nothing to check, and nothing will be written
    memory = _node_memory(state)

    def pages_on(size_kb: int, node: Optional[int]) -> int:
        if (size_kb, node) in requested:
            return requested[(size_kb, node)]
        if (size_kb, None) in requested:
            return 0  # spread by the kernel: counted in the host-wide row
        return current_count(state, size_kb, node) or 0

    rows: List[Dict[str, Any]] = []
    for node in sorted(memory, key=lambda item: -1 if item is None else item):
        reserve = reserve_kb(memory[node], reserve_mb, reserve_percent)
        rows.append({"node": node, "mem_total_kb": memory[node], "reserve_kb": reserve,
                     "limit_kb": max(memory[node] - reserve, 0),
                     "hugepages_kb": sum(pages_on(size_kb, node) * size_kb for size_kb in state.pools)})
    _refuse_over(rows)
    spread = sum(count * size_kb for (size_kb, node), count in requested.items() if node is None)
    if spread and rows[0]["node"] is not None:
        total = {"node": None, "mem_total_kb": sum(r["mem_total_kb"] for r in rows),
                 "reserve_kb": sum(r["reserve_kb"] for r in rows), "limit_kb": sum(r["limit_kb"] for r in rows),
                 "hugepages_kb": sum(r["hugepages_kb"] for r in rows) + spread}
        _refuse_over([total])
        rows.append(total)
    return rows


def _refuse_over(rows: List[Dict[str, Any]]) -> None:
    for row in rows:
        if row["hugepages_kb"] > row["limit_kb"]:
            where = "the host" if row["node"] is None else "NUMA node %d" % row["node"]
            raise HugepagesError(
                "hugepages on %s would take %d MiB, more than its %d MiB of memory minus the %d MiB reserve "
                "(%d MiB): ask for fewer pages, or lower reserve_mb or reserve_percent; nothing was changed"
                % (where, row["hugepages_kb"] // MIB_KB, row["mem_total_kb"] // MIB_KB, row["reserve_kb"] // MIB_KB,
                   row["limit_kb"] // MIB_KB))


# --------------------------------------------------------------------------
# Runtime pools
# --------------------------------------------------------------------------

def plan(requests: Sequence[PoolRequest], state: HostPools) -> List[PoolPlan]:
    """Pools in the order they are written: the ones that shrink first (they free memory), then the
    others by page size, largest first (large pages need contiguous memory most)."""
    plans = [PoolPlan(r, current_count(state, r.size_kb, r.node), pool_path(r.size_kb, r.node)) for r in requests]
    return sorted(plans, key=lambda p: (not (p.before is not None and p.request.count < p.before),
                                        -p.request.size_kb, -1 if p.request.node is None else p.request.node))


def write_count(host: HostRoot, host_path: str, count: int, timeout: float = 60.0) -> None:
    """Write a page count to an existing ``nr_hugepages`` file (never creates one) through the one writer."""
    try:
        write_attribute(host, host_path, "%d\n" % count, timeout)
    except SysfsWriteError as error:
        hint = " (run as root, with sysfs mounted read-write)" if error.stage == "open" else ""
        raise HugepagesError("%s%s" % (error, hint)) from None


def apply_pools(host: HostRoot, plans: Sequence[PoolPlan], check_mode: bool) -> List[Dict[str, Any]]:
    """Write the pools that differ (not in check mode) and read back what the kernel gave, per pool."""
    results = []
    for item in plans:
        request = item.request
        if item.changes and not check_mode:
            write_count(host, item.path, request.count)
        base = os.path.dirname(item.path)
        if check_mode and item.changes:
            allocated: Optional[int] = None
        else:
            allocated = host.read_int(item.path)
            if allocated is None:
                raise HugepagesError("cannot read back %s after writing %d to it" % (item.path, request.count))
        results.append({
            "size": size_label(request.size_kb), "size_kb": request.size_kb, "node": request.node,
            "requested": request.count, "before": item.before, "allocated": allocated,
            "free": host.read_int(base + "/free_hugepages"), "surplus": host.read_int(base + "/surplus_hugepages"),
            "changed": item.changes,
        })
    return results


def shortfalls(pools: Iterable[Dict[str, Any]], boot_sizes: Iterable[int] = ()) -> List[Dict[str, Any]]:
    """Pools the kernel gave fewer pages than requested (``allocated`` < ``requested``); pure.

    ``at_boot`` marks sizes that the returned kernel arguments reserve at the next boot.
    """
    boot = set(boot_sizes)
    found = []
    for pool in pools:
        allocated = pool["allocated"]
        if allocated is not None and allocated < pool["requested"]:
            found.append({"size": pool["size"], "size_kb": pool["size_kb"], "node": pool["node"],
                          "requested": pool["requested"], "allocated": allocated,
                          "missing": pool["requested"] - allocated, "at_boot": pool["size_kb"] in boot})
    return found


def shortfall_message(items: Sequence[Dict[str, Any]], boot_args: Sequence[str]) -> str:
    """One sentence per short pool, with what to do about it."""
    parts = []
    for item in items:
        text = "%s: asked for %d, the kernel gave %d" % (pool_label(item["size_kb"], item["node"]),
                                                         item["requested"], item["allocated"])
        if item["at_boot"]:
            text += " (the kernel arguments %s reserve them at the next boot)" % " ".join(boot_args)
        parts.append(text)
    return ("hugepages short of the request, memory is too fragmented or in use: %s. Free memory on those nodes "
            "(stop workloads, echo 1 > /proc/sys/vm/compact_memory) and run again, reserve the pages at boot "
            "(persist, then reboot), or set on_shortfall to warn" % "; ".join(parts))


# --------------------------------------------------------------------------
# Persistence (pure renderers, then files)
# --------------------------------------------------------------------------

def _system_wide_count(pools: Sequence[PoolRequest], memory_nodes: Sequence[int], release: str) -> int:
    """The ``hugepages=N`` that gives ``pools`` (per node) on a kernel without the node format: the kernel spreads
    N evenly over the nodes with memory, so only the same count on each of them can be said that way."""
    counts = {r.node: r.count for r in pools if r.node is not None}  # per-node pools: build_requests refuses mixes
    if sorted(counts) == sorted(memory_nodes) and len(set(counts.values())) == 1:
        return sum(counts.values())
    label = size_label(pools[0].size_kb)
    asked = ",".join("%d:%d" % (node, count) for node, count in sorted(counts.items()))
    raise HugepagesError(
        "kernel %s predates the per-node form of hugepages= (Linux 5.16), so hugepagesz=%s hugepages=%s would reserve "
        "no %s pages at boot: ask the same count on every NUMA node with memory (%s), which the kernel's even split "
        "of hugepages=N gives, boot Linux 5.16 or newer, or leave %s out of kernel_args_sizes (the boot unit then "
        "allocates the pages after boot, when memory may be too fragmented for them)"
        % (release, label, asked, label, ", ".join(str(node) for node in memory_nodes), label))


def boot_kernel_args(requests: Sequence[PoolRequest], sizes_kb: Iterable[int], release: Optional[str] = None,
                     memory_nodes: Sequence[int] = ()) -> List[str]:
    """``hugepagesz=1G hugepages=N`` (system-wide) or ``hugepages=0:N,1:M`` (per node) for the boot sizes.

    The node format of ``hugepages=`` is the kernel's (Documentation/admin-guide/mm/hugetlbpage.rst) from Linux
    5.16 on (``NODE_FORMAT_SINCE``); an older ``release`` reads ``0:2,1:2`` as 0 pages, so there per-node pools
    are written system-wide when the kernel's even split over ``memory_nodes`` gives them, and refused
    otherwise.  An unknown release is taken as new.  Pools of zero pages are left out, and so is a size with
    no pages at all.
    """
    version = kernel_version(release)
    node_format = version is None or version >= NODE_FORMAT_SINCE
    wanted = set(sizes_kb)
    args: List[str] = []
    for size_kb in sorted({r.size_kb for r in requests if r.size_kb in wanted}, reverse=True):
        pools = [r for r in requests if r.size_kb == size_kb and r.count > 0]
        if not pools:
            continue
        if pools[0].node is None:
            count = str(pools[0].count)
        elif node_format:
            per_node = {r.node: r.count for r in pools if r.node is not None}  # build_requests refuses mixes
            count = ",".join("%d:%d" % item for item in sorted(per_node.items()))
        else:
            count = str(_system_wide_count(pools, memory_nodes, release or ""))
        args += ["hugepagesz=" + size_label(size_kb), "hugepages=" + count]
    return args


def render_config(requests: Sequence[PoolRequest]) -> str:
    """The boot-time unit's pool list: ``<size in kB> <node|all> <count>`` per line, largest pages first."""
    lines = ["# Written by confidential_gpu.host.hugepages; %s sets these pools at boot." % UNIT_NAME,
             "# <page size in kB> <NUMA node, or all for the system-wide pool> <number of pages>"]
    for request in sorted(requests, key=lambda r: (-r.size_kb, -1 if r.node is None else r.node)):
        lines.append("%d %s %d" % (request.size_kb, "all" if request.node is None else request.node, request.count))
    return "\n".join(lines) + "\n"


def persistent_files(host: HostRoot, requests: Sequence[PoolRequest], persist: bool,
                     shipped: Mapping[str, str]) -> List[FileChange]:
    """Files and enablement links that differ from what they should be (content, mode, target); with ``persist``
    false, the ones to remove.  With ``persist`` and no pools at all, no file is touched (such a run changes
    nothing).  The program and unit are the collection's ``files/`` (``shipped``, from the action plugin)."""
    if persist and not requests:
        return []
    try:
        script, unit = (shipped_text(shipped, SHIPPED_SCRIPT), shipped_text(shipped, UNIT_NAME)) if persist else (
            None, None)
    except ValueError as error:
        raise HugepagesError(str(error)) from None
    config = render_config(requests) if persist else None
    return unit_changes(host, UNIT_NAME, unit, ((SCRIPT_PATH, script, 0o755), (CONFIG_PATH, config, 0o644),
                                                (UNIT_PATH, unit, 0o644)), HugepagesError)


def pools_diff(plans: Sequence[PoolPlan]) -> Optional[Dict[str, str]]:
    changed = [p for p in plans if p.changes]
    if not changed:
        return None
    before = "".join("%s: %s\n" % (p.path, p.before) for p in changed)
    after = "".join("%s: %d\n" % (p.path, p.request.count) for p in changed)
    return {"before": before, "after": after, "before_header": "hugepage pools", "after_header": "hugepage pools"}


# --------------------------------------------------------------------------
# The whole run
# --------------------------------------------------------------------------

class Options(NamedTuple):
    pools: Sequence[Dict[str, Any]]
    reserve_mb: int
    reserve_percent: int
    on_shortfall: str
    persist: bool
    kernel_args_sizes: Sequence[str]


def validate_options(options: Options) -> Tuple[List[PoolRequest], List[int]]:
    """Requests and boot sizes (kB) from the options; fails on bad input before anything is read."""
    if options.reserve_mb < 0:
        raise HugepagesError("reserve_mb is %d; it must be 0 or more" % options.reserve_mb)
    if not 0 <= options.reserve_percent < 100:
        raise HugepagesError("reserve_percent is %s; it must be at least 0 and below 100" % options.reserve_percent)
    if options.on_shortfall not in ("fail", "warn"):
        raise HugepagesError("on_shortfall is %r; use fail or warn" % (options.on_shortfall,))
    return build_requests(options.pools), [parse_size(size) for size in options.kernel_args_sizes]


def manage(host: HostRoot, options: Options, check_mode: bool, shipped: Optional[Mapping[str, str]] = None
           ) -> Dict[str, Any]:
    """Check, persist, apply and read back; the module's result (``diff`` always included, ``warnings`` too).

    Raises :class:`HugepagesError` before any change on bad input, an unknown node or size, or a request
    beyond memory minus the reserve; after the writes only for a shortfall with ``on_shortfall: fail``.
    """
    requests, boot_sizes = validate_options(options)
    state = read_host(host)
    check_host(host, requests, state)
    memory = memory_budget(requests, state, options.reserve_mb, options.reserve_percent)
    plans = plan(requests, state)
    release = (host.read_text("/proc/sys/kernel/osrelease") or "").strip() or None
    memory_nodes = [node for node, mem_kb in sorted(state.node_mem_kb.items()) if mem_kb != 0]
    kernel_args = boot_kernel_args(requests, boot_sizes, release, memory_nodes) if options.persist else []
    files = persistent_files(host, requests, options.persist, shipped or {})
    if not check_mode:
        write_changes(host, files, HugepagesError)
    pools = apply_pools(host, plans, check_mode)
    order = {(r.size_kb, r.node): i for i, r in enumerate(requests)}
    pools.sort(key=lambda p: order[(p["size_kb"], p["node"])])
    boot_covered = {r.size_kb for r in requests if r.size_kb in boot_sizes and r.count > 0 and options.persist}
    short = shortfalls(pools, boot_covered)
    diff = [change_diff(change) for change in files]
    runtime_diff = pools_diff(plans)
    if runtime_diff:
        diff.insert(0, runtime_diff)
    result = {
        "changed": bool(files) or any(p.changes for p in plans),
        "pools": pools, "shortfall": short, "memory": memory, "kernel_args": kernel_args,
        "files": [change.host_path for change in files],
        "unit_name": UNIT_NAME,
        "unit_changed": any(change.host_path == UNIT_PATH or change.mode == LINK for change in files),
        "persist": options.persist, "diff": diff,
    }
    error, warnings = shortfall_outcome(short, kernel_args, options.on_shortfall)
    result["warnings"] = warnings
    if error:
        raise ShortfallError(error, result)
    return result


def shortfall_outcome(short: Sequence[Dict[str, Any]], kernel_args: Sequence[str],
                      on_shortfall: str) -> Tuple[Optional[str], List[str]]:
    """(failure message or None, warnings) for the short pools; pure.

    ``fail`` fails when a short pool is not reserved at the next boot; pools that are (``at_boot``) and
    everything under ``warn`` only warn.
    """
    if not short:
        return None, []
    message = shortfall_message(short, kernel_args)
    if on_shortfall == "fail" and any(not item["at_boot"] for item in short):
        return message, []
    return None, [message]


class ShortfallError(HugepagesError):
    """The kernel gave fewer pages than asked for and ``on_shortfall`` is ``fail``; carries the result."""

    def __init__(self, message: str, result: Dict[str, Any]) -> None:
        super().__init__(message)
        self.result = result
