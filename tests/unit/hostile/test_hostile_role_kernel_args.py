"""Hostile input against role kernel_args: each case is refused naming the variable and the fix before the boot
configuration is touched, and the case's root stays byte-identical. The host facts are given
(kernel_args_host_facts, an SNP-capable AMD host) so that the role does not read them.

All cases run in one ansible-playbook process (tests/lib/hostile_roles.py); each is its own test here.
"""

from __future__ import annotations

from typing import List

from hostile_roles import Case, role_refusal_test
from role_roots import ROLE_ROOTS

ROLE = "kernel_args"
SPEC = "Validation of arguments failed"
IDS_FIX = "vfio-pci reads each ID as hex vendor:device[:subvendor[:subdevice[:class[:class_mask]]]]"
NOT_A_LIST = "give a list, a comma-separated text such as \"a,b\", or a JSON list text"

CASES: List[Case] = [
    # issue 17 point 6: these reached GRUB as given
    Case("vfio-ids-malformed", {"kernel_args_vfio_pci_ids": ["zzzz:2330", "10de:*"]},
         ['kernel_args_vfio_pci_ids holds "zzzz:2330", "10de:*"', IDS_FIX, "nothing was changed"]),
    Case("vfio-ids-shell", {"kernel_args_vfio_pci_ids": ["10de:2330 init=/bin/sh"]},
         ['"10de:2330 init=/bin/sh"', IDS_FIX]),
    # AWX strings where lists belong are read as lists (lookup survey_inputs), then checked like lists
    Case("vfio-ids-string", {"kernel_args_vfio_pci_ids": "10de:2330,10de:*"},
         ['kernel_args_vfio_pci_ids holds "10de:*"', IDS_FIX]),
    Case("extra-string", {"kernel_args_extra": "quiet init=/bin/sh"},
         ["present: 'quiet init=/bin/sh' is not one kernel argument"]),
    Case("absent-broken-json", {"kernel_args_absent": '["iommu=off"'},
         ['kernel_args_absent is "[\\"iommu=off\\""', NOT_A_LIST]),
    Case("extra-newline", {"kernel_args_extra": ["quiet\ninit=/bin/sh"]},
         ["present: 'quiet\\ninit=/bin/sh' is not one kernel argument; give one argument per list item"]),
    Case("passthrough-word", {"kernel_args_iommu_passthrough": "sometimes"},
         ["kernel_args_iommu_passthrough is sometimes: use auto, true or false"]),
    Case("backend-unknown", {"kernel_args_backend": "lilo"},
         [SPEC, "kernel_args_backend must be one of: auto, grub, grubby, systemd_boot, rpm_ostree, got: lilo"]),
    # "yes" is normalised to true, and TDX is then refused on this AMD host
    Case("tdx-string-normalised", {"kernel_args_tdx": "yes"},
         ["has a CPU of vendor amd (AuthenticAMD): TDX needs an Intel CPU: set kernel_args_tdx to false"]),
    Case("iommu-word", {"kernel_args_iommu": "perhaps"}, [SPEC, "'kernel_args_iommu' is of type str"]),
    Case("by-vendor-string", {"kernel_args_iommu_by_vendor": "amd"},
         [SPEC, "'kernel_args_iommu_by_vendor' is of type str", "to dict"]),
    # issue 16 point 5: the one contribution fact; a string list would be read letter by letter
    Case("contribution-string", {"confidential_gpu_kernel_args_contributions": {"site": {"present": "quiet splash"}}},
         ['confidential_gpu_kernel_args_contributions holds site.present: "quiet splash"',
          "each entry is <role>: {present: [arguments], absent: [arguments], reason: text}", "nothing was changed"]),
    Case("contribution-not-a-dict", {"confidential_gpu_kernel_args_contributions": {"site": ["quiet"]}},
         ['confidential_gpu_kernel_args_contributions holds site: ["quiet"]']),
]


test_kernel_args_role_refuses = role_refusal_test(ROLE, CASES, ROLE_ROOTS[ROLE])
