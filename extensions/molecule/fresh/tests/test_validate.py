"""What side_effect's playbooks/validate.yml run left on the controller (<ephemeral dir>/results, see ../molecule.yml).

Real measurements on the lab VM under TCG: native against a runc container of the workload image
(scripts/build-workload-image), then the same container held to a fifth of a CPU.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Dict

import pytest
from testinfra.host import Host

RESULTS = Path(os.environ.get("MOLECULE_EPHEMERAL_DIRECTORY", ".")) / "results"
CPU_METRICS = ("cpu_single.events_per_second", "cpu_all.events_per_second")
# The budget for a validate run on the lab VM (all benchmarks, 5 repetitions each way) under TCG
LAB_BUDGET_S = 600


def load(name: str) -> Dict[str, Any]:
    path = RESULTS / name
    if not path.exists():
        pytest.fail(f"{path} missing: run side_effect first (molecule side_effect -s fresh)")
    return json.loads(path.read_text())


def metrics(performance: Dict[str, Any]) -> Dict[str, Dict[str, Any]]:
    return {metric["name"]: metric for metric in performance["verdict"]["metrics"]}


def test_readiness_passed_every_asked_check() -> None:
    run = load("validate/validate.json")
    assert len(run["hosts"]) == 1, list(run["hosts"])
    readiness = next(iter(run["hosts"].values()))["readiness"]
    assert readiness["state"] == "pass", readiness["failed"]
    states = {check["name"]: check["state"] for check in readiness["checks"]}
    for asked in ("iommu", "vfio_devices", "acs", "sriov_vfs", "boot_args_configured", "boot_args_active"):
        assert states[asked] == "pass", (asked, states)


def test_every_benchmark_ran_both_ways_interleaved_with_real_numbers() -> None:
    performance = load("performance.json")
    assert performance["runner"] == "containerd" and performance["handler"] == "io.containerd.runc.v2"
    assert performance["order"] == [[side, rep] for rep in range(1, 6) for side in ("native", "sandbox")]
    measured = metrics(performance)
    for name in CPU_METRICS + ("memory.dumb", "storage.scratch.read.bandwidth", "storage.scratch.write.iops"):
        metric = measured[name]
        assert metric["native_samples"] == metric["sandbox_samples"] == 5, metric
        assert metric["native_median"] > 0 and metric["sandbox_median"] > 0, metric
        assert metric["ratio"] is not None and metric["interval"][0] <= metric["ratio"] <= metric["interval"][1]
    gpu = [metric for name, metric in measured.items() if name.startswith("nvbandwidth.")]
    assert gpu and all(metric["verdict"] == "no GPU" for metric in gpu), gpu  # the lab has no GPU: said, not missing
    assert all(run["rc"] == 0 for run in performance["raw"]), [run for run in performance["raw"] if run["rc"]]


def test_the_sandbox_got_the_selected_groups_as_a_pod_does(host: Host) -> None:
    # vars/prepare.yml's vfio_addresses: the GPU and the VF; their groups' nodes, read from the VM itself. runc makes
    # each node in the container, and ctr fails the run when one is missing on the host: every run passed above.
    groups = {host.run("readlink /sys/bus/pci/devices/%s/iommu_group" % address).stdout.strip().rsplit("/", 1)[-1]
              for address in ("0000:02:00.0", "0000:01:00.1")}
    assert all(group.isdigit() for group in groups), groups
    assert sorted(load("performance.json")["devices"]) == sorted("/dev/vfio/" + group for group in groups)


def test_a_lab_run_fits_the_budget() -> None:
    timings = load("performance.json")["timings"]
    spent = (timings.get("image_import") or 0) + timings["native"] + timings["sandbox"]
    print("validate performance on the lab VM (TCG), seconds:", json.dumps(timings, sort_keys=True))
    assert spent < LAB_BUDGET_S, timings


def test_a_throttled_sandbox_fails_its_cpu_verdict() -> None:
    throttled = load("throttled.json")
    assert throttled["failure"], "the container held to 0.2 CPU passed"
    below = throttled["performance"]["verdict"]["below"]
    assert set(below) & set(CPU_METRICS), below
    assert any(name in throttled["failure"] for name in CPU_METRICS), throttled["failure"]
    # the same container unthrottled, measured a moment before, came much closer to native: the quota did it
    free, held = metrics(load("performance.json")), metrics(throttled["performance"])
    for name in set(below) & set(CPU_METRICS):
        assert free[name]["ratio"] > 2 * held[name]["ratio"], (name, free[name], held[name])
