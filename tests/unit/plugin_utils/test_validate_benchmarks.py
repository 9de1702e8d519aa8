"""Benchmark parsers (plugins/plugin_utils/validate_benchmarks.py) on real output of each tool.

Fixtures: tests/fixtures/benchmarks/<tool>-<version>/ (each README says the version, the command line and the
machine, or the upstream repository, path and commit). Every expected number is copied from the raw text.
"""

from __future__ import annotations


import pytest

from conftest import REPO

from ansible_collections.confidential_gpu.host.plugins.plugin_utils.validate_benchmarks import (
    GPU_METRIC_NAMES,
    BenchmarkParseError,
    gpu_metrics_without_gpu,
    parse,
    repetition,
)

BENCH = REPO / "tests" / "fixtures" / "benchmarks"


def read(path: str) -> str:
    return (BENCH / path).read_text()


def values(metrics: list) -> dict:
    return {m["name"]: (m["value"], m["unit"], m["higher_is_better"]) for m in metrics}


def test_sysbench_cpu_single_and_all_threads_under_the_callers_prefix() -> None:
    single = parse(read("sysbench-1.0.20/cpu-threads-1.txt"), "sysbench", "cpu_single")
    every = parse(read("sysbench-1.0.20/cpu-threads-2.txt"), "sysbench", "cpu_all")

    assert values(single) == {"cpu_single.events_per_second": (2271.42, "events/s", True),
                              "cpu_single.latency_p95": (0.46, "ms", False)}
    assert values(every) == {"cpu_all.events_per_second": (2495.12, "events/s", True),
                             "cpu_all.latency_p95": (4.41, "ms", False)}


def test_sysbench_memory_transfer_rate() -> None:
    assert values(parse(read("sysbench-1.0.20/memory-write.txt"), "sysbench")) == {
        "sysbench.transfer_rate": (14872.37, "MiB/s", True), "sysbench.latency_p95": (0.13, "ms", False)}


def test_mbw_average_of_each_method() -> None:
    assert values(parse(read("mbw-1.2.2/mbw-n3-64.txt"), "mbw", "memory")) == {
        "memory.memcpy": (4917.529, "MiB/s", True), "memory.dumb": (6122.059, "MiB/s", True),
        "memory.mcblock": (8391.608, "MiB/s", True)}


def test_fio_json_every_job_and_direction_that_did_io() -> None:
    found = values(parse(read("fio-3.33/seq-read-rand-rw.json"), "fio"))

    # seq-read wrote nothing ("total_ios" : 0 under "write"): no write metrics for it.
    assert found == {
        "fio.seq-read.read.bandwidth": (1408319.0, "KiB/s", True),
        "fio.seq-read.read.iops": (1375.312344, "IO/s", True),
        "fio.seq-read.read.clat_mean": (725772.25, "ns", False),
        "fio.rand-rw.read.bandwidth": (79026.0, "KiB/s", True),
        "fio.rand-rw.read.iops": (19756.621689, "IO/s", True),
        "fio.rand-rw.read.clat_mean": (25553.771204, "ns", False),
        "fio.rand-rw.write.bandwidth": (79540.0, "KiB/s", True),
        "fio.rand-rw.write.iops": (19885.057471, "IO/s", True),
        "fio.rand-rw.write.clat_mean": (24172.236517, "ns", False),
    }


def test_fio_bw_is_kibibytes_per_second_as_the_tool_says_in_bw_bytes() -> None:
    # The unit claim checked against the same document: "bw_bytes" / 1024 is "bw" (fio truncates).
    import json
    job = json.loads(read("fio-3.33/seq-read-rand-rw.json"))["jobs"][1]["read"]
    assert job["bw_bytes"] // 1024 == job["bw"] == 79026


def test_nvbandwidth_readme_matrices_sum_and_weakest_link() -> None:
    d2d = values(parse(read("nvbandwidth-v0.8/device_to_device_memcpy_write_ce.txt"), "nvbandwidth"))
    h2d = values(parse(read("nvbandwidth-v0.8/host_to_device_memcpy_ce.txt"), "nvbandwidth"))
    bidir = values(parse(read("nvbandwidth-v0.8/host_to_device_bidirectional_memcpy_ce.txt"), "nvbandwidth"))

    # The 0.00 diagonal (a GPU with itself) is not a measurement: the weakest link is 6 -> 0, 274.89.
    assert d2d["nvbandwidth.device_to_device_memcpy_write_ce.min"] == (274.89, "GB/s", True)
    assert d2d["nvbandwidth.device_to_device_memcpy_write_ce.sum"] == (15474.88, "GB/s", True)
    assert h2d == {"nvbandwidth.host_to_device_memcpy_ce.sum": (208.05, "GB/s", True),
                   "nvbandwidth.host_to_device_memcpy_ce.min": (25.94, "GB/s", True)}
    assert bidir == {"nvbandwidth.host_to_device_bidirectional_memcpy_ce.sum": (150.46, "GB/s", True),
                     "nvbandwidth.host_to_device_bidirectional_memcpy_ce.min": (18.37, "GB/s", True)}


@pytest.mark.parametrize("path,expected", [
    ("cuda-samples-bandwidthTest/t4.txt", (9.7, 11.1, 239.6)),
    ("cuda-samples-bandwidthTest/a100.txt", (12.3, 13.2, 1157.5)),
    ("cuda-samples-bandwidthTest/v100.txt", (9.6, 11.4, 739.8)),
])
def test_bandwidth_test_three_directions(path: str, expected: tuple) -> None:
    found = values(parse(read(path), "bandwidthTest"))
    assert found == {"bandwidthTest.host_to_device": (expected[0], "GB/s", True),
                     "bandwidthTest.device_to_host": (expected[1], "GB/s", True),
                     "bandwidthTest.device_to_device": (expected[2], "GB/s", True)}


def test_a_registered_command_result_is_read_from_its_stdout() -> None:
    text = read("mbw-1.2.2/mbw-n3-64.txt")
    assert parse({"rc": 0, "stdout": text, "stderr": ""}, "mbw") == parse(text, "mbw")


def cut(path: str, marker: str) -> str:
    """The real output cut just before ``marker``: what a run killed there leaves."""
    text = read(path)
    assert marker in text
    return text[:text.index(marker)]


@pytest.mark.parametrize("tool,output,message", [
    ("sysbench", cut("sysbench-1.0.20/cpu-threads-1.txt", "CPU speed:"), "no 'General statistics:' section"),
    ("sysbench", cut("sysbench-1.0.20/cpu-threads-1.txt", "         95th percentile"),
     "no '95th percentile: <number>' line"),
    ("sysbench", read("mbw-1.2.2/mbw-n3-64.txt") + "\nGeneral statistics:\n",
     "neither 'events per second:' (cpu test) nor"),
    ("mbw", cut("mbw-1.2.2/mbw-n3-64.txt", "AVG"), "no 'AVG Method: <method>"),
    ("fio", cut("fio-3.33/seq-read-rand-rw.json", '"disk_util"'), "the JSON document does not parse"),
    ("fio", read("sysbench-1.0.20/cpu-threads-1.txt"), "no JSON document"),
    ("fio", '{"fio version": "fio-3.33", "jobs": []}', "no 'jobs' list"),
    ("nvbandwidth", cut("nvbandwidth-v0.8/device_to_device_memcpy_write_ce.txt", "7    276.12"),
     "device_to_device_memcpy_write_ce: 7 rows in a matrix of 8 columns"),
    ("nvbandwidth", read("nvbandwidth-v0.8/host_to_device_memcpy_ce.txt").replace("25.94", ""),
     "host_to_device_memcpy_ce: row '0' has 7 values for 8 columns"),
    ("nvbandwidth", "Running host_to_device_memcpy_ce.\n", "no result matrix"),
    ("bandwidthTest", cut("cuda-samples-bandwidthTest/t4.txt", "Result = PASS"), "no 'Result = PASS' line"),
    ("bandwidthTest", "Result = PASS\n", "no '<Direction> Bandwidth' section"),
    ("mbw", "", "the output is empty"),
    ("stream", "Copy: 1.0", "no parser for this tool"),
])
def test_truncated_or_garbage_output_is_an_error_naming_the_tool_and_what_is_missing(
        tool: str, output: str, message: str) -> None:
    with pytest.raises(BenchmarkParseError) as raised:
        parse(output, tool)
    assert str(raised.value).startswith(tool + ": could not parse the output: ")
    assert message in str(raised.value)


def test_no_gpu_gives_every_gpu_metric_a_state_instead_of_leaving_it_out() -> None:
    entries = gpu_metrics_without_gpu()
    assert [e["name"] for e in entries] == list(GPU_METRIC_NAMES)
    assert {e["state"] for e in entries} == {"no GPU"}
    assert "nvbandwidth.host_to_device_memcpy_ce.sum" in GPU_METRIC_NAMES
    assert "value" not in entries[0]


GPU_BURN = "gpu-burn-18e6cce/a100-sxm4-80gb-x8-doubles-tc.txt"


def gpu_burn_output() -> str:
    """The bytes as printed: records of one line separated by carriage returns (read_text would make them lines)."""
    return (BENCH / GPU_BURN).read_bytes().decode()


def test_gpu_burn_gemm_throughput_is_the_last_records_sum_and_slowest_gpu() -> None:
    text = gpu_burn_output()
    # The last progress record of the fixture, as printed (README): 8 GPUs' Gflop/s.
    last = [16942, 17093, 16957, 16926, 16890, 16950, 17010, 16926]
    assert "\r100.0%  proc'd: 6783 (16942 Gflop/s) - 6783 (17093 Gflop/s)" in text

    assert values(parse(text, "gpu_burn")) == {"gemm.sum": (float(sum(last)), "Gflop/s", True),
                                               "gemm.min": (16890.0, "Gflop/s", True)}
    assert [m["name"] for m in parse(text, "gpu_burn", "gemm_fp64")] == ["gemm_fp64.sum", "gemm_fp64.min"]


def test_a_repetition_that_ran_gpu_burn_saw_a_gpu_and_measured_gemm() -> None:
    # As the performance part's script prints it (roles/validate/vars/main.yml): each benchmark between its lines.
    text = "".join("@@cgpu-begin %s %s\n%s\n@@cgpu-end %s rc=0 ms=%d\n" % (name, command, body, name, ms) for
                   name, command, body, ms in (("threads", "nproc", "8", 1),
                                               ("cpu_single", "sysbench cpu --threads=1 run",
                                                read("sysbench-1.0.20/cpu-threads-1.txt"), 2000),
                                               ("gemm", "gpu_burn 10", gpu_burn_output(), 10500)))
    run = repetition(text)
    assert (run["threads"], run["gpu"]) == (8, True)
    assert [m["name"] for m in run["metrics"]] == ["cpu_single.events_per_second", "cpu_single.latency_p95",
                                                   "gemm.sum", "gemm.min"]
    timed = [(section["benchmark"], section["seconds"]) for section in run["sections"]]
    assert timed == [("threads", 0.001), ("cpu_single", 2.0), ("gemm", 10.5)]
    # and GEMM is a GPU metric: said "no GPU" where none is visible, never missing
    assert {"gemm.sum", "gemm.min"} <= {e["name"] for e in gpu_metrics_without_gpu()}


@pytest.mark.parametrize("cut, reason", [
    (lambda text: text.split("Killing processes")[0], "no 'Tested <n> GPUs:' line"),
    (lambda text: text.replace("\tGPU 3: OK", "\tGPU 3: FAULTY"), "GPUs not OK: 3 (of 8 tested)"),
    (lambda text: text.replace("\tGPU 7: OK\n", ""), "GPUs not OK: verdict lines missing (of 8 tested)"),
    (lambda text: "\n".join(line for line in text.split("\n") if "proc'd" not in line), "no \"<pct>%  proc'd"),
    (lambda text: text.replace(" - 4522 (16926 Gflop/s)   errors", "   errors"), "the last record has 7 rates for 8"),
])
def test_gpu_burn_refuses_a_cut_or_faulty_run(cut: object, reason: str) -> None:
    with pytest.raises(BenchmarkParseError, match="^gpu_burn: could not parse the output: ") as error:
        parse(cut(gpu_burn_output()), "gpu_burn")  # type: ignore[operator]
    assert reason in str(error.value)
