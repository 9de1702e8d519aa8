"""Role validate, performance part: the benchmarks run for real, natively and in a container, interleaved.

This machine (root, local connection) runs the part against a private containerd daemon (own root, state and
socket under tmp, the CRI plugin off) with handler ``io.containerd.runc.v2``, and the workload image that
scripts/build-workload-image builds (Debian 12 with sysbench, fio, mbw; cached by its recipe hash, built once).

- 3 repetitions each way, short durations: the fact ``validate_performance`` has the shape the report reads, real
  positive numbers, the order native, sandbox, native, ... and a verdict per metric.
- A throttled sandbox (``ctr run --cpus 0.2``, a CFS quota) fails the host with a ``below`` verdict naming the cpu
  metrics: the verdict catches a slow sandbox on a real measurement.
- ``--check`` runs nothing (no container, no image import) and sets no result.
- Selected devices (role vfio's selection) that are not on vfio-pci stop the part before anything runs, naming the
  function and the fix; these runs pass no devices (``validate_pass_selected_devices`` false, as AWX sends it): this
  machine has nothing on vfio-pci. The lab passes real groups (extensions/molecule/fresh, tests/test_validate.py).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Dict, Iterator

import pytest

LIB = Path(__file__).resolve().parents[2] / "lib"
if str(LIB) not in sys.path:
    sys.path.insert(0, str(LIB))

from host_critical_tree import lab_vm  # noqa: E402
from required_tools import require_tool  # noqa: E402
from role_play import REPO, run_role  # noqa: E402

NAMESPACE = "cgpu-validate-test"
IMAGE = "localhost/confidential-gpu/validate-workload:bookworm"


@pytest.fixture(scope="module")
def workload_archive() -> str:
    if os.geteuid() != 0:
        pytest.skip("building the workload image and running containerd need root")
    for tool in ("mmdebstrap", "umoci", "containerd", "ctr", "runc", "sysbench", "fio", "mbw"):
        require_tool(tool, "the validation's performance part runs it")
    proc = subprocess.run([str(REPO / "scripts" / "build-workload-image")], capture_output=True, text=True,
                          timeout=900, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout.strip().splitlines()[-1]


@pytest.fixture(scope="module")
def containerd(tmp_path_factory: pytest.TempPathFactory, workload_archive: str) -> Iterator[str]:
    """A private containerd daemon; yields its socket."""
    base = tmp_path_factory.mktemp("containerd")
    socket = base / "containerd.sock"
    config = base / "config.toml"
    config.write_text('version = 2\nroot = "%s"\nstate = "%s"\ndisabled_plugins = ["io.containerd.grpc.v1.cri"]\n'
                      '[grpc]\n  address = "%s"\n' % (base / "root", base / "state", socket))
    log = (base / "containerd.log").open("w")
    daemon = subprocess.Popen([shutil.which("containerd") or "containerd", "--config", str(config)],
                              stdout=log, stderr=subprocess.STDOUT)
    try:
        for _attempt in range(100):
            if socket.exists():
                break
            time.sleep(0.1)
        assert socket.exists(), (base / "containerd.log").read_text()[-2000:]
        yield str(socket)
    finally:
        daemon.terminate()
        daemon.wait(timeout=30)
        log.close()


def perf_vars(socket: str, **extra: Any) -> Dict[str, Any]:
    return dict({"validate_parts": ["performance"], "validate_runner": "containerd",
                 "validate_runtime_handler": "io.containerd.runc.v2", "validate_containerd_address": socket,
                 "validate_containerd_namespace": NAMESPACE, "validate_repetitions": "3",
                 "validate_cpu_seconds": 1, "validate_memory_mib": 16, "validate_memory_loops": 2,
                 "validate_storage_mib": 4, "validate_storage_seconds": 1,
                 "validate_pass_selected_devices": "false"}, **extra)


def test_native_against_runc_container(tmp_path: Path, containerd: str, workload_archive: str) -> None:
    result = run_role(tmp_path, "validate", perf_vars(containerd, validate_workload_archive=workload_archive,
                                                      validate_fail_on_fail=False),
                      report=["validate_performance"])
    assert result.rc == 0, result.output[-4000:]
    perf = result.facts["validate_performance"]
    assert set(perf) == {"runner", "handler", "image", "devices", "repetitions", "order", "raw", "verdict",
                         "timings", "host_facts"}
    assert perf["devices"] == []
    assert (perf["runner"], perf["handler"], perf["image"], perf["repetitions"]) == (
        "containerd", "io.containerd.runc.v2", IMAGE, 3)
    assert perf["order"] == [["native", 1], ["sandbox", 1], ["native", 2], ["sandbox", 2], ["native", 3],
                             ["sandbox", 3]]
    # every benchmark of every run kept, in the interleaved order, with its command, rc and output
    assert [(r["side"], r["repetition"]) for r in perf["raw"] if r["benchmark"] == "cpu_single"] == \
        [tuple(item) for item in perf["order"]]
    assert {r["benchmark"] for r in perf["raw"]} == {"threads", "cpu_single", "cpu_all", "memory", "storage"}
    for record in perf["raw"]:
        assert record["rc"] == 0 and record["seconds"] >= 0 and record["command"], record
    assert any(r["command"] == "sysbench cpu --time=1 --threads=1 run" for r in perf["raw"])
    verdict = perf["verdict"]
    by_name = {m["name"]: m for m in verdict["metrics"]}
    for name in ("cpu_single.events_per_second", "cpu_all.events_per_second", "memory.dumb",
                 "storage.scratch.read.bandwidth", "storage.scratch.write.iops"):
        record = by_name[name]
        assert record["native_samples"] == record["sandbox_samples"] == 3, record
        assert record["native_median"] > 0 and record["sandbox_median"] > 0 and record["ratio"] > 0, record
        assert record["verdict"] in ("equivalent", "below", "inconclusive"), record
    # runc is the host's own kernel: one thread of sysbench cpu is not halved by it
    assert by_name["cpu_single.events_per_second"]["ratio"] > 0.5, by_name["cpu_single.events_per_second"]
    # no GPU here: each GPU metric is reported as such, never missing
    gpu = [m for m in verdict["metrics"] if m["name"].startswith("nvbandwidth.")]
    assert gpu and {m["verdict"] for m in gpu} == {"no GPU"}
    assert perf["host_facts"]["native_threads"] == os.cpu_count()
    assert perf["host_facts"]["sandbox_vcpus"] >= 1
    timings = perf["timings"]
    assert timings["image_import"] > 0 and timings["native"] > 0 and timings["sandbox"] > 0
    assert len(timings["native_runs"]) == len(timings["sandbox_runs"]) == 3
    assert timings["benchmark.cpu_single"] >= 6 * 1.0


def test_throttled_sandbox_fails_below_on_cpu(tmp_path: Path, containerd: str) -> None:
    # the image is already imported by the test above when run together; import again when run alone
    archive = subprocess.run([str(REPO / "scripts" / "build-workload-image"), "--print-path"], capture_output=True,
                             text=True, check=True).stdout.strip()
    result = run_role(tmp_path, "validate", perf_vars(containerd, validate_workload_archive=archive,
                                                      validate_ctr_args=["--cpus", "0.2"]),
                      report=["validate_performance"])
    # the host fails (so the play stops before the facts are written): the failure names metric, ratio, cause
    assert result.rc != 0, result.output[-3000:]
    assert "performance: below" in result.output
    # a 0.2 CPU quota pushes a cpu metric below; which one of the two is clear cut varies on a loaded machine
    assert re.search(r"cpu_(single|all)\.events_per_second below: ratio 0\.[0-9]+", result.output), result.output[-999:]
    assert "is below bare metal on" in result.output


def test_check_mode_runs_nothing(tmp_path: Path, containerd: str) -> None:
    result = run_role(tmp_path, "validate", perf_vars(containerd, validate_workload_archive="/nonexistent.tar"),
                      report=["validate_performance"], check=True)
    assert result.rc == 0, result.output[-3000:]
    assert result.facts["validate_performance"] is None
    assert "check mode runs no benchmark" in result.output
    listed = subprocess.run(["ctr", "--address", containerd, "-n", NAMESPACE + "-check", "containers", "ls", "-q"],
                            capture_output=True, text=True, check=True)
    assert listed.stdout.strip() == ""


def test_selected_devices_off_vfio_stop_the_part_before_any_run(tmp_path: Path) -> None:
    # The lab VM's tree before prepare: its GPU 0000:02:00.0 on bochs-drm. No containerd is needed: nothing runs.
    root = lab_vm(tmp_path / "root")
    result = run_role(tmp_path, "validate", dict(perf_vars("/nonexistent/containerd.sock"), validate_root=str(root),
                                                 validate_pass_selected_devices="true",
                                                 vfio_addresses=["0000:02:00.0"], validate_report_dir=""))
    assert result.rc != 0, result.output[-3000:]
    assert "the devices role vfio selects cannot be passed to the sandbox" in result.output, result.output[-3000:]
    # the GPU and the audio function of its group (role vfio takes the whole group)
    assert "0000:02:00.0, 0000:02:00.1 not on vfio-pci yet (run prepare)" in result.output, result.output[-3000:]
    assert "validate_pass_selected_devices=false" in result.output
    assert "@@cgpu-begin" not in result.output and "sysbench" not in result.output
