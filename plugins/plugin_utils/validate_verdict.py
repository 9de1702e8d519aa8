# Copyright: contributors to confidential_gpu.host
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Sandbox against native, per metric: ratio of medians, a bootstrap interval, a verdict and its likeliest cause.

The rule (issue 18, docs/validate-benchmarks.md):

- ratio = median(sandbox) / median(native) for a metric where higher is better, median(native) /
  median(sandbox) where lower is better (latency), so that a ratio above 1 is always the sandbox doing better;
- interval: the 2.5th and 97.5th percentiles of that ratio over BOOTSTRAP_RESAMPLES resamples (each side
  resampled with replacement, independently) drawn from a random generator seeded with BOOTSTRAP_SEED, so that
  the same samples always give the same interval and verdict;
- verdict: "equivalent" when the interval's low end is at or above the metric's threshold, "below" when its
  high end is under it, "inconclusive" when it straddles it (or too few repetitions); a metric whose entries
  carry a state ("no GPU") gets that state as its verdict and counts as neither.
"""

from __future__ import annotations

import math
import random
import statistics
import typing as t

from ansible_collections.confidential_gpu.host.plugins.plugin_utils.validate_benchmarks import Metric

DEFAULT_THRESHOLD = 0.95
BOOTSTRAP_RESAMPLES = 2000
BOOTSTRAP_SEED = 18
MIN_REPETITIONS = 3
EQUIVALENT, BELOW, INCONCLUSIVE = "equivalent", "below", "inconclusive"


class VerdictInputError(ValueError):
    """Samples or thresholds that the verdict cannot use; the message names the metric or threshold."""


def threshold_value(name: str, value: t.Any) -> float:
    """A threshold as a float in (0, 1]; strings such as "0.98" (AWX surveys send text) are read as numbers."""
    if isinstance(value, bool):
        raise VerdictInputError("threshold for %s is %r: give a number in (0, 1], e.g. 0.95" % (name, value))
    try:
        number = float(value.strip() if isinstance(value, str) else value)
    except (TypeError, ValueError):
        raise VerdictInputError("threshold for %s is %r: give a number in (0, 1], e.g. 0.95" % (name, value)) from None
    if not 0 < number <= 1 or math.isnan(number):
        raise VerdictInputError("threshold for %s is %r: it must be in (0, 1] (a fraction of the native result)"
                                % (name, value))
    return number


def collect_samples(native_runs: t.Sequence[t.Sequence[Metric]],
                    sandbox_runs: t.Sequence[t.Sequence[Metric]]) -> t.Dict[str, t.Dict[str, t.Any]]:
    """Runs (each a list of parsed metrics, as the repetitions came) -> per metric name its ``native`` and
    ``sandbox`` sample lists, unit and orientation; a metric with a ``state`` on either side keeps the state."""
    collected: t.Dict[str, t.Dict[str, t.Any]] = {}
    for side, runs in (("native", native_runs), ("sandbox", sandbox_runs)):
        for run in runs:
            for entry in run:
                name = entry.get("name")
                if not isinstance(name, str):
                    raise VerdictInputError("a %s metric without a name: %r" % (side, entry))
                slot = collected.setdefault(name, {"native": [], "sandbox": []})
                if "state" in entry:
                    slot["state"] = entry["state"]
                    continue
                slot[side].append(entry.get("value"))
                slot.setdefault("unit", entry.get("unit"))
                slot.setdefault("higher_is_better", entry.get("higher_is_better", True))
    return collected


def number_samples(name: str, side: str, samples: t.Any) -> t.List[float]:
    if not isinstance(samples, (list, tuple)):
        raise VerdictInputError("%s: the %s samples are not a list: %r" % (name, side, samples))
    values = []
    for sample in samples:
        if isinstance(sample, bool) or not isinstance(sample, (int, float, str)):
            raise VerdictInputError("%s: %s sample %r is not a number" % (name, side, sample))
        try:
            value = float(sample)
        except ValueError:
            raise VerdictInputError("%s: %s sample %r is not a number" % (name, side, sample)) from None
        if not math.isfinite(value):
            raise VerdictInputError("%s: %s sample %r is not a finite number" % (name, side, sample))
        values.append(value)
    return values


def ratio_of_medians(native: t.Sequence[float], sandbox: t.Sequence[float], higher_is_better: bool) -> float:
    """Sandbox over native, oriented so that above 1 is the sandbox doing better; 0 when the sandbox measured
    nothing of a higher-is-better metric, infinite when it took no time on a lower-is-better one (or native
    measured nothing of a higher-is-better one), 1 when both sides measured 0."""
    top, bottom = ((statistics.median(sandbox), statistics.median(native)) if higher_is_better
                   else (statistics.median(native), statistics.median(sandbox)))
    if not bottom:
        return 1.0 if not top else math.inf
    return top / bottom


def reported_ratio(value: float) -> t.Optional[float]:
    """A ratio as the report holds it: 4 decimals, null where it is infinite, since JSON has no Infinity (RFC
    8259, section 6: "Numeric values that cannot be represented ... (such as Infinity and NaN) are not
    permitted"), and Python's json writes the non-standard token unless told not to."""
    return round(value, 4) if math.isfinite(value) else None


def shown_ratio(value: t.Optional[float]) -> str:
    """A reported ratio as text: null (infinite) reads as "inf"."""
    return "inf" if value is None else "%.4f" % value


def bootstrap_interval(native: t.Sequence[float], sandbox: t.Sequence[float],
                       higher_is_better: bool) -> t.Tuple[float, float]:
    """The 2.5th and 97.5th percentiles of the ratio of medians over seeded resamples of both sides."""
    generator = random.Random(BOOTSTRAP_SEED)
    ratios = sorted(ratio_of_medians(generator.choices(native, k=len(native)),
                                     generator.choices(sandbox, k=len(sandbox)), higher_is_better)
                    for _resample in range(BOOTSTRAP_RESAMPLES))
    return ratios[int(0.025 * (len(ratios) - 1))], ratios[int(math.ceil(0.975 * (len(ratios) - 1)))]


def likeliest_cause(name: str, facts: t.Mapping[str, t.Any]) -> str:
    """The host fact that best explains a sandbox slower than native on metric ``name``."""
    category = metric_category(name)
    vcpus, threads = facts.get("sandbox_vcpus"), facts.get("native_threads")
    if category == "gpu":
        native_width, sandbox_width = facts.get("native_pcie_width"), facts.get("sandbox_pcie_width")
        if isinstance(native_width, int) and isinstance(sandbox_width, int) and sandbox_width < native_width:
            return "PCIe link narrower in the guest (x%d, native x%d)" % (sandbox_width, native_width)
        native_speed, sandbox_speed = facts.get("native_pcie_speed"), facts.get("sandbox_pcie_speed")
        if native_speed and sandbox_speed and str(native_speed) != str(sandbox_speed):
            return "PCIe link slower in the guest (%s, native %s)" % (sandbox_speed, native_speed)
        mode = facts.get("gpu_cc_mode")
        if mode is not None and mode != "on":
            return "GPU not in CC mode (mode: %s)" % mode
        return "no host fact explains it (PCIe link, GPU CC mode as expected)"
    if category == "memory" and facts.get("hugepages_backing") is False:
        return "sandbox memory not backed by hugepages"
    if category in ("cpu", "memory") and isinstance(vcpus, int) and isinstance(threads, int) and vcpus < threads:
        return "fewer vCPUs in the sandbox (%d) than native threads (%d)" % (vcpus, threads)
    if category == "memory":
        return "no host fact explains it (hugepages backing and vCPU count as expected)"
    if category == "storage":
        return "storage goes through the sandbox's virtual disk or shared file system"
    return "no host fact explains it"


def metric_category(name: str) -> str:
    """cpu, memory, storage or gpu, from the tool (or prefix) at the start of the metric name."""
    head = name.split(".", 1)[0].lower()
    if head.startswith(("nvbandwidth", "bandwidthtest", "gpu", "gemm")):
        return "gpu"
    if head.startswith(("mbw", "mem")) or ".transfer_rate" in name:
        return "memory"
    if head.startswith(("fio", "storage", "disk")):
        return "storage"
    return "cpu"


def judge_metric(name: str, entry: t.Mapping[str, t.Any], threshold: float,
                 facts: t.Mapping[str, t.Any]) -> t.Dict[str, t.Any]:
    """One metric's verdict record (keys documented in docs/validate-benchmarks.md)."""
    record: t.Dict[str, t.Any] = {
        "name": name, "unit": entry.get("unit"), "higher_is_better": bool(entry.get("higher_is_better", True)),
        "threshold": threshold, "native_median": None, "sandbox_median": None, "native_samples": 0,
        "sandbox_samples": 0, "ratio": None, "interval": None, "verdict": None, "cause": None}
    if entry.get("state"):
        record["verdict"] = entry["state"]
        return record
    native = number_samples(name, "native", entry.get("native", []))
    sandbox = number_samples(name, "sandbox", entry.get("sandbox", []))
    record.update(native_samples=len(native), sandbox_samples=len(sandbox))
    if len(native) < MIN_REPETITIONS or len(sandbox) < MIN_REPETITIONS:
        record.update(verdict=INCONCLUSIVE, cause="too few repetitions (native %d, sandbox %d; at least %d each)"
                      % (len(native), len(sandbox), MIN_REPETITIONS))
        return record
    higher = record["higher_is_better"]
    low, high = bootstrap_interval(native, sandbox, higher)
    record.update(native_median=statistics.median(native), sandbox_median=statistics.median(sandbox),
                  ratio=reported_ratio(ratio_of_medians(native, sandbox, higher)),
                  interval=[reported_ratio(low), reported_ratio(high)])
    record["verdict"] = EQUIVALENT if low >= threshold else BELOW if high < threshold else INCONCLUSIVE
    if record["verdict"] != EQUIVALENT:
        record["cause"] = likeliest_cause(name, facts)
    return record


def verdict(samples: t.Mapping[str, t.Mapping[str, t.Any]], thresholds: t.Optional[t.Mapping[str, t.Any]] = None,
            host_facts: t.Optional[t.Mapping[str, t.Any]] = None,
            default_threshold: t.Any = DEFAULT_THRESHOLD) -> t.Dict[str, t.Any]:
    """The report of every metric in ``samples`` (name -> native/sandbox lists, as collect_samples gives) and
    the host's overall verdict: "below" if any metric is, else "inconclusive" if any is, else "equivalent"."""
    if not isinstance(samples, t.Mapping):
        raise VerdictInputError("the samples are not a mapping of metric name to native/sandbox lists")
    default = threshold_value("every metric (default)", default_threshold)
    overrides = {name: threshold_value(name, value) for name, value in (thresholds or {}).items()}
    unknown = sorted(set(overrides) - set(samples))
    if unknown:
        raise VerdictInputError("threshold for metrics that were not measured: %s (measured: %s)"
                                % (", ".join(unknown), ", ".join(sorted(samples))))
    metrics = [judge_metric(name, samples[name], overrides.get(name, default), host_facts or {})
               for name in sorted(samples)]
    below = [m["name"] for m in metrics if m["verdict"] == BELOW]
    inconclusive = [m["name"] for m in metrics if m["verdict"] == INCONCLUSIVE]
    overall = BELOW if below else INCONCLUSIVE if inconclusive else EQUIVALENT
    return {"verdict": overall, "equivalent": overall == EQUIVALENT, "below": below, "inconclusive": inconclusive,
            "metrics": metrics, "message": summary(metrics)}


def summary(metrics: t.Sequence[t.Mapping[str, t.Any]]) -> str:
    """One line per metric that is not equivalent: name, ratio, interval, threshold and likeliest cause."""
    lines = []
    for record in metrics:
        if record["verdict"] in (BELOW, INCONCLUSIVE):
            shown = ("ratio %s (interval %s-%s) against threshold %.2f"
                     % (shown_ratio(record["ratio"]), shown_ratio(record["interval"][0]),
                        shown_ratio(record["interval"][1]), record["threshold"])
                     if record["interval"] is not None else "no ratio")
            lines.append("%s %s: %s; likeliest cause: %s" % (record["name"], record["verdict"], shown, record["cause"]))
    return "\n".join(lines) if lines else "every metric equivalent"
