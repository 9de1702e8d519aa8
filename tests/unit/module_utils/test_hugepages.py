"""hugepages: planning, memory checks, runtime writes and boot-time files on fake hosts (tests/lib/hugepages_tree.py).

A fake tree has no kernel behind it, so what is written reads back unchanged; the shortfall logic (the
kernel giving fewer pages) is tested as the pure functions it is, on requested and read-back values.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from ansible_collections.confidential_gpu.host.plugins.module_utils.hugepages import (
    CONFIG_PATH,
    SCRIPT_PATH,
    SHIPPED_SCRIPT,
    UNIT_NAME,
    UNIT_PATH,
    HugepagesError,
    Options,
    PoolRequest,
    boot_kernel_args,
    build_requests,
    check_host,
    manage,
    memory_budget,
    parse_size,
    persistent_files,
    plan,
    read_host,
    render_config,
    reserve_kb,
    shortfall_outcome,
    shortfalls,
)
from ansible_collections.confidential_gpu.host.plugins.module_utils.sysfs import HostRoot
from conftest import REPO

sys.path.insert(0, str(REPO / "tests" / "lib"))
from hugepages_tree import GIB_KB, SIZE_1G, SIZE_2M, HugepagesTree  # noqa: E402
from shipped_files import shipped_for  # noqa: E402

SHIPPED = shipped_for("hugepages")
UNIT_WANTS_LINK = "/etc/systemd/system/sysinit.target.wants/" + UNIT_NAME  # WantedBy=sysinit.target of the unit

MIB_KB = 1024


def options(pools, **extra) -> Options:
    values = {"reserve_mb": 2048, "reserve_percent": 10, "on_shortfall": "fail", "persist": True,
              "kernel_args_sizes": ["1G"]}
    values.update(extra)
    return Options(pools, values["reserve_mb"], values["reserve_percent"], values["on_shortfall"],
                   values["persist"], values["kernel_args_sizes"])


@pytest.fixture
def tree(tmp_path: Path) -> HugepagesTree:
    """The lab VM's shape: two NUMA nodes of 4 GiB, 2 MiB and 1 GiB pools, all empty."""
    return HugepagesTree(tmp_path / "root")


# --------------------------------------------------------------------------
# Input
# --------------------------------------------------------------------------

@pytest.mark.parametrize(("text", "size_kb"), [
    ("2M", 2048), ("2MB", 2048), ("2MiB", 2048), ("2m", 2048), ("1G", GIB_KB), ("1GB", GIB_KB),
    ("2048kB", 2048), ("1048576kB", GIB_KB), ("64K", 64), (" 16 G ", 16 * GIB_KB),
])
def test_parse_size_units(text: str, size_kb: int) -> None:
    assert parse_size(text) == size_kb


@pytest.mark.parametrize(("text", "message"), [
    ("2048", "hugepage size '2048' has no unit: write 2M, 1G or 2048kB"),
    (2048, "hugepage size 2048 has no unit: write 2M, 1G or 2048kB"),
    ("2X", "hugepage size '2X' is not a size"),
    ("huge", "hugepage size 'huge' is not a size"),
    ("0M", "hugepage size '0M' is zero"),
])
def test_parse_size_refuses(text, message: str) -> None:
    with pytest.raises(HugepagesError, match="^" + re.escape(message)):
        parse_size(text)


def test_build_requests_keeps_order_and_parses_counts() -> None:
    requests = build_requests([{"size": "2M", "count": 512, "node": 1}, {"size": "1G", "count": "2", "node": None},
                               {"size": "2048kB", "count": 0, "node": 0}])
    assert requests == [PoolRequest(2048, 1, 512), PoolRequest(GIB_KB, None, 2), PoolRequest(2048, 0, 0)]
    assert requests[0].label == "2M pool on node 1" and requests[1].label == "1G system-wide pool"


@pytest.mark.parametrize(("pools", "message"), [
    ([{"size": "2M", "count": 1, "node": 0}, {"size": "2048kB", "count": 2, "node": 0}],
     "pools[0] and pools[1] both set the 2M pool on node 0: give it once"),
    ([{"size": "1G", "count": 1}, {"size": "1G", "count": 1, "node": 1}],
     "1G pages are asked for both system-wide and on named nodes"),
    ([{"size": "2M", "node": 0}], "pools[0] (2M) has no count"),
    ([{"count": 3}], "pools[0] has no size"),
    ([{"size": "2M", "count": -1}], "pools[0].count is -1; it must be 0 or more"),
    ([{"size": "2M", "count": 1, "node": -2}], "pools[0].node is -2; it must be 0 or more"),
    ([{"size": "2M", "count": "many"}], "pools[0].count is 'many', not a whole number"),
    (["2M"], "pools[0] is '2M', not a mapping"),
])
def test_build_requests_refuses(pools, message: str) -> None:
    with pytest.raises(HugepagesError, match=re.escape(message)):
        build_requests(pools)


# --------------------------------------------------------------------------
# The host: nodes, sizes, memory
# --------------------------------------------------------------------------

def test_read_host_reads_nodes_and_pools(tree: HugepagesTree) -> None:
    tree.set_pool(SIZE_2M, 1, 300).set_pool(SIZE_1G, 0, 1).sync_totals()
    state = read_host(HostRoot(str(tree.root)))
    assert state.node_mem_kb == {0: 4 * GIB_KB, 1: 4 * GIB_KB}
    assert sorted(state.pools) == [SIZE_2M, SIZE_1G]
    assert state.pools[SIZE_2M]["total"] == 300
    assert [(n["node"], n["total"]) for n in state.pools[SIZE_2M]["nodes"]] == [(0, 0), (1, 300)]


def test_check_host_names_an_unknown_node_and_size(tree: HugepagesTree) -> None:
    host = HostRoot(str(tree.root))
    state = read_host(host)
    with pytest.raises(HugepagesError, match=r"NUMA node 3 does not exist on this host \(nodes: 0, 1\): fix the "
                                             r"node of the 2M pool on node 3"):
        check_host(host, build_requests([{"size": "2M", "count": 1, "node": 3}]), state)
    with pytest.raises(HugepagesError, match=r"this kernel has no 16M hugepages \(no /sys/kernel/mm/hugepages/"
                                             r"hugepages-16384kB; sizes here: 2M, 1G\)"):
        check_host(host, build_requests([{"size": "16M", "count": 1}]), state)
    check_host(host, build_requests([{"size": "2M", "count": 1, "node": 1}, {"size": "1G", "count": 1}]), state)


def test_check_host_names_a_node_without_the_size(tree: HugepagesTree) -> None:
    shutil.rmtree(tree.root / tree.pool_dir(SIZE_1G, 1))
    host = HostRoot(str(tree.root))
    with pytest.raises(HugepagesError, match="NUMA node 1 has no 1G pages .*hugepages-1048576kB does not exist"):
        check_host(host, build_requests([{"size": "1G", "count": 1, "node": 1}]), read_host(host))


def test_reserve_is_the_larger_of_mib_and_percent() -> None:
    assert reserve_kb(4 * GIB_KB, 2048, 10) == 2 * GIB_KB
    assert reserve_kb(512 * GIB_KB, 2048, 10) == 512 * GIB_KB // 10
    assert reserve_kb(4 * GIB_KB, 0, 0) == 0


def test_memory_budget_per_node_counts_pools_left_alone(tree: HugepagesTree) -> None:
    tree.set_pool(SIZE_1G, 0, 1).sync_totals()  # 1 GiB already on node 0, not in the request
    state = read_host(HostRoot(str(tree.root)))
    rows = memory_budget(build_requests([{"size": "2M", "count": 512, "node": 0}]), state, 2048, 10)
    assert rows == [
        {"node": 0, "mem_total_kb": 4 * GIB_KB, "reserve_kb": 2 * GIB_KB, "limit_kb": 2 * GIB_KB,
         "hugepages_kb": GIB_KB + 512 * SIZE_2M},
        {"node": 1, "mem_total_kb": 4 * GIB_KB, "reserve_kb": 2 * GIB_KB, "limit_kb": 2 * GIB_KB, "hugepages_kb": 0},
    ]
    # 1 GiB kept + 1 GiB of 2M pages fits exactly; one more page does not.
    memory_budget(build_requests([{"size": "2M", "count": 512, "node": 0}]), state, 2048, 10)
    with pytest.raises(HugepagesError, match=r"hugepages on NUMA node 0 would take 2050 MiB, more than its 4096 MiB "
                                             r"of memory minus the 2048 MiB reserve \(2048 MiB\)"):
        memory_budget(build_requests([{"size": "2M", "count": 513, "node": 0}]), state, 2048, 10)


def test_memory_budget_checks_system_wide_pools_against_the_host(tree: HugepagesTree) -> None:
    state = read_host(HostRoot(str(tree.root)))
    rows = memory_budget(build_requests([{"size": "1G", "count": 4}]), state, 2048, 10)
    assert rows[-1] == {"node": None, "mem_total_kb": 8 * GIB_KB, "reserve_kb": 4 * GIB_KB,
                        "limit_kb": 4 * GIB_KB, "hugepages_kb": 4 * GIB_KB}
    with pytest.raises(HugepagesError, match="hugepages on the host would take 5120 MiB, more than its 8192 MiB"):
        memory_budget(build_requests([{"size": "1G", "count": 5}]), state, 2048, 10)
    with pytest.raises(HugepagesError, match="lower reserve_mb or reserve_percent"):
        memory_budget(build_requests([{"size": "1G", "count": 5}]), state, 1024, 90)


def test_memory_budget_without_numa_uses_proc_meminfo(tmp_path: Path) -> None:
    tree = HugepagesTree(tmp_path / "root", nodes=1, node_mem_kb=16 * GIB_KB, numa=False)
    state = read_host(HostRoot(str(tree.root)))
    assert state.node_mem_kb == {} and state.total_mem_kb == 16 * GIB_KB
    rows = memory_budget(build_requests([{"size": "1G", "count": 12}]), state, 2048, 10)
    assert rows == [{"node": None, "mem_total_kb": 16 * GIB_KB, "reserve_kb": 2 * GIB_KB, "limit_kb": 14 * GIB_KB,
                     "hugepages_kb": 12 * GIB_KB}]
    with pytest.raises(HugepagesError, match="NUMA node 0 does not exist on this host \\(nodes: none"):
        check_host(HostRoot(str(tree.root)), build_requests([{"size": "1G", "count": 1, "node": 0}]), state)


def test_memory_budget_fails_when_node_memory_is_unreadable(tree: HugepagesTree) -> None:
    (tree.root / "sys/devices/system/node/node1/meminfo").unlink()
    state = read_host(HostRoot(str(tree.root)))
    with pytest.raises(HugepagesError, match="cannot read MemTotal from /sys/devices/system/node/node1/meminfo"):
        memory_budget(build_requests([{"size": "2M", "count": 1, "node": 0}]), state, 2048, 10)


# --------------------------------------------------------------------------
# Runtime plan and the whole run
# --------------------------------------------------------------------------

def test_plan_shrinks_first_then_largest_pages(tree: HugepagesTree) -> None:
    tree.set_pool(SIZE_2M, 1, 600).sync_totals()
    state = read_host(HostRoot(str(tree.root)))
    plans = plan(build_requests([{"size": "2M", "count": 100, "node": 0}, {"size": "1G", "count": 1, "node": 0},
                                 {"size": "2M", "count": 10, "node": 1}]), state)
    assert [(p.request.size_kb, p.request.node, p.before, p.changes) for p in plans] == [
        (SIZE_2M, 1, 600, True), (SIZE_1G, 0, 0, True), (SIZE_2M, 0, 0, True)]
    assert plans[0].path == "/sys/devices/system/node/node1/hugepages/hugepages-2048kB/nr_hugepages"


def test_manage_applies_reads_back_and_is_idempotent(tree: HugepagesTree) -> None:
    pools = [{"size": "2M", "count": 256, "node": 0}, {"size": "2M", "count": 128, "node": 1}]
    result = manage(HostRoot(str(tree.root)), options(pools), check_mode=False, shipped=SHIPPED)
    assert result["changed"] is True and result["shortfall"] == [] and result["warnings"] == []
    assert [(p["node"], p["before"], p["allocated"], p["changed"]) for p in result["pools"]] == [
        (0, 0, 256, True), (1, 0, 128, True)]
    assert tree.count(SIZE_2M, 0) == 256 and tree.count(SIZE_2M, 1) == 128
    assert result["files"] == [SCRIPT_PATH, CONFIG_PATH, UNIT_PATH, UNIT_WANTS_LINK]
    assert result["unit_changed"] is True
    assert os.readlink(tree.root / UNIT_WANTS_LINK.lstrip("/")) == UNIT_PATH, "enabled as systemctl enable does"
    assert result["kernel_args"] == []
    again = manage(HostRoot(str(tree.root)), options(pools), check_mode=False, shipped=SHIPPED)
    assert again["changed"] is False and again["files"] == [] and again["unit_changed"] is False
    assert [p["changed"] for p in again["pools"]] == [False, False]


def test_manage_refusal_changes_nothing(tree: HugepagesTree) -> None:
    before = tree.snapshot()
    with pytest.raises(HugepagesError, match="hugepages on NUMA node 1 would take 4096 MiB.*nothing was changed"):
        manage(HostRoot(str(tree.root)), options([{"size": "2M", "count": 10, "node": 0},
                                                  {"size": "2M", "count": 2048, "node": 1}]), check_mode=False)
    assert tree.snapshot() == before


def test_manage_check_mode_writes_nothing(tree: HugepagesTree) -> None:
    before = tree.snapshot()
    result = manage(HostRoot(str(tree.root)), options([{"size": "1G", "count": 1, "node": 0}]), check_mode=True,
                    shipped=SHIPPED)
    assert tree.snapshot() == before
    assert result["changed"] is True and result["pools"][0]["allocated"] is None
    assert result["kernel_args"] == ["hugepagesz=1G", "hugepages=0:1"]
    assert result["diff"][0] == {
        "before": "/sys/devices/system/node/node0/hugepages/hugepages-1048576kB/nr_hugepages: 0\n",
        "after": "/sys/devices/system/node/node0/hugepages/hugepages-1048576kB/nr_hugepages: 1\n",
        "before_header": "hugepage pools", "after_header": "hugepage pools"}
    assert [d["after_header"] for d in result["diff"][1:]] == [SCRIPT_PATH, CONFIG_PATH, UNIT_PATH, UNIT_WANTS_LINK]
    assert result["diff"][2]["before_header"] == CONFIG_PATH + " (absent)"


def test_manage_refuses_bad_options_before_reading(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    for bad, message in ((options([], reserve_mb=-1), "reserve_mb is -1"),
                         (options([], reserve_percent=100), "reserve_percent is 100"),
                         (options([], on_shortfall="ignore"), "on_shortfall is 'ignore'"),
                         (options([], kernel_args_sizes=["1024"]), "has no unit")):
        with pytest.raises(HugepagesError, match=message):
            manage(HostRoot(str(empty)), bad, check_mode=False, shipped=SHIPPED)
    assert list(empty.iterdir()) == []


# --------------------------------------------------------------------------
# Shortfall: what the kernel gave against what was asked for (pure)
# --------------------------------------------------------------------------

def pool(size_kb: int, node, requested: int, allocated) -> dict:
    return {"size": "1G" if size_kb == SIZE_1G else "2M", "size_kb": size_kb, "node": node,
            "requested": requested, "allocated": allocated}


def test_shortfalls_lists_pools_the_kernel_gave_fewer_pages() -> None:
    pools = [pool(SIZE_2M, 0, 512, 512), pool(SIZE_2M, 1, 512, 300), pool(SIZE_1G, 1, 4, 1),
             pool(SIZE_1G, 0, 2, None), pool(SIZE_2M, None, 10, 12)]
    assert shortfalls(pools, {SIZE_1G}) == [
        {"size": "2M", "size_kb": SIZE_2M, "node": 1, "requested": 512, "allocated": 300, "missing": 212,
         "at_boot": False},
        {"size": "1G", "size_kb": SIZE_1G, "node": 1, "requested": 4, "allocated": 1, "missing": 3, "at_boot": True},
    ]


def test_shortfall_outcome_fails_or_warns() -> None:
    short_2m = shortfalls([pool(SIZE_2M, 1, 512, 300)])
    error, warnings = shortfall_outcome(short_2m, [], "fail")
    assert warnings == [] and error is not None
    assert "2M pool on node 1: asked for 512, the kernel gave 300" in error and "on_shortfall to warn" in error
    error, warnings = shortfall_outcome(short_2m, [], "warn")
    assert error is None and len(warnings) == 1 and "the kernel gave 300" in warnings[0]

    short_1g = shortfalls([pool(SIZE_1G, None, 4, 1)], {SIZE_1G})
    error, warnings = shortfall_outcome(short_1g, ["hugepagesz=1G", "hugepages=4"], "fail")
    assert error is None, "a pool the boot arguments reserve only warns, so that they get written"
    assert "(the kernel arguments hugepagesz=1G hugepages=4 reserve them at the next boot)" in warnings[0]
    assert shortfall_outcome([], [], "fail") == (None, [])


# --------------------------------------------------------------------------
# Persistence: boot arguments, unit, pool list, program
# --------------------------------------------------------------------------

def test_boot_kernel_args_system_wide_per_node_and_zero() -> None:
    assert boot_kernel_args(build_requests([{"size": "1G", "count": 4}, {"size": "2M", "count": 9}]),
                            [SIZE_1G]) == ["hugepagesz=1G", "hugepages=4"]
    per_node = build_requests([{"size": "1G", "count": 3, "node": 1}, {"size": "1G", "count": 2, "node": 0},
                               {"size": "1G", "count": 0, "node": 2}, {"size": "2M", "count": 9, "node": 0}])
    assert boot_kernel_args(per_node, [SIZE_1G]) == ["hugepagesz=1G", "hugepages=0:2,1:3"]
    assert boot_kernel_args(per_node, [SIZE_1G, SIZE_2M]) == [
        "hugepagesz=1G", "hugepages=0:2,1:3", "hugepagesz=2M", "hugepages=0:9"]
    assert boot_kernel_args(build_requests([{"size": "1G", "count": 0}]), [SIZE_1G]) == []
    assert boot_kernel_args(per_node, []) == []


@pytest.mark.parametrize("release, counts, expected", [
    ("6.1.0-28-amd64", {0: 2, 1: 2}, "0:2,1:2"),
    (None, {0: 2, 1: 3}, "0:2,1:3"),                  # release unknown: taken as new
    ("5.16.0", {0: 2, 1: 3}, "0:2,1:3"),
    ("5.15.0-91-generic", {0: 2, 1: 2}, "4"),         # before 5.16: the kernel's even split gives the same
    ("4.18.0-553.el8_10.x86_64", {0: 1, 1: 1}, "2"),
])
def test_boot_kernel_args_per_node_by_kernel_release(release, counts, expected: str) -> None:
    requests = build_requests([{"size": "1G", "count": count, "node": node} for node, count in counts.items()])
    assert boot_kernel_args(requests, [SIZE_1G], release, [0, 1]) == ["hugepagesz=1G", "hugepages=" + expected]


@pytest.mark.parametrize("counts", [{0: 2, 1: 3}, {1: 4}, {0: 0, 1: 4}])
def test_boot_kernel_args_refuses_what_an_old_kernel_cannot_reserve(counts) -> None:
    requests = build_requests([{"size": "1G", "count": count, "node": node} for node, count in counts.items()])
    with pytest.raises(HugepagesError, match=r"^kernel 5\.15\.0-91-generic predates the per-node form of "
                       r"hugepages= \(Linux 5\.16\), so hugepagesz=1G hugepages=.* would reserve no 1G pages at "
                       r"boot: ask the same count on every NUMA node with memory \(0, 1\)"):
        boot_kernel_args(requests, [SIZE_1G], "5.15.0-91-generic", [0, 1])


def test_manage_on_an_old_kernel_refuses_uneven_boot_pools_before_any_change(tree: HugepagesTree) -> None:
    tree.write("proc/sys/kernel/osrelease", "5.15.0-91-generic\n")
    before = tree.snapshot()
    uneven = [{"size": "1G", "count": 1, "node": 0}, {"size": "1G", "count": 2, "node": 1}]
    with pytest.raises(HugepagesError, match="predates the per-node form"):
        manage(HostRoot(str(tree.root)), options(uneven), check_mode=False, shipped=SHIPPED)
    assert tree.snapshot() == before
    even = [{"size": "1G", "count": 1, "node": 0}, {"size": "1G", "count": 1, "node": 1}]
    result = manage(HostRoot(str(tree.root)), options(even), check_mode=True, shipped=SHIPPED)
    assert result["kernel_args"] == ["hugepagesz=1G", "hugepages=2"]


def test_render_config_and_unit() -> None:
    config = render_config(build_requests([{"size": "2M", "count": 5, "node": 1}, {"size": "1G", "count": 2},
                                           {"size": "2M", "count": 7, "node": 0}]))
    assert [line for line in config.splitlines() if not line.startswith("#")] == [
        "1048576 all 2", "2048 0 7", "2048 1 5"]
    unit = SHIPPED[UNIT_NAME]
    for line in ("DefaultDependencies=no", "After=systemd-modules-load.service local-fs.target",
                 "Before=sysinit.target shutdown.target kubelet.service containerd.service",
                 "Type=oneshot", "RemainAfterExit=yes", "ConditionPathExists=" + CONFIG_PATH,
                 "ExecStart=%s %s" % (SCRIPT_PATH, CONFIG_PATH), "WantedBy=sysinit.target"):
        assert line in unit.splitlines()


def test_persistent_files_modes_idempotence_and_removal(tree: HugepagesTree) -> None:
    host = HostRoot(str(tree.root))
    requests = build_requests([{"size": "2M", "count": 5, "node": 0}])
    manage(host, options([{"size": "2M", "count": 5, "node": 0}]), check_mode=False, shipped=SHIPPED)
    assert os.stat(tree.root / SCRIPT_PATH.lstrip("/")).st_mode & 0o777 == 0o755
    assert os.stat(tree.root / UNIT_PATH.lstrip("/")).st_mode & 0o777 == 0o644
    assert persistent_files(host, requests, True, SHIPPED) == []
    os.chmod(tree.root / SCRIPT_PATH.lstrip("/"), 0o644)
    assert [c.host_path for c in persistent_files(host, requests, True, SHIPPED)] == [SCRIPT_PATH]
    link = tree.root / UNIT_WANTS_LINK.lstrip("/")
    link.unlink()
    link.symlink_to("/elsewhere/" + UNIT_NAME)
    assert [(c.host_path, c.after) for c in persistent_files(host, requests, True, SHIPPED)][1:] == [
        (UNIT_WANTS_LINK, UNIT_PATH)], "a link pointing elsewhere is put back"
    result = manage(host, options([{"size": "2M", "count": 5, "node": 0}], persist=False), check_mode=False)
    assert result["files"] == [SCRIPT_PATH, CONFIG_PATH, UNIT_PATH, UNIT_WANTS_LINK] and result["unit_changed"]
    assert result["kernel_args"] == []
    for path in (SCRIPT_PATH, CONFIG_PATH, UNIT_PATH, UNIT_WANTS_LINK):
        assert not os.path.lexists(tree.root / path.lstrip("/"))
    assert tree.count(SIZE_2M, 0) == 5, "the runtime pool stays"


def run_script(tree: HugepagesTree, config: str) -> subprocess.CompletedProcess:
    script = tree.root.parent / "confidential-gpu-hugepages"
    script.write_text(SHIPPED[SHIPPED_SCRIPT])
    (tree.root.parent / "hugepages.conf").write_text(config)
    return subprocess.run(["sh", str(script), str(tree.root.parent / "hugepages.conf"), str(tree.root)],
                          capture_output=True, text=True, timeout=30, check=False)


@pytest.mark.skipif(shutil.which("sh") is None, reason="no POSIX sh on this machine to run the boot-time program")
def test_boot_program_sets_the_pools_of_the_config(tree: HugepagesTree) -> None:
    config = render_config(build_requests([{"size": "2M", "count": 64, "node": 1}, {"size": "1G", "count": 2},
                                           {"size": "2M", "count": 32, "node": 0}]))
    proc = run_script(tree, config)
    assert proc.returncode == 0, proc.stderr
    assert tree.count(SIZE_2M, 0) == 32 and tree.count(SIZE_2M, 1) == 64 and tree.count(SIZE_1G, None) == 2
    assert proc.stdout.splitlines() == ["confidential-gpu-hugepages: 1048576kB pages on system-wide: 2",
                                        "confidential-gpu-hugepages: 2048kB pages on node 0: 32",
                                        "confidential-gpu-hugepages: 2048kB pages on node 1: 64"]


@pytest.mark.skipif(shutil.which("sh") is None, reason="no POSIX sh on this machine to run the boot-time program")
def test_boot_program_reports_bad_lines_and_missing_pools(tree: HugepagesTree) -> None:
    proc = run_script(tree, "2048 0 8\n2048 7 1\n2M 0 1\n2048 x 1\n2048 0 1 extra\n2048 1 -3\n")
    assert proc.returncode == 1
    assert tree.count(SIZE_2M, 0) == 8, "good lines still apply"
    assert "node7/hugepages/hugepages-2048kB/nr_hugepages does not exist: no 2048kB pages on node 7" in proc.stderr
    for text in ("bad page size '2M'", "bad node 'x' for 2048kB pages", "more than three fields in '2048 0 1 extra'",
                 "bad page count '-3' for 2048kB pages"):
        assert text in proc.stderr
