# Copyright: contributors to confidential_gpu.host
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Benchmark output -> metrics, for the native/sandbox comparison of issue 18 (docs/validate-benchmarks.md).

One parser per tool; each takes the tool's standard output as text and returns a list of metrics
``{"name", "value", "unit", "higher_is_better"}``. A name is ``<prefix>.<what>``; the prefix defaults to the tool
and the caller sets it when it runs one tool twice (``cpu_single`` / ``cpu_all`` for sysbench cpu with one and
with all threads), so that the native and the sandbox run of the same benchmark carry the same name even when
their thread counts differ. The caller keeps the raw output; a parser never reads files or runs anything.

An output that does not parse raises BenchmarkParseError naming the tool and what was missing, so that a
truncated run is a failure with a reason and never a metric silently left out.

Formats, from the tools' real output (tests/fixtures/benchmarks/<tool>-<version>/, each with its README):

- sysbench 1.0.20 (Debian 12): ``events per second:`` (cpu test), ``<n> MiB transferred (<r> MiB/sec)``
  (memory test), ``95th percentile:`` under ``Latency (ms):``.
- mbw 1.2.2 (Debian 12): ``AVG<TAB>Method: <M><TAB>Elapsed: ..<TAB>MiB: ..<TAB>Copy: <r> MiB/s`` per method.
- fio 3.33 (Debian 12), ``--output-format=json``: ``jobs[].{read,write,trim}.{bw (KiB/s), iops, clat_ns}``.
- nvbandwidth (NVIDIA/nvbandwidth v0.8, inline_common.h ``operator<<`` of the result matrix): ``Running <test>.``,
  a ``... bandwidth (GB/s)`` line, a column header, one row per source; a cell is a number or ``N/A``; the tool's
  own SUM adds the cells (N/A as 0) and its AVG counts only cells above 0.
- CUDA samples bandwidthTest: ``<Direction> Bandwidth, <n> Device(s)``, a ``Transfer Size (Bytes)
  Bandwidth(<unit>)`` header, ``<bytes> <value>`` rows, ``Result = PASS``.
- gpu-burn (wilicc/gpu-burn gpu_burn-drv.cpp, commit 18e6cce): progress records ``\r<pct>%  proc'd: <n> (<r>
  Gflop/s) - ...`` (one ``<n> (<r> Gflop/s)`` per GPU, the rate of its last cuBLAS GEMM batch), then
  ``Tested <n> GPUs:`` and ``\tGPU <i>: OK|FAULTY``.
"""

from __future__ import annotations

import json
import re
import typing as t

Metric = t.Dict[str, t.Any]

NO_GPU = "no GPU"

# The GPU metrics that the validation reports on every host: measured where a GPU is visible, entries with
# state "no GPU" where none is (gpu_metrics_without_gpu). nvbandwidth test names as the tool lists them (v0.8);
# GEMM throughput from gpu-burn (parse_gpu_burn).
GPU_METRIC_NAMES = (
    "nvbandwidth.host_to_device_memcpy_ce.sum",
    "nvbandwidth.host_to_device_memcpy_ce.min",
    "nvbandwidth.device_to_host_memcpy_ce.sum",
    "nvbandwidth.device_to_host_memcpy_ce.min",
    "nvbandwidth.device_local_copy.sum",
    "nvbandwidth.device_local_copy.min",
    "nvbandwidth.device_to_device_memcpy_read_ce.sum",
    "nvbandwidth.device_to_device_memcpy_read_ce.min",
    "gemm.sum",
    "gemm.min",
)


class BenchmarkParseError(ValueError):
    """The output of a benchmark tool does not hold what its parser needs."""

    def __init__(self, tool: str, missing: str) -> None:
        super().__init__("%s: could not parse the output: %s" % (tool, missing))
        self.tool = tool
        self.missing = missing


def metric(name: str, value: float, unit: str, higher_is_better: bool) -> Metric:
    return {"name": name, "value": value, "unit": unit, "higher_is_better": higher_is_better}


def number_after(tool: str, text: str, label: str, pattern: str = r"([0-9]+(?:\.[0-9]+)?)") -> float:
    """The number that follows ``label`` on a line of ``text``; BenchmarkParseError naming the label if none."""
    found = re.search(r"^\s*" + re.escape(label) + r"\s*" + pattern, text, re.MULTILINE)
    if not found:
        raise BenchmarkParseError(tool, "no '%s <number>' line" % label)
    return float(found.group(1))


# --------------------------------------------------------------------------------------------------------------
# CPU and memory: sysbench, mbw


def parse_sysbench(text: str, prefix: str = "sysbench") -> t.List[Metric]:
    """sysbench 1.0 ``cpu run`` or ``memory run``: throughput and the 95th percentile latency."""
    if "General statistics:" not in text:
        raise BenchmarkParseError("sysbench", "no 'General statistics:' section (the run did not finish)")
    if "CPU speed:" in text:
        throughput = metric(prefix + ".events_per_second",
                            number_after("sysbench", text, "events per second:"), "events/s", True)
    else:
        found = re.search(r"^\s*[0-9.]+ MiB transferred \(([0-9.]+) MiB/sec\)", text, re.MULTILINE)
        if not found:
            raise BenchmarkParseError(
                "sysbench", "neither 'events per second:' (cpu test) nor '<n> MiB transferred (<r> MiB/sec)' "
                            "(memory test)")
        throughput = metric(prefix + ".transfer_rate", float(found.group(1)), "MiB/s", True)
    latency = metric(prefix + ".latency_p95", number_after("sysbench", text, "95th percentile:"), "ms", False)
    return [throughput, latency]


MBW_AVERAGE = re.compile(r"^AVG\s+Method:\s+(\S+)\s+Elapsed:\s+\S+\s+MiB:\s+\S+\s+Copy:\s+([0-9.]+)\s+MiB/s\s*$",
                         re.MULTILINE)


def parse_mbw(text: str, prefix: str = "mbw") -> t.List[Metric]:
    """mbw: the average copy bandwidth of each method it ran (MEMCPY, DUMB, MCBLOCK)."""
    found = MBW_AVERAGE.findall(text)
    if not found:
        raise BenchmarkParseError("mbw", "no 'AVG Method: <method> ... Copy: <rate> MiB/s' line "
                                         "(mbw must run without -a, which drops the averages)")
    return [metric("%s.%s" % (prefix, method.lower()), float(rate), "MiB/s", True) for method, rate in found]


# --------------------------------------------------------------------------------------------------------------
# Storage: fio


def fio_document(text: str) -> t.Dict[str, t.Any]:
    """The JSON document of ``fio --output-format=json``; fio may print notes before it."""
    start = text.find("{")
    if start < 0:
        raise BenchmarkParseError("fio", "no JSON document (was it run with --output-format=json?)")
    try:
        document = json.loads(text[start:])
    except ValueError as error:
        raise BenchmarkParseError("fio", "the JSON document does not parse (%s)" % error) from None
    if not isinstance(document, dict) or not isinstance(document.get("jobs"), list) or not document["jobs"]:
        raise BenchmarkParseError("fio", "no 'jobs' list in the JSON document")
    return document


def parse_fio(text: str, prefix: str = "fio") -> t.List[Metric]:
    """fio JSON: per job and direction that did I/O, bandwidth (KiB/s), IOPS and mean completion latency (ns)."""
    metrics: t.List[Metric] = []
    for job in fio_document(text)["jobs"]:
        name = job.get("jobname")
        if not isinstance(name, str) or not name:
            raise BenchmarkParseError("fio", "a job without 'jobname'")
        if job.get("error"):
            raise BenchmarkParseError("fio", "job %s reported error %s" % (name, job["error"]))
        for direction in ("read", "write", "trim"):
            side = job.get(direction)
            if not isinstance(side, dict) or not side.get("total_ios"):
                continue
            base = "%s.%s.%s" % (prefix, name, direction)
            try:
                metrics += [metric(base + ".bandwidth", float(side["bw"]), "KiB/s", True),
                            metric(base + ".iops", float(side["iops"]), "IO/s", True),
                            metric(base + ".clat_mean", float(side["clat_ns"]["mean"]), "ns", False)]
            except (KeyError, TypeError, ValueError) as error:
                raise BenchmarkParseError("fio", "job %s %s has no number for %s" % (name, direction, error)) from None
    if not metrics:
        raise BenchmarkParseError("fio", "no job did any I/O (every 'total_ios' is 0)")
    return metrics


# --------------------------------------------------------------------------------------------------------------
# GPU: nvbandwidth, CUDA samples bandwidthTest

NVBANDWIDTH_RUNNING = re.compile(r"^Running (\S+)\.\s*$")
# "memcpy CE CPU(row) -> GPU(column) bandwidth (GB/s)"; bidirectional tests of later releases add a label
# before "bandwidth" (Read1, Read2, Total) and the tool's SUM key gets it as a suffix.
NVBANDWIDTH_TITLE = re.compile(r"^.*?(\w+)\(row\).*?(\w+)\(column\)\s*(\w+)?\s+(?:bandwidth|latency) \(([^)]+)\)\s*$")


def nvbandwidth_matrix(tool: str, test: str, lines: t.List[str], square: bool) -> t.List[float]:
    """The measured cells of one result matrix: a column header, then one row per source until a blank line;
    a GPU-by-GPU matrix (``square``) has as many rows as columns, so that a cut one is an error."""
    if not lines or not lines[0].split() or not all(cell.isdigit() for cell in lines[0].split()):
        raise BenchmarkParseError(tool, "%s: no column header after its title" % test)
    columns = len(lines[0].split())
    cells: t.List[float] = []
    rows = 0
    for line in lines[1:]:
        fields = line.split()
        if not fields:
            break
        if len(fields) != columns + 1:
            raise BenchmarkParseError(tool, "%s: row '%s' has %d values for %d columns"
                                      % (test, fields[0], len(fields) - 1, columns))
        rows += 1
        for cell in fields[1:]:
            if cell != "N/A":
                try:
                    cells.append(float(cell))
                except ValueError:
                    raise BenchmarkParseError(tool, "%s: cell '%s' is no number" % (test, cell)) from None
    if not rows or (square and rows != columns):
        raise BenchmarkParseError(tool, "%s: %d rows in a matrix of %d columns" % (test, rows, columns))
    return cells


def parse_nvbandwidth(text: str, prefix: str = "nvbandwidth") -> t.List[Metric]:
    """nvbandwidth: per test (and per matrix of a bidirectional test) the sum of the cells, as the tool's SUM
    line, and the smallest measured cell (the weakest link: one GPU on a narrower PCIe link shows there)."""
    lines = text.splitlines()
    metrics: t.List[Metric] = []
    test = None
    for index, line in enumerate(lines):
        running = NVBANDWIDTH_RUNNING.match(line.strip())
        if running:
            test = running.group(1)
            continue
        title = NVBANDWIDTH_TITLE.match(line.strip())
        if not title or test is None:
            continue
        label, unit = title.group(3), title.group(4)
        cells = nvbandwidth_matrix("nvbandwidth", test, lines[index + 1:], title.group(1) == title.group(2) == "GPU")
        measured = [cell for cell in cells if cell > 0]
        if not measured:
            raise BenchmarkParseError("nvbandwidth", "%s: no measured cell (all N/A or 0)" % test)
        key = "%s.%s%s" % (prefix, test, "_" + label.lower() if label else "")
        higher_is_better = unit != "ns"
        metrics += [metric(key + ".sum", round(sum(cells), 2), unit, higher_is_better),
                    metric(key + ".min", min(measured), unit, higher_is_better)]
    if not metrics:
        raise BenchmarkParseError("nvbandwidth", "no result matrix ('Running <test>.' and a '... bandwidth (GB/s)' "
                                                 "title with its table)")
    return metrics


BANDWIDTH_TEST_SECTION = re.compile(r"^\s*(Host to Device|Device to Host|Device to Device) Bandwidth, \d+ Device")
BANDWIDTH_TEST_HEADER = re.compile(r"^\s*Transfer Size \(Bytes\)\s+Bandwidth\(([^)]+)\)\s*$")
BANDWIDTH_TEST_ROW = re.compile(r"^\s*(\d+)\s+([0-9]+(?:\.[0-9]+)?)\s*$")


def parse_bandwidth_test(text: str, prefix: str = "bandwidthTest") -> t.List[Metric]:
    """CUDA samples bandwidthTest (quick mode): host-to-device, device-to-host and device-to-device bandwidth
    (the last one is the device memory bandwidth: a copy inside the GPU's memory)."""
    if not re.search(r"^Result = PASS\s*$", text, re.MULTILINE):
        raise BenchmarkParseError("bandwidthTest", "no 'Result = PASS' line (the test failed or did not finish)")
    metrics: t.List[Metric] = []
    direction = unit = None
    for line in text.splitlines():
        section = BANDWIDTH_TEST_SECTION.match(line)
        header = BANDWIDTH_TEST_HEADER.match(line)
        row = BANDWIDTH_TEST_ROW.match(line)
        if section:
            direction, unit = section.group(1).lower().replace(" ", "_"), None
        elif header:
            unit = header.group(1)
        elif row and direction and unit:
            metrics.append(metric("%s.%s" % (prefix, direction), float(row.group(2)), unit, True))
            direction = unit = None
    if not metrics:
        raise BenchmarkParseError("bandwidthTest", "no '<Direction> Bandwidth' section with a "
                                                   "'Transfer Size (Bytes)  Bandwidth(<unit>)' table")
    return metrics


GPU_BURN_RECORD = re.compile(r"^[0-9.]+%\s+proc'd:(.*?)\s+errors:")
GPU_BURN_RATE = re.compile(r"-?\d+ \(([0-9.]+) Gflop/s\)")
GPU_BURN_VERDICT = re.compile(r"^\s*GPU (\d+): (OK|FAULTY)\s*$", re.MULTILINE)


def parse_gpu_burn(text: str, prefix: str = "gemm") -> t.List[Metric]:
    """gpu-burn (cuBLAS GEMM on every GPU): from the last progress record, the sum of the GPUs' Gflop/s and the
    slowest GPU's; every GPU of ``Tested <n> GPUs:`` must be OK (a FAULTY GPU's throughput means nothing)."""
    tested = re.search(r"^Tested (\d+) GPUs:", text, re.MULTILINE)
    if not tested:
        raise BenchmarkParseError("gpu_burn", "no 'Tested <n> GPUs:' line (the run did not finish)")
    verdicts = dict(GPU_BURN_VERDICT.findall(text[tested.end():]))
    faulty = sorted(gpu for gpu, state in verdicts.items() if state != "OK")
    if len(verdicts) != int(tested.group(1)) or faulty:
        raise BenchmarkParseError("gpu_burn", "GPUs not OK: %s (of %s tested)"
                                  % (", ".join(faulty) or "verdict lines missing", tested.group(1)))
    records = [found.group(1) for found in map(GPU_BURN_RECORD.match, re.split(r"[\r\n]", text)) if found]
    if not records:
        raise BenchmarkParseError("gpu_burn", "no \"<pct>%  proc'd: <n> (<r> Gflop/s) ... errors:\" record")
    rates = [float(rate) for rate in GPU_BURN_RATE.findall(records[-1])]
    if len(rates) != len(verdicts) or min(rates) <= 0:
        raise BenchmarkParseError("gpu_burn", "the last record has %d rates for %d GPUs, the smallest %s Gflop/s"
                                  % (len(rates), len(verdicts), min(rates, default=0)))
    return [metric(prefix + ".sum", round(sum(rates), 2), "Gflop/s", True),
            metric(prefix + ".min", min(rates), "Gflop/s", True)]


# A metric name starts with the tool's name, except GEMM throughput (issue 18 names it; any GEMM tool gives gemm.*).
DEFAULT_PREFIXES = {"gpu_burn": "gemm"}
PARSERS: t.Dict[str, t.Callable[[str, str], t.List[Metric]]] = {
    "sysbench": parse_sysbench,
    "mbw": parse_mbw,
    "fio": parse_fio,
    "nvbandwidth": parse_nvbandwidth,
    "bandwidthTest": parse_bandwidth_test,
    "gpu_burn": parse_gpu_burn,
}


def parse(text: t.Any, tool: str, prefix: t.Optional[str] = None) -> t.List[Metric]:
    """``text`` (a tool's standard output, or a registered command result holding it as ``stdout``) parsed by
    the parser of ``tool``; ``prefix`` replaces the tool name at the start of each metric name."""
    if tool not in PARSERS:
        raise BenchmarkParseError(str(tool), "no parser for this tool (known: %s)" % ", ".join(sorted(PARSERS)))
    if isinstance(text, t.Mapping):
        text = text.get("stdout")
    if not isinstance(text, str) or not text.strip():
        raise BenchmarkParseError(tool, "the output is empty")
    return PARSERS[tool](text, prefix or DEFAULT_PREFIXES.get(tool, tool))


def gpu_metrics_without_gpu(names: t.Iterable[str] = GPU_METRIC_NAMES) -> t.List[Metric]:
    """Where no GPU is visible: each GPU metric as ``{"name", "state": "no GPU"}``, so that the report says so
    instead of leaving the metric out."""
    return [{"name": name, "state": NO_GPU} for name in names]


# --------------------------------------------------------------------------------------------------------------
# One repetition's output: the performance part (roles/validate/tasks/performance.yml) runs every benchmark of a
# repetition in one shell script, each between a begin line (benchmark, command) and an end line (exit status,
# milliseconds), so that a sandbox starts once per repetition and every benchmark keeps its own output and rc.

SECTION_BEGIN = re.compile(r"^@@cgpu-begin (\S+) (.*)$")
SECTION_END = re.compile(r"^@@cgpu-end (\S+) rc=(\d+) ms=(\d+)$")
# benchmark -> (tool, metric prefix); "threads" (nproc) is a fact, not a metric; "gpu" and "gemm" run only where
# a GPU is visible, and their sections are the run's fact "gpu"
BENCHMARK_TOOLS = {"cpu_single": ("sysbench", "cpu_single"), "cpu_all": ("sysbench", "cpu_all"),
                   "memory": ("mbw", "memory"), "storage": ("fio", "storage"), "gpu": ("nvbandwidth", "nvbandwidth"),
                   "gemm": ("gpu_burn", "gemm")}
GPU_BENCHMARKS = ("gpu", "gemm")


def split_sections(text: str) -> t.List[t.Dict[str, t.Any]]:
    """The delimited sections of one repetition: ``{benchmark, command, rc, output, seconds}`` each, in order.
    A section without its end line (the script or the sandbox died) is an error naming it."""
    sections: t.List[t.Dict[str, t.Any]] = []
    current: t.Optional[t.Dict[str, t.Any]] = None
    lines: t.List[str] = []
    for line in text.splitlines():
        begin, end = SECTION_BEGIN.match(line), SECTION_END.match(line)
        if begin and current is None:
            current, lines = {"benchmark": begin.group(1), "command": begin.group(2)}, []
        elif end and current is not None and end.group(1) == current["benchmark"]:
            current.update(rc=int(end.group(2)), output="\n".join(lines), seconds=int(end.group(3)) / 1000.0)
            sections.append(current)
            current = None
        elif current is not None:
            lines.append(line)
    if current is not None:
        raise BenchmarkParseError(current["benchmark"], "the run stopped before the benchmark ended "
                                                        "(no end line; last output: %r)" % "\n".join(lines[-5:]))
    return sections


def repetition(text: str) -> t.Dict[str, t.Any]:
    """One repetition's output -> its sections, the metrics of the benchmarks that ran, the thread count the
    run saw (``nproc``) and whether it saw a GPU. A benchmark that exited non-zero is an error naming it."""
    sections = split_sections(text)
    failed = [s for s in sections if s["rc"] != 0]
    if failed:
        raise BenchmarkParseError(failed[0]["benchmark"], "`%s` exited %d: %s" % (
            failed[0]["command"], failed[0]["rc"], failed[0]["output"].strip()[-300:]))
    metrics: t.List[Metric] = []
    facts: t.Dict[str, t.Any] = {"threads": None, "gpu": False}
    for section in sections:
        if section["benchmark"] == "threads":
            facts["threads"] = int(section["output"].strip() or 0) or None
        elif section["benchmark"] in BENCHMARK_TOOLS:
            facts["gpu"] = facts["gpu"] or section["benchmark"] in GPU_BENCHMARKS
            tool, prefix = BENCHMARK_TOOLS[section["benchmark"]]
            metrics += parse(section["output"], tool, prefix)
    return dict(facts, sections=sections, metrics=metrics)
