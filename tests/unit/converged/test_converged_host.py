"""The converged-host suite: every module that changes a host, and playbooks/prepare.yml, run twice and then
with ``--check --diff`` on the tree they converged: the second run and the check report changed=false, no
error, and an empty diff; neither changes a byte of the tree.

Each module runs as a process (as on a host) on a tree built by tests/lib; the action plugins
(containerd_runtimes, kata_runtime_config) run under ansible-playbook, three tasks in one play.
"""

from __future__ import annotations

import json
import re
import shutil
import sys
from contextlib import ExitStack
from pathlib import Path
from typing import Any, Callable, ContextManager, Dict, List, NamedTuple, Optional

import pytest

LIB = Path(__file__).resolve().parents[2] / "lib"
if str(LIB) not in sys.path:
    sys.path.insert(0, str(LIB))

from fake_sriov import LAB_PF, KernelStandIn, lab_tree  # noqa: E402
from fake_sysfs import ServerShape, build_tree, gpu_server  # noqa: E402
from host_critical_tree import lab_vm, lab_vm_functions  # noqa: E402
from hugepages_tree import HugepagesTree  # noqa: E402
from prepare_run import REPO, debian_grub_host, playbook, prepared_lab, recap_changed  # noqa: E402
from role_play import run_tasks_batched  # noqa: E402
from tree_state import changed_entries, tree_state  # noqa: E402

LAB_GPU, LAB_AUDIO = "0000:02:00.0", "0000:02:00.1"
KATA_DEFAULTS = "opt/kata/share/defaults/kata-containers"
KATA_SNP_CONFIG = "configuration-qemu-nvidia-gpu-snp.kata-3.32.0.toml"
CONTAINERD_MAIN = """\
# node config
version = 2

[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
  runtime_type = "io.containerd.runc.v2"
"""


def empty_diff(diff: Any) -> bool:
    """A module's ``diff`` result says nothing changes: absent, or every entry's before equals its after."""
    entries = diff if isinstance(diff, list) else [diff] if diff else []
    return all(entry.get("before", "") == entry.get("after", "") for entry in entries)


class ModuleCase(NamedTuple):
    """A module, the converged tree it runs on (built below ``top``) and its arguments for that tree."""
    module: str
    build: Callable[[Path, Path], Dict[str, Any]]
    kernel: Optional[Callable[[Path], ContextManager[Any]]] = None


def hugepages_case(top: Path, _bin: Path) -> Dict[str, Any]:
    root = HugepagesTree(top / "root").root
    return {"root": str(root), "pools": [{"size": "2M", "count": 8, "node": 0}, {"size": "1G", "count": 1}]}


def kernel_cmdline_case(top: Path, bin_dir: Path) -> Dict[str, Any]:
    root = debian_grub_host(top / "root", "console=ttyS0,115200n8 intel_iommu=on iommu=pt")
    return {"root": str(root), "command_path": [str(bin_dir)], "present": ["modprobe.blacklist=nouveau"],
            "absent": ["iommu=pt"]}


def pci_driver_case(top: Path, _bin: Path) -> Dict[str, Any]:
    root = lab_vm(top / "root", lab_vm_functions(gpu_driver="vfio-pci", audio_driver="vfio-pci"))
    return {"root": str(root), "addresses": [LAB_GPU], "driver": "vfio-pci", "early_binding": True,
            "initramfs_command": "true"}


def pcie_acs_case(top: Path, _bin: Path) -> Dict[str, Any]:
    root = debian_grub_host(build_tree(top / "root", gpu_server(ServerShape(gpus=1, sockets=1))))
    return {"root": str(root), "profile": "p2p", "roles": ["gpu", "nic"], "runtime_write": True}


def sriov_vfs_case(top: Path, _bin: Path) -> Dict[str, Any]:
    root = lab_tree(top / "root")
    return {"root": str(root), "pfs": [{"address": LAB_PF, "num_vfs": 2}], "timeout": 10}


MODULE_CASES = [
    ModuleCase("hugepages", hugepages_case),
    ModuleCase("kernel_cmdline", kernel_cmdline_case),
    ModuleCase("pci_driver", pci_driver_case),
    ModuleCase("pcie_acs", pcie_acs_case),
    ModuleCase("sriov_vfs", sriov_vfs_case, kernel=lambda top: KernelStandIn(top / "root")),
]


@pytest.mark.parametrize("case", MODULE_CASES, ids=[case.module for case in MODULE_CASES])
def test_module_converges(run_module, tmp_path: Path, bin_dir: Path, case: ModuleCase) -> None:
    top = tmp_path / "host"
    args = case.build(top, bin_dir)
    with ExitStack() as stack:
        if case.kernel:
            stack.enter_context(case.kernel(top))
        first = run_module(case.module, args)
        assert first.get("rc", 0) == 0 and not first.get("failed"), first
        assert first["changed"] is True, "the tree was not converged yet: %s" % first
        converged = tree_state(top)
        second = run_module(case.module, args)
        check = run_module(case.module, dict(args, _ansible_check_mode=True, _ansible_diff=True))
    assert not second.get("failed") and second["changed"] is False, second
    assert not check.get("failed") and check["changed"] is False, check
    assert empty_diff(check.get("diff")), check["diff"]
    after = tree_state(top)
    assert after == converged, changed_entries(converged, after)


def three_runs(task: Dict[str, Any]) -> List[Dict[str, Any]]:
    """The task twice, then in check mode with diff."""
    return [dict(task, name="first"), dict(task, name="second"),
            dict(task, name="check", check_mode=True, diff=True)]


def containerd_task(root: Path) -> Dict[str, Any]:
    config = root / "etc/containerd/config.toml"
    config.parent.mkdir(parents=True)
    config.write_text(CONTAINERD_MAIN)
    runtime = {"runtime_type": "io.containerd.kata-qemu-nvidia-gpu-snp.v2",
               "runtime_path": "/opt/kata/bin/containerd-shim-kata-v2",
               "options": {"ConfigPath": "/%s/configuration-qemu-nvidia-gpu-snp.toml" % KATA_DEFAULTS}}
    return {"confidential_gpu.host.containerd_runtimes": {
        "root": str(root), "path": "/etc/containerd/config.toml", "runtimes": {"kata-qemu-nvidia-gpu-snp": runtime}}}


def kata_task(root: Path, shipped: Path) -> Dict[str, Any]:
    defaults = root / KATA_DEFAULTS
    defaults.mkdir(parents=True)
    shutil.copyfile(shipped, defaults / "configuration-qemu-nvidia-gpu-snp.toml")
    return {"confidential_gpu.host.kata_runtime_config": {
        "root": str(root), "shim": "qemu-nvidia-gpu-snp", "kata_version": "3.32.0",
        "kernel_params": ["nvrc.log=debug"], "settings": {"hypervisor": {"qemu": {"default_memory": 32768}}}}}


def action_cases(tmp_path: Path, fixtures: Optional[Path]) -> Dict[str, Dict[str, Any]]:
    cases = {"containerd_runtimes": containerd_task(tmp_path / "containerd")}
    if fixtures is not None:
        cases["kata_runtime_config"] = kata_task(tmp_path / "kata", fixtures / "kata" / KATA_SNP_CONFIG)
    return cases


def test_action_plugins_converge(tmp_path: Path) -> None:
    shared = REPO.parent / "shared" / "fixtures"
    fixtures = shared if (shared / "kata" / KATA_SNP_CONFIG).is_file() else None
    cases = action_cases(tmp_path, fixtures)
    tasks = [task for case in cases.values() for task in three_runs(case)]
    # the trees once the first runs wrote them: run the first tasks alone, then all three of each again
    first = run_tasks_batched(tmp_path, tasks[0::3], name="first")
    assert first.rc == 0, first.output
    converged = tree_state(tmp_path)
    again = run_tasks_batched(tmp_path, [task for index, task in enumerate(tasks) if index % 3], name="again")
    assert again.rc == 0, again.output
    for number, name in enumerate(cases):
        assert first.results[number]["changed"] is True, (name, first.results[number])
        second, check = again.results[2 * number], again.results[2 * number + 1]
        assert not second.get("failed") and second["changed"] is False, (name, second)
        assert not check.get("failed") and check["changed"] is False, (name, check)
        assert empty_diff(check.get("diff")), (name, check["diff"])
    after = {path: entry for path, entry in tree_state(tmp_path).items() if not path.startswith(("again", "first"))}
    expected = {path: entry for path, entry in converged.items() if not path.startswith(("again", "first"))}
    assert after == expected, changed_entries(expected, after)
    if fixtures is None:
        pytest.skip("kata_runtime_config was not run: ../shared/fixtures/kata/%s (the shipped Kata 3.32 "
                    "configuration it edits) is absent; containerd_runtimes passed" % KATA_SNP_CONFIG)


# --------------------------------------------------------------------------
# playbooks/prepare.yml on the lab VM's tree, booted with what prepare configures
# --------------------------------------------------------------------------

def run_prepare(root: Path, bin_dir: Path, *options: str):
    variables = {"confidential_gpu_root": str(root), "cc_host_technology": "none", "cc_host_iommufd": False,
                 "kernel_args_command_path": [str(bin_dir)], "kernel_args_iommu_passthrough": "on",
                 "vfio_addresses": [LAB_GPU], "vfio_initramfs_command": "true",
                 "hugepages_pools": [{"size": "2M", "node": 0, "count": 16}, {"size": "2M", "node": 1, "count": 16}],
                 "sriov_pfs": [{"address": LAB_PF, "num_vfs": 2}], "sriov_timeout": 10,
                 "pcie_acs_profile": "report"}
    with KernelStandIn(root):
        return playbook(REPO / "playbooks/prepare.yml", "-e", json.dumps(variables), *options)


def test_prepare_twice_then_check_diff_changes_nothing(tmp_path: Path, bin_dir: Path) -> None:
    root = prepared_lab(tmp_path / "root")
    first = run_prepare(root, bin_dir)
    assert first.returncode == 0, first.stdout + first.stderr
    assert "REBOOT PENDING" not in first.stdout, "the tree was booted with what prepare writes"
    assert recap_changed(first) > 0, "the first run writes the persistent configuration (units, binding files)"
    converged = tree_state(root)
    second = run_prepare(root, bin_dir)
    assert second.returncode == 0 and recap_changed(second) == 0, second.stdout
    check = run_prepare(root, bin_dir, "--check", "--diff")
    assert check.returncode == 0 and recap_changed(check) == 0, check.stdout
    assert not re.search(r"^(---|\+\+\+) (before|after)", check.stdout, re.MULTILINE), check.stdout
    after = tree_state(root)
    assert after == converged, changed_entries(converged, after)
