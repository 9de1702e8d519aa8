# Copyright: contributors to confidential_gpu.host
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The PCI function selection options every selecting module shares (module_utils/pci_device.py)."""

from __future__ import annotations


class ModuleDocFragment:
    DOCUMENTATION = r"""
options:
  addresses:
    description:
      - Functions by address, as C(DDDD:BB:DD.F) or C(BB:DD.F) (domain 0000).
      - "How the selectors combine, the same in every module: what a function is (O(roles), O(pci_ids)) and where
        it is (O(addresses), O(iommu_groups)). Within each, the values add up; between the two, they narrow: a
        function is selected when it matches any given role or ID (or none is given) and any given address or
        group (or none is given). So O(roles=[gpu]) with O(pci_ids=[10de:22a3]) selects the GPUs and the
        NVSwitches of that ID, and O(addresses) with O(roles=[gpu]) keeps the named functions that are GPUs."
    type: list
    elements: str
    default: []
  pci_ids:
    description:
      - Functions by C(vendor:device) ID in hex, like C(10de:2330); C(10de:*) selects every device of a vendor.
    type: list
    elements: str
    default: []
  roles:
    description:
      - Functions by role, as M(confidential_gpu.host.pci_topology_info) assigns it from vendor and class
        (C(gpu) and C(nvswitch) are NVIDIA display and bridge-class devices, C(bridge) any class 06 function).
    type: list
    elements: str
    choices: [gpu, nvswitch, nic, bridge, storage, other]
    default: []
  iommu_groups:
    description:
      - Functions by IOMMU group number.
    type: list
    elements: int
    default: []
"""
