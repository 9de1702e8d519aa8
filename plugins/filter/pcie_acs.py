# Copyright: contributors to confidential_gpu.host
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Filter pcie_acs_plan: module pcie_acs's plan, made on the controller from role discovery's result
(plugins/module_utils/pcie_acs.py, plan_from_discovery)."""

from __future__ import annotations

from typing import Any, Callable, Dict, Optional, Sequence

from ansible.errors import AnsibleFilterError

# The code behind this filter is imported when it runs, not when this file loads (docs/design.md, "Controller code").


def pcie_acs_plan(result: Any, profile: str = "report", addresses: Sequence[str] = (), pci_ids: Sequence[str] = (),
                  roles: Sequence[str] = (), p2p_mode: Optional[str] = None, config_acs_flags: Optional[str] = None,
                  device_format: str = "address", current_cmdline: Optional[str] = None,
                  iommu_groups: Sequence[int] = ()) -> Dict[str, Any]:
    """What confidential_gpu.host.pcie_acs returns for these options (runtime_write off) on the host ``result``
    describes."""
    from ansible_collections.confidential_gpu.host.plugins.module_utils.pcie_acs import (
        DEFAULT_CONFIG_ACS_FLAGS,
        DEFAULT_P2P_MODE,
        PcieAcsError,
        build_request,
        plan_from_discovery,
    )
    if not isinstance(result, dict):
        raise AnsibleFilterError("pcie_acs_plan: give the result of confidential_gpu.host.pci_topology_info gathered "
                                 "with gather_subset [all, acs], not %s" % type(result).__name__)
    try:
        request = build_request(profile, list(addresses), list(pci_ids), list(roles), p2p_mode or DEFAULT_P2P_MODE,
                                config_acs_flags or DEFAULT_CONFIG_ACS_FLAGS, device_format, current_cmdline, False,
                                list(iommu_groups))
        plan = plan_from_discovery(result, request)
    except PcieAcsError as error:
        raise AnsibleFilterError("pcie_acs_plan: %s" % error) from None
    plan.pop("diff", None)
    return plan


class FilterModule:
    def filters(self) -> Dict[str, Callable[..., Any]]:
        return {"pcie_acs_plan": pcie_acs_plan}
