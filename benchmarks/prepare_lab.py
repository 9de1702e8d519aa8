"""Benchmark a re-run of playbooks/prepare.yml on a prepared lab VM against a bare ``ansible -m setup`` of it.

A re-run on a prepared host must change nothing, and it should not cost much more than gathering the host's
facts once: issue 16 point 7 aims at a ratio of at most 3.  This runs, interleaved (the lab runs under TCG on
a shared machine, so only runs side by side compare), ``--runs`` rounds of

    ansible -m ansible.builtin.setup            the floor: one module call over SSH
    ansible-playbook playbooks/prepare.yml      with the vars of extensions/molecule/fresh/converge.yml

once with SSH pipelining off and once on (``--pipelining both``, the default; or ``on``/``off``), and prints
the median of each, the ratio prepare / setup, and the median time of each task that ran, summed per role
(benchmarks/callback_plugins/task_times.py records them).  Every prepare run must report changed=0: prepare
the VM first (``--prepare`` runs prepare.yml once with reboot consent, as the fresh scenario's converge does).

Run from the repository root after ./scripts/setup, with a lab VM of your own:
    tests/lab/labctl start --name bench
    .venv/bin/python benchmarks/prepare_lab.py --name bench --prepare --runs 3
    tests/lab/labctl stop --name bench
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List, Tuple

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from prepare import print_task_times, task_medians  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
# The fresh scenario's prepare variables: its converge.yml reads them with include_vars, its side_effect hands
# them to validate.yml.
PREPARE_VARS = REPO / "extensions" / "molecule" / "fresh" / "vars" / "prepare.yml"
# Actions that run on the controller only (no SSH to the host), for the count of the tasks that reach the host.
CONTROLLER_ACTIONS = frozenset({"set_fact", "debug", "assert", "fail", "set_stats", "include_tasks", "import_tasks",
                                "include_role", "import_role", "meta", "validate_argument_spec"})
CACHE = Path(os.environ.get("CGPU_LAB_CACHE_DIR", Path.home() / ".cache" / "confidential-gpu-lab"))


def converge_vars() -> Dict[str, Any]:
    """The vars that the fresh scenario hands prepare.yml: the lab's prepared state is theirs."""
    return dict(yaml.safe_load(PREPARE_VARS.read_text()))


def environment(pipelining: bool, times: Path) -> Dict[str, str]:
    return dict(os.environ, ANSIBLE_CONFIG=str(REPO / "ansible.cfg"), ANSIBLE_NOCOLOR="1",
                ANSIBLE_PIPELINING="1" if pipelining else "0",
                ANSIBLE_CALLBACK_PLUGINS=str(REPO / "benchmarks" / "callback_plugins"),
                ANSIBLE_CALLBACKS_ENABLED="task_times", CONFIDENTIAL_GPU_TASK_TIMES=str(times))


def timed(command: List[str], env: Dict[str, str]) -> Tuple[float, subprocess.CompletedProcess]:
    start = time.perf_counter()
    proc = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=3600, check=False)
    return time.perf_counter() - start, proc


def setup(inventory: Path, pipelining: bool, times: Path) -> float:
    """One bare fact gathering of the VM (``ansible lab -m setup``)."""
    command = [str(Path(sys.executable).with_name("ansible")), "lab", "-i", str(inventory),
               "-m", "ansible.builtin.setup"]
    seconds, proc = timed(command, environment(pipelining, times))
    if proc.returncode != 0:
        raise SystemExit("ansible -m setup failed (rc=%d):\n%s%s" % (proc.returncode, proc.stdout[-3000:], proc.stderr))
    return seconds


def prepare(inventory: Path, pipelining: bool, times: Path, extra: Dict[str, Any]) -> Dict[str, Any]:
    """One run of prepare.yml; its wall time, recap counts and task times."""
    command = [str(Path(sys.executable).with_name("ansible-playbook")), str(REPO / "playbooks" / "prepare.yml"),
               "-i", str(inventory), "-e", json.dumps(extra)]
    seconds, proc = timed(command, environment(pipelining, times))
    recap = next((line for line in proc.stdout.splitlines() if line.startswith("gpu-lab") and "changed=" in line), "")
    if proc.returncode != 0 or not recap:
        raise SystemExit("prepare.yml failed (rc=%d):\n%s%s" % (proc.returncode, proc.stdout[-6000:], proc.stderr))
    counts = {item.split("=")[0]: int(item.split("=")[1]) for item in recap.split(":", 1)[1].split()}
    return {"seconds": seconds, "recap": counts, "tasks": json.loads(times.read_text())}


def report(label: str, setups: List[float], reruns: List[Dict[str, Any]]) -> None:
    setup_median = statistics.median(setups)
    prepare_median = statistics.median(run["seconds"] for run in reruns)
    roles, medians = task_medians(reruns)
    print("%s: ansible -m setup %s s (median %.1f); prepare.yml re-run %s s (median %.1f), changed=0 each; "
          "ratio %.1f" % (label, ", ".join("%.1f" % s for s in setups), setup_median,
                          ", ".join("%.1f" % r["seconds"] for r in reruns), prepare_median,
                          prepare_median / setup_median))
    calls = sum(1 for key in medians if key[3].rsplit(".", 1)[-1] not in CONTROLLER_ACTIONS)
    print("  %d tasks ran, %d of them on the host" % (len(medians), calls))
    print_task_times(roles, medians, "  ", 10)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", maxsplit=1)[0])
    parser.add_argument("--name", default="bench", help="the lab's name (labctl --name), for its inventory")
    parser.add_argument("--inventory", type=Path, help="the lab's inventory (default: the run directory of --name)")
    parser.add_argument("--runs", type=int, default=3, help="interleaved rounds (medians are kept)")
    parser.add_argument("--pipelining", choices=["both", "on", "off"], default="both")
    parser.add_argument("--prepare", action="store_true",
                        help="first run prepare.yml once with reboot consent (a fresh lab VM: one reboot)")
    options = parser.parse_args()
    inventory = options.inventory or CACHE / "run" / options.name / "inventory.yml"
    if not inventory.is_file():
        raise SystemExit("no lab inventory at %s: tests/lab/labctl start --name %s" % (inventory, options.name))
    extra = converge_vars()
    modes = {"both": [False, True], "on": [True], "off": [False]}[options.pipelining]
    with tempfile.TemporaryDirectory(prefix="prepare-lab-bench-") as work:
        times = Path(work) / "times.json"
        if options.prepare:
            first = prepare(inventory, True, times, extra)
            print("preparing run: %.1f s, changed=%d" % (first["seconds"], first["recap"]["changed"]))
        results: Dict[bool, Tuple[List[float], List[Dict[str, Any]]]] = {mode: ([], []) for mode in modes}
        for _round in range(options.runs):
            for mode in modes:
                results[mode][0].append(setup(inventory, mode, times))
                again = prepare(inventory, mode, times, extra)
                if again["recap"]["changed"] != 0:
                    changed = [task["name"] for task in again["tasks"] if task["status"] == "changed"]
                    raise SystemExit("a re-run changed something: %s" % ", ".join(changed))
                results[mode][1].append(again)
    print("load average at the end: %s" % " ".join("%.2f" % value for value in os.getloadavg()))
    for mode in modes:
        report("pipelining %s" % ("on" if mode else "off"), *results[mode])


if __name__ == "__main__":
    main()
