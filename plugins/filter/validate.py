# Copyright: contributors to confidential_gpu.host
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Filters validate_parse, validate_no_gpu, validate_repetition and validate_verdict: benchmark output to metrics,
and the sandbox/native verdict (plugins/plugin_utils/validate_benchmarks.py, validate_verdict.py;
docs/validate-benchmarks.md); validate_report_host, validate_report_raw, validate_report_run and
validate_report_html: role validate's report (plugins/plugin_utils/validate_report.py, docs/validate.md)."""

from __future__ import annotations

from typing import Any, Callable, Dict, List, Optional

from ansible.errors import AnsibleFilterError

# The code behind these filters is imported when a filter runs, not when this file loads: ansible-core loads every
# filter file of the collection in each worker process whenever any collection filter is used (docs/design.md,
# "Controller code").


def validate_parse(output: Any, tool: str, prefix: Optional[str] = None) -> List[Dict[str, Any]]:
    """A benchmark tool's output (text, or a registered command result) as a list of metrics."""
    from ansible_collections.confidential_gpu.host.plugins.plugin_utils.validate_benchmarks import (
        BenchmarkParseError,
        parse,
    )
    try:
        return parse(output, tool, prefix)
    except BenchmarkParseError as error:
        raise AnsibleFilterError(str(error)) from error


def validate_no_gpu(names: Any = None) -> List[Dict[str, Any]]:
    """The GPU metrics as entries with state "no GPU" (``names`` defaults to the validation's GPU metrics)."""
    from ansible_collections.confidential_gpu.host.plugins.plugin_utils.validate_benchmarks import (
        GPU_METRIC_NAMES,
        gpu_metrics_without_gpu,
    )
    return gpu_metrics_without_gpu(GPU_METRIC_NAMES if not names else list(names))


def validate_repetition(output: Any) -> Dict[str, Any]:
    """One repetition's delimited output (roles/validate/tasks/performance.yml) as sections and metrics."""
    from ansible_collections.confidential_gpu.host.plugins.plugin_utils.validate_benchmarks import (
        BenchmarkParseError,
        repetition,
    )
    try:
        return repetition(output if isinstance(output, str) else str(output.get("stdout", "")))
    except BenchmarkParseError as error:
        raise AnsibleFilterError(str(error)) from error


def validate_verdict(native_runs: Any, sandbox_runs: Any, thresholds: Any = None, host_facts: Any = None,
                     default_threshold: Any = None) -> Dict[str, Any]:
    """The per-metric and overall verdict of the sandbox runs against the native runs (``default_threshold``:
    DEFAULT_THRESHOLD, 0.95, when not given)."""
    from ansible_collections.confidential_gpu.host.plugins.plugin_utils.validate_verdict import (
        DEFAULT_THRESHOLD,
        VerdictInputError,
        collect_samples,
        verdict,
    )
    try:
        return verdict(collect_samples(native_runs, sandbox_runs), thresholds or {}, host_facts or {},
                       DEFAULT_THRESHOLD if default_threshold is None else default_threshold)
    except (VerdictInputError, AttributeError, TypeError) as error:
        raise AnsibleFilterError("validate_verdict: %s" % error) from error


def validate_report_host(host: str, checks: Any = None, performance: Any = None, context: Any = None,
                         facts: Any = None) -> Dict[str, Any]:
    """One host's report document from validate_checks and validate_performance (either may be null)."""
    from ansible_collections.confidential_gpu.host.plugins.plugin_utils.validate_report import host_report
    return host_report(host, checks, performance, context or {}, facts)


def validate_report_raw(host: str, performance: Any = None, context: Any = None) -> Dict[str, Any]:
    """One host's raw benchmark outputs, the report's separate file."""
    from ansible_collections.confidential_gpu.host.plugins.plugin_utils.validate_report import host_raw
    return host_raw(host, performance, context or {})


def validate_report_run(hosts: Any, context: Any = None) -> Dict[str, Any]:
    """The run's document: host name -> its document (null: the host failed before validate judged it)."""
    from ansible_collections.confidential_gpu.host.plugins.plugin_utils.validate_report import run_report
    if not isinstance(hosts, dict):
        raise AnsibleFilterError("validate_report_run: give a mapping of host name to report document, not %r"
                                 % type(hosts).__name__)
    return run_report(hosts, context or {})


def validate_report_html(report: Any) -> str:
    """The run's self-contained HTML page."""
    from ansible_collections.confidential_gpu.host.plugins.plugin_utils.validate_report import run_html
    try:
        return run_html(report)
    except (KeyError, TypeError) as error:
        raise AnsibleFilterError("validate_report_html: not a run document of validate_report_run (%s)" % error) \
            from error


class FilterModule:
    def filters(self) -> Dict[str, Callable[..., Any]]:
        return {"validate_parse": validate_parse, "validate_no_gpu": validate_no_gpu,
                "validate_verdict": validate_verdict, "validate_repetition": validate_repetition,
                "validate_report_host": validate_report_host, "validate_report_raw": validate_report_raw,
                "validate_report_run": validate_report_run, "validate_report_html": validate_report_html}
