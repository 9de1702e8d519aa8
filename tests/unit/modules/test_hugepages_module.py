"""hugepages run as a process, the way a host runs it, on fake hosts; and the hugepages role handing its boot
arguments to kernel_args (with the stand-in boot tools of tests/lib/standins, so no real boot tool runs)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO

sys.path.insert(0, str(REPO / "tests" / "lib"))
from hugepages_tree import SIZE_1G, SIZE_2M, HugepagesTree  # noqa: E402

MODULE = "hugepages"
CONF = "etc/confidential-gpu/hugepages.conf"
UNIT = "etc/systemd/system/confidential-gpu-hugepages.service"
SCRIPT = "usr/local/sbin/confidential-gpu-hugepages"
WANTS_LINK = "etc/systemd/system/sysinit.target.wants/confidential-gpu-hugepages.service"
BOTH_NODES_2M = [{"size": "2M", "count": 256, "node": 0}, {"size": "2M", "count": 256, "node": 1}]


@pytest.fixture
def tree(tmp_path: Path) -> HugepagesTree:
    """The lab VM's shape: two NUMA nodes of 4 GiB, 2 MiB and 1 GiB pools, all empty."""
    return HugepagesTree(tmp_path / "root")


def test_module_sets_pools_on_both_nodes_then_is_idempotent(run_module, tree: HugepagesTree) -> None:
    first = run_module(MODULE, {"root": str(tree.root), "pools": BOTH_NODES_2M})
    assert first["rc"] == 0 and first["changed"] is True, first
    assert "diff" not in first
    assert tree.count(SIZE_2M, 0) == 256 and tree.count(SIZE_2M, 1) == 256
    assert [(p["size"], p["node"], p["requested"], p["allocated"]) for p in first["pools"]] == [
        ("2M", 0, 256, 256), ("2M", 1, 256, 256)]
    assert first["shortfall"] == [] and first["kernel_args"] == [] and first["unit_changed"] is True
    assert [row["hugepages_kb"] for row in first["memory"]] == [256 * SIZE_2M, 256 * SIZE_2M]
    assert (tree.root / CONF).read_text().splitlines()[2:] == ["2048 0 256", "2048 1 256"]
    assert os.access(tree.root / SCRIPT, os.X_OK)

    second = run_module(MODULE, {"root": str(tree.root), "pools": BOTH_NODES_2M})
    assert second["rc"] == 0 and second["changed"] is False and second["files"] == []
    assert second["unit_changed"] is False and [p["before"] for p in second["pools"]] == [256, 256]


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed here: the "
                    "unit the module writes cannot be verified by systemd itself")
def test_module_unit_passes_systemd_analyze_verify(run_module, tree: HugepagesTree) -> None:
    result = run_module(MODULE, {"root": str(tree.root), "pools": BOTH_NODES_2M})
    assert result["rc"] == 0, result
    proc = subprocess.run(["systemd-analyze", "verify", "--root=%s" % tree.root, "/" + UNIT],
                          capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr
    os.chmod(tree.root / SCRIPT, 0o644)
    broken = subprocess.run(["systemd-analyze", "verify", "--root=%s" % tree.root, "/" + UNIT],
                            capture_output=True, text=True, timeout=60, check=False)
    assert "is not executable" in broken.stderr, "the verification can fail"


def test_module_check_and_diff_mode_write_nothing(run_module, tree: HugepagesTree) -> None:
    before = tree.snapshot()
    result = run_module(MODULE, {"root": str(tree.root), "pools": BOTH_NODES_2M,
                                 "_ansible_check_mode": True, "_ansible_diff": True})
    assert result["rc"] == 0 and result["changed"] is True, result
    assert tree.snapshot() == before
    assert [p["allocated"] for p in result["pools"]] == [None, None]
    assert result["files"] == ["/" + SCRIPT, "/" + CONF, "/" + UNIT, "/" + WANTS_LINK]
    headers = [d["after_header"] for d in result["diff"]]
    assert headers == ["hugepage pools", "/" + SCRIPT, "/" + CONF, "/" + UNIT, "/" + WANTS_LINK]
    assert result["diff"][0]["after"] == "".join("/sys/devices/system/node/node%d/hugepages/hugepages-2048kB/"
                                                 "nr_hugepages: 256\n" % node for node in (0, 1))
    assert "WantedBy=sysinit.target" in result["diff"][3]["after"] and result["diff"][3]["before"] == ""


def test_module_diff_shows_a_changed_pool_list(run_module, tree: HugepagesTree) -> None:
    run_module(MODULE, {"root": str(tree.root), "pools": BOTH_NODES_2M})
    result = run_module(MODULE, {"root": str(tree.root), "_ansible_diff": True,
                                 "pools": [{"size": "2M", "count": 100, "node": 0}, BOTH_NODES_2M[1]]})
    assert result["rc"] == 0 and result["files"] == ["/" + CONF] and result["unit_changed"] is False
    conf_diff = result["diff"][1]
    assert "2048 0 256\n" in conf_diff["before"] and "2048 0 100\n" in conf_diff["after"]
    assert tree.count(SIZE_2M, 0) == 100 and result["pools"][0]["before"] == 256


def test_module_refuses_beyond_memory_and_changes_nothing(run_module, tree: HugepagesTree) -> None:
    before = tree.snapshot()
    result = run_module(MODULE, {"root": str(tree.root),
                                 "pools": [{"size": "2M", "count": 4096, "node": 0}, BOTH_NODES_2M[1]]})
    assert result["rc"] == 1 and result["failed"] is True
    assert result["msg"] == ("hugepages on NUMA node 0 would take 8192 MiB, more than its 4096 MiB of memory minus "
                             "the 2048 MiB reserve (2048 MiB): ask for fewer pages, or lower reserve_mb or "
                             "reserve_percent; nothing was changed")
    assert tree.snapshot() == before


@pytest.mark.parametrize(("pools", "message"), [
    ([{"size": "2M", "count": 1, "node": 2}], "NUMA node 2 does not exist on this host (nodes: 0, 1)"),
    ([{"size": "4M", "count": 1}], "this kernel has no 4M hugepages (no /sys/kernel/mm/hugepages/hugepages-4096kB; "
                                   "sizes here: 2M, 1G)"),
    ([{"size": "2048", "count": 1}], "hugepage size '2048' has no unit: write 2M, 1G or 2048kB"),
])
def test_module_unknown_node_or_size_fails_and_changes_nothing(run_module, tree: HugepagesTree, pools,
                                                               message: str) -> None:
    before = tree.snapshot()
    result = run_module(MODULE, {"root": str(tree.root), "pools": pools})
    assert result["rc"] == 1 and message in result["msg"], result
    assert tree.snapshot() == before


def test_module_returns_boot_arguments_for_1g(run_module, tree: HugepagesTree) -> None:
    per_node = run_module(MODULE, {"root": str(tree.root), "pools": [
        {"size": "1G", "count": 1, "node": 0}, {"size": "1G", "count": 1, "node": 1}, BOTH_NODES_2M[0]]})
    assert per_node["rc"] == 0 and per_node["kernel_args"] == ["hugepagesz=1G", "hugepages=0:1,1:1"]
    assert tree.count(SIZE_1G, 0) == 1 and tree.count(SIZE_1G, 1) == 1
    system_wide = run_module(MODULE, {"root": str(tree.root), "pools": [{"size": "1G", "count": 2}],
                                      "kernel_args_sizes": ["1G", "2M"]})
    assert system_wide["rc"] == 0 and system_wide["kernel_args"] == ["hugepagesz=1G", "hugepages=2"]
    runtime_only = run_module(MODULE, {"root": str(tree.root), "pools": [{"size": "1G", "count": 2}],
                                       "persist": False})
    assert runtime_only["rc"] == 0 and runtime_only["kernel_args"] == []
    assert not (tree.root / UNIT).exists() and not (tree.root / CONF).exists()


def test_module_without_pools_changes_nothing(run_module, tree: HugepagesTree) -> None:
    before = tree.snapshot()
    result = run_module(MODULE, {"root": str(tree.root)})
    assert result["rc"] == 0 and result["changed"] is False and result["files"] == [] and result["pools"] == []
    assert tree.snapshot() == before


def test_module_without_root_fails_clearly(run_module, tmp_path: Path) -> None:
    result = run_module(MODULE, {"root": str(tmp_path / "missing"), "pools": BOTH_NODES_2M})
    assert result["rc"] == 1 and "does not exist or is not a directory" in result["msg"]


# --------------------------------------------------------------------------
# The role, then kernel_args: the boot arguments land in the boot configuration
# --------------------------------------------------------------------------

GRUB = 'GRUB_DEFAULT=0\nGRUB_CMDLINE_LINUX_DEFAULT=""\nGRUB_CMDLINE_LINUX="console=ttyS0,115200n8 %s"\n'
PROC_CMDLINE = "BOOT_IMAGE=/boot/vmlinuz-6.1.0-28-amd64 root=UUID=0a1b ro console=ttyS0,115200n8\n"
CPUINFO = "processor\t: 0\nvendor_id\t: GenuineIntel\ncpu family\t: 6\nmodel name\t: test CPU\nflags\t\t: fpu\n\n"
DROPIN = "etc/default/grub.d/99-confidential-gpu.cfg"

PLAY = """---
- name: Hugepages, then the one writer of boot arguments
  hosts: localhost
  gather_facts: false
  roles:
    - role: confidential_gpu.host.hugepages
    - role: confidential_gpu.host.kernel_args
"""


def boot_files(tree: HugepagesTree, grub_extra: str = "") -> None:
    """A Debian 12 host with GRUB, as kernel_cmdline's grub backend sees it."""
    for relative, content in {"etc/os-release": 'ID=debian\nVERSION_ID="12"\n', "proc/cmdline": PROC_CMDLINE,
                              "etc/default/grub": GRUB % grub_extra, "proc/cpuinfo": CPUINFO,
                              "boot/grub/grub.cfg": "# installed\n"}.items():
        tree.write(relative, content)


def run_play(tmp_path: Path, tree: HugepagesTree, bin_dir: Path, variables: dict) -> subprocess.CompletedProcess:
    play = tmp_path / "play.yml"
    play.write_text(PLAY)
    variables = dict({"hugepages_root": str(tree.root), "kernel_args_root": str(tree.root),
                      "kernel_args_command_path": [str(bin_dir)], "kernel_args_iommu": False,
                      "kernel_args_iommu_passthrough": False, "kernel_args_blacklist_nouveau": False}, **variables)
    env = dict(os.environ, ANSIBLE_CONFIG=str(REPO / "ansible.cfg"), ANSIBLE_NOCOLOR="1")
    command = [str(Path(sys.executable).with_name("ansible-playbook")), str(play), "-e", json.dumps(variables)]
    return subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=300, check=False)


def recap_changed(proc: subprocess.CompletedProcess) -> int:
    line = next(li for li in proc.stdout.splitlines() if li.startswith("localhost") and "changed=" in li)
    return int(line.split("changed=")[1].split()[0])


def test_role_hands_1g_boot_arguments_to_kernel_args(tmp_path: Path, tree: HugepagesTree, bin_dir: Path) -> None:
    boot_files(tree)
    pools = {"hugepages_pools": [{"size": "1G", "count": 1, "node": 0}, {"size": "1G", "count": 1, "node": 1},
                                 {"size": "2M", "count": 64, "node": 0}]}
    proc = run_play(tmp_path, tree, bin_dir, pools)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "GRUB_CMDLINE_LINUX='console=ttyS0,115200n8 hugepagesz=1G hugepages=0:1,1:1'" in \
        (tree.root / DROPIN).read_text()
    assert tree.count(SIZE_1G, 0) == 1 and tree.count(SIZE_2M, 0) == 64
    assert "1G node 0: 1 of 1; 1G node 1: 1 of 1; 2M node 0: 64 of 64; boot arguments: hugepagesz=1G " \
           "hugepages=0:1,1:1" in proc.stdout, proc.stdout
    assert os.readlink(tree.root / WANTS_LINK) == "/" + UNIT, "the module enables the unit below the tree too"

    again = run_play(tmp_path, tree, bin_dir, pools)
    assert again.returncode == 0 and recap_changed(again) == 0, again.stdout


def test_role_removes_stale_boot_pools_when_none_is_reserved(tmp_path: Path, tree: HugepagesTree,
                                                             bin_dir: Path) -> None:
    boot_files(tree, grub_extra="hugepagesz=1G hugepages=2")
    proc = run_play(tmp_path, tree, bin_dir, {"hugepages_pools": BOTH_NODES_2M})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "    GRUB_CMDLINE_LINUX='console=ttyS0,115200n8'\n" in (tree.root / DROPIN).read_text()
    grub_cfg = (tree.root / "boot/grub/grub.cfg").read_text()
    assert "ro console=ttyS0,115200n8" in grub_cfg and "hugepage" not in grub_cfg, grub_cfg
    assert tree.count(SIZE_2M, 0) == 256 and tree.count(SIZE_2M, 1) == 256


def test_role_with_its_defaults_changes_nothing(tmp_path: Path, tree: HugepagesTree, bin_dir: Path) -> None:
    boot_files(tree, grub_extra="hugepagesz=1G hugepages=2")
    proc = run_play(tmp_path, tree, bin_dir, {})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "no pools requested" in proc.stdout
    assert not (tree.root / CONF).exists() and not (tree.root / DROPIN).exists(), \
        "no pool file, and boot arguments written elsewhere are left alone"
    module_task = proc.stdout.split("Set the hugepage pools and write their boot-time configuration]", 1)[1]
    assert module_task.split("TASK [", 1)[0].strip(" *\n").startswith("skipping:"), \
        "no pools with persist: the module would change nothing, so the host is not called"
