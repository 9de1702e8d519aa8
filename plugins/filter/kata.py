# Copyright: contributors to confidential_gpu.host
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Filters for planning Kata runtime classes from registered facts (documented in the .yml files beside)."""

from __future__ import annotations

from typing import Any, Callable, Dict, List, Sequence

from ansible.errors import AnsibleFilterError

from ansible_collections.confidential_gpu.host.plugins.module_utils.kata_config import shims_for_host
from ansible_collections.confidential_gpu.host.plugins.module_utils.kata_pcie_plan import (
    PlanError,
    plan_lines,
    plan_pcie,
)


def kata_pcie_plan(topology: Dict[str, Any], devices: Sequence[str] = ("gpu",),
                   mode: str = "flatten", vfio_mode: str = "group") -> Dict[str, Any]:
    """The PCIe plan of confidential_gpu.host.kata_runtime_config, with its printable lines under ``lines``."""
    if isinstance(devices, str):
        devices = [devices]
    try:
        plan = plan_pcie(topology, list(devices), mode, vfio_mode=vfio_mode)
    except PlanError as error:
        raise AnsibleFilterError("kata_pcie_plan: %s" % error) from None
    plan["lines"] = plan_lines(plan)
    return plan


def kata_shims_for_host(cc_host: Dict[str, Any], gpu: bool = True) -> List[str]:
    """Kata runtime classes that fit a host's readiness verdicts (result of cc_host_info)."""
    if not isinstance(cc_host, dict):
        raise AnsibleFilterError("kata_shims_for_host: expects the registered result of "
                                 "confidential_gpu.host.cc_host_info, got %s" % type(cc_host).__name__)
    return shims_for_host(cc_host, gpu=bool(gpu))


class FilterModule:
    def filters(self) -> Dict[str, Callable[..., Any]]:
        return {"kata_pcie_plan": kata_pcie_plan, "kata_shims_for_host": kata_shims_for_host}
