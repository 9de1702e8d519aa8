# Copyright: contributors to confidential_gpu.host
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Filters for SEV-SNP launch measurements of Kata Containers guests and Trustee reference values
(kata_measurement_inputs, kata_kernel_cmdline, qemu_measurement_inputs, sev_snp_measure_args,
snp_reference_values, rvps_sample_message): see plugins/plugin_utils/kata_measurement.py."""

from __future__ import annotations

from typing import Any, Callable, Dict

# The code behind these filters is imported when a filter runs, not when this file loads: ansible-core loads every
# filter file of the collection in each worker process whenever any collection filter is used (docs/design.md,
# "Controller code").
FILTERS = ("kata_measurement_inputs", "kata_kernel_cmdline", "qemu_measurement_inputs", "sev_snp_measure_args",
           "snp_reference_values", "rvps_sample_message")


def _on_demand(name: str) -> Callable[..., Any]:
    def run(*args: Any, **kwargs: Any) -> Any:
        from ansible_collections.confidential_gpu.host.plugins.plugin_utils import kata_measurement
        return getattr(kata_measurement, name)(*args, **kwargs)

    run.__name__ = run.__qualname__ = name
    return run


class FilterModule:
    """SEV-SNP launch measurement inputs and Trustee reference values."""

    def filters(self) -> Dict[str, Callable[..., Any]]:
        return {name: _on_demand(name) for name in FILTERS}
