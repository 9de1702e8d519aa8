# Copyright: contributors to confidential_gpu.host
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Filters validate_parse, validate_no_gpu, validate_repetition and validate_verdict: benchmark output to metrics,
and the sandbox/native verdict (plugins/plugin_utils/validate_benchmarks.py, validate_verdict.py;
docs/validate-benchmarks.md)."""

from __future__ import annotations

from typing import Any, Callable, Dict, List, Optional

from ansible.errors import AnsibleFilterError

from ansible_collections.confidential_gpu.host.plugins.plugin_utils.validate_benchmarks import (
    GPU_METRIC_NAMES,
    BenchmarkParseError,
    gpu_metrics_without_gpu,
    parse,
    repetition,
)
from ansible_collections.confidential_gpu.host.plugins.plugin_utils.validate_verdict import (
    DEFAULT_THRESHOLD,
    VerdictInputError,
    collect_samples,
    verdict,
)


def validate_parse(output: Any, tool: str, prefix: Optional[str] = None) -> List[Dict[str, Any]]:
    """A benchmark tool's output (text, or a registered command result) as a list of metrics."""
    try:
        return parse(output, tool, prefix)
    except BenchmarkParseError as error:
        raise AnsibleFilterError(str(error)) from error


def validate_no_gpu(names: Any = None) -> List[Dict[str, Any]]:
    """The GPU metrics as entries with state "no GPU" (``names`` defaults to the validation's GPU metrics)."""
    return gpu_metrics_without_gpu(GPU_METRIC_NAMES if not names else list(names))


def validate_repetition(output: Any) -> Dict[str, Any]:
    """One repetition's delimited output (roles/validate/tasks/performance.yml) as sections and metrics."""
    try:
        return repetition(output if isinstance(output, str) else str(output.get("stdout", "")))
    except BenchmarkParseError as error:
        raise AnsibleFilterError(str(error)) from error


def validate_verdict(native_runs: Any, sandbox_runs: Any, thresholds: Any = None, host_facts: Any = None,
                     default_threshold: Any = DEFAULT_THRESHOLD) -> Dict[str, Any]:
    """The per-metric and overall verdict of the sandbox runs against the native runs."""
    try:
        return verdict(collect_samples(native_runs, sandbox_runs), thresholds or {}, host_facts or {},
                       default_threshold)
    except (VerdictInputError, AttributeError, TypeError) as error:
        raise AnsibleFilterError("validate_verdict: %s" % error) from error


class FilterModule:
    def filters(self) -> Dict[str, Callable[..., Any]]:
        return {"validate_parse": validate_parse, "validate_no_gpu": validate_no_gpu,
                "validate_verdict": validate_verdict, "validate_repetition": validate_repetition}
