"""Benchmark a re-run of playbooks/prepare.yml on a prepared GPU server: it must change nothing, quickly.

Builds the large synthetic GPU server of benchmarks/discovery.py (8 GPUs behind switches, NICs with
SR-IOV VFs, NVSwitches: about 1,600 PCI functions) as a tree with a Debian 12 boot configuration,
the GPUs already on vfio-pci, and runs prepare.yml against it through ``confidential_gpu_root`` (local
connection, the way the unit tests run it): once to write the persistent files, then with the boot
arguments it wrote made active (as after the reboot), then ``--runs`` more times, each of which must
report changed=0.  It prints the median wall time of those re-runs, the median time of each task that
ran (benchmarks/callback_plugins/task_times.py records them) summed per role, and the slowest tasks.

A tree is plain files, so this measures Ansible's and the roles' own cost; reading a real host's sysfs
adds the config accesses that benchmarks/discovery.py --host measures.  The modules run under the host's
interpreter, as in benchmarks/discovery.py (``--python PATH`` for another).

Run from the repository root after ./scripts/setup:
    .venv/bin/python benchmarks/prepare.py [--runs 5]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any, Dict, List, Tuple

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "lib"))
from fake_sysfs import build_tree, gpu_server  # noqa: E402

sys.path.insert(0, str(REPO / "benchmarks"))
from discovery import SHAPES, default_python, interpreter, python_version  # noqa: E402

GRUB = 'GRUB_DEFAULT=0\nGRUB_CMDLINE_LINUX_DEFAULT=""\nGRUB_CMDLINE_LINUX="console=ttyS0,115200n8"\n'
CMDLINE = "BOOT_IMAGE=/boot/vmlinuz-6.1.0-28-amd64 root=UUID=0a1b ro console=ttyS0,115200n8"
CPUINFO = "processor\t: 0\nvendor_id\t: GenuineIntel\ncpu family\t: 6\nmodel\t\t: 143\nmodel name\t: bench CPU\n" \
          "flags\t\t: fpu vmx\n\n"
DROPIN = "etc/default/grub.d/99-confidential-gpu.cfg"
# What the fake host cannot show: no TDX firmware, no IOMMUFD kernel (cc_host has its own tests).
EXTRA_VARS = {"cc_host_technology": "none", "cc_host_iommufd": False}


def prepared_server(root: Path) -> int:
    """The server's tree, its GPUs on vfio-pci, with the files prepare reads; returns the function count."""
    functions = gpu_server(SHAPES["large"])
    for function in functions:
        if function.driver == "nvidia" and function.config[10:12] == b"\x02\x03":
            function.driver = "vfio-pci"
    build_tree(root, functions)
    files = {"etc/os-release": 'ID=debian\nVERSION_ID="12"\n', "etc/default/grub": GRUB,
             "proc/cmdline": CMDLINE + "\n", "proc/cpuinfo": CPUINFO, "boot/grub/grub.cfg": "# installed\n"}
    files.update({"sys/firmware/acpi/tables/" + name: "" for name in ("APIC", "FACP", "DMAR")})
    for path, content in files.items():
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_text(content)
    return len(functions)


def standins(work: Path) -> Path:
    """update-grub and friends that write where the tree's boot configuration is (tests/lib/standins)."""
    target = work / "bin"
    shutil.copytree(REPO / "tests" / "lib" / "standins", target)
    for path in target.iterdir():
        path.chmod(0o755)
    return target


def prepare(root: Path, bin_dir: Path, times: Path, python: Path) -> Dict[str, Any]:
    """One run of prepare.yml, its modules run by ``python``; its wall time, recap counts and task times."""
    extra = dict(EXTRA_VARS, confidential_gpu_root=str(root), kernel_args_command_path=[str(bin_dir)],
                 ansible_python_interpreter=str(python))
    env = dict(os.environ, ANSIBLE_CONFIG=str(REPO / "ansible.cfg"), ANSIBLE_NOCOLOR="1",
               ANSIBLE_CALLBACK_PLUGINS=str(REPO / "benchmarks" / "callback_plugins"),
               ANSIBLE_CALLBACKS_ENABLED="task_times", CONFIDENTIAL_GPU_TASK_TIMES=str(times))
    command = [str(Path(sys.executable).with_name("ansible-playbook")), str(REPO / "playbooks" / "prepare.yml"),
               "-e", json.dumps(extra)]
    start = time.perf_counter()
    proc = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=1800, check=False)
    seconds = time.perf_counter() - start
    recap = next((line for line in proc.stdout.splitlines() if line.startswith("localhost") and "changed=" in line),
                 "")
    if proc.returncode != 0 or not recap:
        raise SystemExit("prepare.yml failed (rc=%d):\n%s%s" % (proc.returncode, proc.stdout[-6000:], proc.stderr))
    counts = {item.split("=")[0]: int(item.split("=")[1]) for item in recap.split(":", 1)[1].split()}
    return {"seconds": seconds, "recap": counts, "tasks": json.loads(times.read_text()), "output": proc.stdout}


def make_boot_arguments_active(root: Path) -> None:
    """As after the reboot: /proc/cmdline carries what the GRUB drop-in configured."""
    text = (root / DROPIN).read_text()
    configured = text.split("GRUB_CMDLINE_LINUX='")[1].split("'")[0]
    (root / "proc/cmdline").write_text("BOOT_IMAGE=/boot/vmlinuz-6.1.0-28-amd64 root=UUID=0a1b ro %s\n" % configured)


def task_medians(reruns: List[Dict[str, Any]]) -> Tuple[Dict[str, float], Dict[tuple, float]]:
    """Median time of each task that ran (key: index, role, name, action), and their sum per role."""
    per_task: Dict[tuple, List[float]] = defaultdict(list)
    for run in reruns:
        for index, task in enumerate(run["tasks"]):
            if task["status"] not in (None, "skipped"):
                per_task[(index, task["role"] or "(play)", task["name"], task["action"])].append(task["seconds"])
    medians = {key: statistics.median(values) for key, values in per_task.items()}
    per_role: Dict[str, float] = defaultdict(float)
    for (_index, role, _name, _action), value in medians.items():
        per_role[role] += value
    return dict(per_role), medians


def print_task_times(per_role: Dict[str, float], medians: Dict[tuple, float], indent: str, slowest: int) -> None:
    print(indent + "per role (sum of task medians):")
    for role, value in sorted(per_role.items(), key=lambda item: -item[1]):
        print(indent + "  %-42s %6.2f s" % (role, value))
    print(indent + "slowest tasks (median):")
    for (_index, role, name, action), value in sorted(medians.items(), key=lambda item: -item[1])[:slowest]:
        print(indent + "  %6.2f s  %s : %s (%s)" % (value, role, name, action))


def report(functions: int, reruns: List[Dict[str, Any]]) -> None:
    per_role, medians = task_medians(reruns)
    ran = len(medians)
    print("prepare.yml re-run on a prepared server, %d PCI functions, %d runs: median %.1f s, changed=0 every time, "
          "%d tasks ran (%d skipped)" % (functions, len(reruns), statistics.median(r["seconds"] for r in reruns),
                                         ran, len(reruns[0]["tasks"]) - ran))
    print_task_times(per_role, medians, "", 12)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", maxsplit=1)[0])
    parser.add_argument("--runs", type=int, default=5, help="timed re-runs (median is kept)")
    parser.add_argument("--python", type=interpreter, default=default_python(),
                        help="the interpreter that runs the modules, as a host's would (default: /usr/bin/python3 "
                             "when present, else this one)")
    options = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="prepare-bench-"))
    try:
        root = work / "root"
        functions = prepared_server(root)
        bin_dir = standins(work)
        first = prepare(root, bin_dir, work / "times.json", options.python)
        make_boot_arguments_active(root)
        settle = prepare(root, bin_dir, work / "times.json", options.python)
        print("first run %.1f s (changed=%d), after the boot arguments became active %.1f s (changed=%d)"
              % (first["seconds"], first["recap"]["changed"], settle["seconds"], settle["recap"]["changed"]))
        reruns = []
        for _run in range(options.runs):
            again = prepare(root, bin_dir, work / "times.json", options.python)
            if again["recap"]["changed"] != 0:
                changed = [task["name"] for task in again["tasks"] if task["status"] == "changed"]
                raise SystemExit("a re-run changed something: %s" % ", ".join(changed))
            reruns.append(again)
        print("modules run by %s (Python %s)" % (options.python, python_version(options.python)))
        report(functions, reruns)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
