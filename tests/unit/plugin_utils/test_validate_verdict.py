"""Sandbox/native verdict (plugins/plugin_utils/validate_verdict.py): ratio of medians, seeded bootstrap interval,
equivalent / below / inconclusive, thresholds (defaults, per-metric overrides, AWX strings) and causes.

The last test runs the three filters in one real ansible-playbook process on the real sysbench fixtures.
"""

from __future__ import annotations

import json
import sys

import pytest

from conftest import REPO

sys.path.insert(0, str(REPO / "tests" / "lib"))
from role_play import run_tasks_batched  # noqa: E402

from ansible_collections.confidential_gpu.host.plugins.plugin_utils.validate_verdict import (  # noqa: E402
    VerdictInputError,
    bootstrap_interval,
    collect_samples,
    verdict,
)

NATIVE = [100.0, 101.0, 99.0, 100.0, 102.0]


def samples(native: list, sandbox: list, higher_is_better: bool = True, unit: str = "MiB/s") -> dict:
    return {"native": native, "sandbox": sandbox, "higher_is_better": higher_is_better, "unit": unit}


def one(report: dict) -> dict:
    (record,) = report["metrics"]
    return record


def test_a_sandbox_within_noise_is_equivalent() -> None:
    report = verdict({"mbw.dumb": samples(NATIVE, [98.0, 99.0, 97.0, 99.0, 100.0])})
    record = one(report)

    assert (record["ratio"], record["native_median"], record["sandbox_median"]) == (0.99, 100.0, 99.0)
    assert 0.95 <= record["interval"][0] <= record["ratio"] <= record["interval"][1]
    assert (record["verdict"], record["cause"], record["threshold"]) == ("equivalent", None, 0.95)
    assert (report["verdict"], report["equivalent"], report["below"], report["message"]) == (
        "equivalent", True, [], "every metric equivalent")


def test_a_sandbox_clearly_slower_is_below_and_the_message_names_metric_ratio_and_cause() -> None:
    report = verdict({"mbw.dumb": samples(NATIVE, [80.0, 81.0, 79.0, 80.0, 82.0])},
                     host_facts={"hugepages_backing": False})
    record = one(report)

    assert record["ratio"] == 0.8 and record["interval"][1] < 0.95
    assert (record["verdict"], record["cause"]) == ("below", "sandbox memory not backed by hugepages")
    assert (report["verdict"], report["equivalent"], report["below"]) == ("below", False, ["mbw.dumb"])
    assert report["message"].startswith("mbw.dumb below: ratio 0.8000 (interval ")
    assert report["message"].endswith("against threshold 0.95; likeliest cause: sandbox memory not backed by hugepages")


def test_an_interval_straddling_the_threshold_is_inconclusive() -> None:
    report = verdict({"mbw.dumb": samples(NATIVE, [90.0, 93.0, 96.0, 99.0, 101.0])})
    record = one(report)

    low, high = record["interval"]
    assert low < 0.95 <= high
    assert (record["verdict"], report["verdict"], report["inconclusive"]) == ("inconclusive", "inconclusive",
                                                                              ["mbw.dumb"])


def test_lower_is_better_is_oriented_so_that_above_one_is_the_sandbox_doing_better() -> None:
    slower = one(verdict({"lat": samples([10.0, 10.0, 10.0], [20.0, 20.0, 20.0], higher_is_better=False, unit="ms")}))
    faster = one(verdict({"lat": samples([10.0, 10.0, 10.0], [5.0, 5.0, 5.0], higher_is_better=False, unit="ms")}))

    assert (slower["ratio"], slower["interval"], slower["verdict"]) == (0.5, [0.5, 0.5], "below")
    assert (faster["ratio"], faster["interval"], faster["verdict"]) == (2.0, [2.0, 2.0], "equivalent")


@pytest.mark.parametrize("override", [0.98, "0.98", " 0.98 "])
def test_a_per_metric_override_applies_to_that_metric_only_and_awx_strings_are_numbers(override: object) -> None:
    sandbox = [97.0, 97.0, 97.0, 97.0, 97.0]
    report = verdict({"gemm": samples([100.0] * 5, sandbox), "mbw.dumb": samples([100.0] * 5, sandbox)},
                     thresholds={"gemm": override})
    by_name = {record["name"]: record for record in report["metrics"]}

    assert (by_name["gemm"]["threshold"], by_name["gemm"]["verdict"]) == (0.98, "below")
    assert (by_name["mbw.dumb"]["threshold"], by_name["mbw.dumb"]["verdict"]) == (0.95, "equivalent")
    assert report["below"] == ["gemm"]


def test_the_default_threshold_may_come_as_a_string_too() -> None:
    record = one(verdict({"mbw.dumb": samples([100.0] * 3, [97.0] * 3)}, default_threshold="0.98"))
    assert (record["threshold"], record["verdict"]) == (0.98, "below")


@pytest.mark.parametrize("bad,message", [
    ("fast", "threshold for mbw.dumb is 'fast': give a number in (0, 1], e.g. 0.95"),
    (True, "threshold for mbw.dumb is True: give a number in (0, 1]"),
    (None, "threshold for mbw.dumb is None: give a number"),
    (1.5, "threshold for mbw.dumb is 1.5: it must be in (0, 1]"),
    ("0", "threshold for mbw.dumb is '0': it must be in (0, 1]"),
    ("nan", "threshold for mbw.dumb is 'nan': it must be in (0, 1]"),
])
def test_a_bad_threshold_is_a_clear_error(bad: object, message: str) -> None:
    with pytest.raises(VerdictInputError, match=None) as raised:
        verdict({"mbw.dumb": samples(NATIVE, NATIVE)}, thresholds={"mbw.dumb": bad})
    assert str(raised.value).startswith(message)


def test_a_threshold_for_a_metric_that_was_not_measured_is_an_error_not_ignored() -> None:
    with pytest.raises(VerdictInputError) as raised:
        verdict({"mbw.dumb": samples(NATIVE, NATIVE)}, thresholds={"gemm_tflops": 0.98})
    assert str(raised.value) == "threshold for metrics that were not measured: gemm_tflops (measured: mbw.dumb)"


def test_no_gpu_entries_keep_their_state_and_do_not_fail_the_host() -> None:
    native = [[{"name": "mbw.dumb", "value": v, "unit": "MiB/s", "higher_is_better": True},
               {"name": "nvbandwidth.host_to_device_memcpy_ce.sum", "state": "no GPU"}] for v in NATIVE]
    report = verdict(collect_samples(native, native))
    by_name = {record["name"]: record for record in report["metrics"]}

    assert by_name["nvbandwidth.host_to_device_memcpy_ce.sum"]["verdict"] == "no GPU"
    assert by_name["nvbandwidth.host_to_device_memcpy_ce.sum"]["ratio"] is None
    assert (by_name["mbw.dumb"]["ratio"], report["verdict"]) == (1.0, "equivalent")


def test_too_few_repetitions_is_inconclusive_with_the_reason() -> None:
    record = one(verdict({"mbw.dumb": samples([100.0, 100.0], [100.0, 100.0])}))
    assert (record["verdict"], record["cause"]) == (
        "inconclusive", "too few repetitions (native 2, sandbox 2; at least 3 each)")


def test_a_sample_that_is_no_number_names_the_metric_and_side() -> None:
    with pytest.raises(VerdictInputError) as raised:
        verdict({"mbw.dumb": samples(NATIVE, [100.0, "fast", 99.0])})
    assert str(raised.value) == "mbw.dumb: sandbox sample 'fast' is not a number"


@pytest.mark.parametrize("bad", ["inf", "nan", float("inf")])
def test_a_sample_that_is_not_finite_is_an_error(bad: object) -> None:
    with pytest.raises(VerdictInputError) as raised:
        verdict({"mbw.dumb": samples(NATIVE, [100.0, bad, 99.0])})
    assert str(raised.value) == "mbw.dumb: sandbox sample %r is not a finite number" % (bad,)


def test_a_sandbox_that_took_no_time_has_an_infinite_ratio_written_as_standard_json() -> None:
    """A latency whose sandbox median is 0 (under the tool's resolution): the ratio is infinite, reported as null
    (RFC 8259 section 6: JSON has no Infinity); both sides at 0 is a ratio of 1; one resample of 2 ms among the
    zeros leaves the interval open upwards, and the message shows inf."""
    report = verdict({
        "lat.zero": samples([2.0, 2.0, 2.0], [0.0, 0.0, 0.0], higher_is_better=False, unit="ms"),
        "lat.both_zero": samples([0.0, 0.0, 0.0], [0.0, 0.0, 0.0], higher_is_better=False, unit="ms"),
        "lat.mixed": samples([1.0, 1.0, 1.0], [0.0, 0.0, 2.0], higher_is_better=False, unit="ms")})
    records = {record["name"]: record for record in report["metrics"]}
    assert [records[name][key] for name in ("lat.zero", "lat.both_zero", "lat.mixed")
            for key in ("ratio", "interval", "verdict")] == [
        None, [None, None], "equivalent", 1.0, [1.0, 1.0], "equivalent", None, [0.5, None], "inconclusive"]
    assert report["message"] == ("lat.mixed inconclusive: ratio inf (interval 0.5000-inf) against threshold 0.95; "
                                 "likeliest cause: no host fact explains it")
    assert json.loads(json.dumps(report, allow_nan=False)) == report


def test_the_interval_is_reproducible_and_narrows_with_more_repetitions() -> None:
    few_native, few_sandbox = [100.0, 90.0, 110.0], [95.0, 85.0, 105.0]
    first = bootstrap_interval(few_native, few_sandbox, True)

    assert bootstrap_interval(few_native, few_sandbox, True) == first
    many = bootstrap_interval(few_native * 6, few_sandbox * 6, True)
    assert many[1] - many[0] < first[1] - first[0]


@pytest.mark.parametrize("name,facts,cause", [
    ("cpu_all.events_per_second", {"sandbox_vcpus": 4, "native_threads": 16},
     "fewer vCPUs in the sandbox (4) than native threads (16)"),
    ("nvbandwidth.host_to_device_memcpy_ce.sum", {"native_pcie_width": 16, "sandbox_pcie_width": 8,
                                                  "gpu_cc_mode": "off"},
     "PCIe link narrower in the guest (x8, native x16)"),
    ("nvbandwidth.host_to_device_memcpy_ce.sum", {"native_pcie_width": 16, "sandbox_pcie_width": 16,
                                                  "gpu_cc_mode": "off"},
     "GPU not in CC mode (mode: off)"),
    ("fio.rand-rw.read.iops", {"sandbox_vcpus": 4, "native_threads": 16},
     "storage goes through the sandbox's virtual disk or shared file system"),
])
def test_the_likeliest_cause_comes_from_the_host_facts(name: str, facts: dict, cause: str) -> None:
    record = one(verdict({name: samples([100.0] * 3, [50.0] * 3)}, host_facts=facts))
    assert (record["verdict"], record["cause"]) == ("below", cause)


def test_the_filters_in_a_real_playbook_run(tmp_path) -> None:
    single = str(REPO / "tests/fixtures/benchmarks/sysbench-1.0.20/cpu-threads-1.txt")
    double = str(REPO / "tests/fixtures/benchmarks/sysbench-1.0.20/cpu-threads-2.txt")
    parse = "lookup('file', '%s') | confidential_gpu.host.validate_parse('sysbench', 'cpu')"
    # Native: the one-thread run three times; sandbox: the two-thread run three times, under the same name.
    runs = ("([%s] * 3 + [none | confidential_gpu.host.validate_no_gpu])" % (parse % single),
            "([%s] * 3 + [none | confidential_gpu.host.validate_no_gpu])" % (parse % double))
    result = run_tasks_batched(tmp_path, [
        {"ansible.builtin.debug": {"msg": "{{ %s }}" % (parse % single)}},
        {"ansible.builtin.debug": {"msg": "{{ %s | confidential_gpu.host.validate_verdict(%s, "
                                          "{'cpu.events_per_second': '0.98'}, "
                                          "{'sandbox_vcpus': 1, 'native_threads': 2}) }}" % runs}},
        {"ansible.builtin.debug": {"msg": "{{ 'Segmentation fault' | confidential_gpu.host.validate_parse('fio') }}"}},
        {"ansible.builtin.debug": {"msg": "{{ %s | confidential_gpu.host.validate_verdict(%s, {'cpu.x': 'fast'}) }}"
                                          % runs}},
    ])
    parsed, report, garbage, bad_threshold = result.results

    assert parsed["msg"] == [
        {"name": "cpu.events_per_second", "value": 2271.42, "unit": "events/s", "higher_is_better": True},
        {"name": "cpu.latency_p95", "value": 0.46, "unit": "ms", "higher_is_better": False}]
    by_name = {record["name"]: record for record in report["msg"]["metrics"]}
    # 2495.12 / 2271.42 events/s: better in the "sandbox"; 0.46 / 4.41 ms: p95 latency ten times worse.
    assert (by_name["cpu.events_per_second"]["ratio"], by_name["cpu.events_per_second"]["threshold"],
            by_name["cpu.events_per_second"]["verdict"]) == (1.0985, 0.98, "equivalent")
    assert (by_name["cpu.latency_p95"]["ratio"], by_name["cpu.latency_p95"]["verdict"],
            by_name["cpu.latency_p95"]["cause"]) == (0.1043, "below",
                                                     "fewer vCPUs in the sandbox (1) than native threads (2)")
    assert by_name["nvbandwidth.device_local_copy.sum"]["verdict"] == "no GPU"
    assert (report["msg"]["verdict"], report["msg"]["below"]) == ("below", ["cpu.latency_p95"])
    assert garbage["failed"] and "fio: could not parse the output: no JSON document" in garbage["msg"]
    assert bad_threshold["failed"] and "threshold for cpu.x is 'fast'" in bad_threshold["msg"]
