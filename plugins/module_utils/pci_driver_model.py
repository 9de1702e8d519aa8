# Copyright: contributors to confidential_gpu.host
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""pci_driver's shared types: its errors, the validated intent and the facts read from the host."""

from __future__ import annotations

from typing import Any, Dict, List, Mapping, NamedTuple, Optional, Set, Tuple

from ansible_collections.confidential_gpu.host.plugins.module_utils.pci_device import Selector

DEFAULT_DRIVER = "vfio-pci"


class PciDriverError(Exception):
    """Bad input or a failure; the message names the device, file or value and the fix."""


class PciDriverRefused(PciDriverError):
    """Safety checks failed; nothing was changed.  ``refused`` holds the structured list."""

    def __init__(self, message: str, refused: List[Dict[str, Any]]) -> None:
        super().__init__(message)
        self.refused = refused


class Intent(NamedTuple):
    """What the user asked for, validated and normalized."""

    addresses: Tuple[str, ...]
    pci_ids: Tuple[str, ...]
    roles: Tuple[str, ...]
    iommu_groups: Tuple[int, ...]
    driver: str
    state: str
    whole_group: bool
    allow_host_critical: Tuple[str, ...]
    persist: bool
    early_binding: bool
    allow_group_members: Tuple[str, ...] = ()
    shipped: Optional[Mapping[str, str]] = None  # the collection's files/ by name, from the action plugin

    @property
    def selector(self) -> Selector:
        return Selector(self.addresses, self.pci_ids, self.roles, self.iommu_groups)


class Facts(NamedTuple):
    """Everything the plan needs from the host, read once."""

    topology: Dict[str, Any]
    critical: Dict[str, List[str]]
    overrides: Dict[str, Optional[str]]
    files: Dict[str, Optional[str]]
    modules: Dict[str, Optional[str]]
    os_ids: Set[str]
    initramfs_generators: Tuple[str, ...]
    # Bridge address -> pcie_acs's verdict on it, for the bridges above members of groups that span several slots.
    isolation: Dict[str, Dict[str, Any]]
