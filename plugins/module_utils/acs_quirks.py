# Copyright: contributors to confidential_gpu.host
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The kernel's device-specific ACS quirks: ports the kernel counts as isolating without (standard) ACS.

Linux asks ``pci_dev_specific_acs_enabled()`` before it reads a device's ACS
capability (``pci_acs_enabled()`` in drivers/pci/pci.c).  That function walks
the ``pci_dev_acs_enabled[]`` table of drivers/pci/quirks.c in order; the
first entry whose vendor and device match and whose function does not answer
"not mine" (a negative errno) decides.  This module follows that table and
those functions as they are in Linux v6.12.118 (tests/fixtures/linux-v6.12.118
holds the excerpt the unit tests compare with, entry by entry).

Each function is modelled for the question the IOMMU code asks,
``REQ_ACS_FLAGS`` (source validation, request and completion redirect,
upstream forwarding; drivers/iommu/iommu.c).  What the model cannot see:

- ``pci_quirk_intel_pch_acs`` isolates only once ``pci_quirk_enable_intel_pch_acs``
  has run at boot, which it does when an IOMMU driver requests ACS and the
  chipset's RCBA is enabled; with the IOMMU on the model assumes it succeeded
  (the kernel logs "Intel PCH root port ACS workaround enabled", or "Failed to
  enable Intel PCH ACS quirk" when it did not);
- ``pci_quirk_amd_sb_acs`` needs an ACPI IVRS table, looked for under
  /sys/firmware/acpi/tables.

Standard library only: this runs on target hosts with Python >= 3.8.
"""

from __future__ import annotations

from typing import Dict, NamedTuple, Optional, Sequence, Tuple

# include/uapi/linux/pci_regs.h
SV, TB, RR, CR, UF, EC, DT = 0x01, 0x02, 0x04, 0x08, 0x10, 0x20, 0x40
# drivers/iommu/iommu.c: what every bridge above a device must provide for the device to get its own group.
REQ_ACS_FLAGS = SV | RR | CR | UF

# What a quirk says of a device, for REQ_ACS_FLAGS.
ISOLATED = "isolated"
NOT_ISOLATED = "not_isolated"
# pci_quirk_intel_pch_acs while the IOMMU is off: isolated once an IOMMU driver asks for ACS at boot.
UNTIL_IOMMU = "isolated_with_iommu"
# pci_quirk_intel_spt_pch_acs: the port's own ACS registers decide, read 32 bits wide (pci_config.py decodes them so).
REGISTERS = "registers"

# include/linux/pci_ids.h
VENDOR_IDS = {
    "PCI_VENDOR_ID_LOONGSON": 0x0014,
    "PCI_VENDOR_ID_ATI": 0x1002,
    "PCI_VENDOR_ID_AMD": 0x1022,
    "PCI_VENDOR_ID_AMCC": 0x10E8,
    "PCI_VENDOR_ID_AMPERE": 0x1DEF,
    "PCI_VENDOR_ID_BROADCOM": 0x14E4,
    "PCI_VENDOR_ID_CAVIUM": 0x177D,
    "PCI_VENDOR_ID_QCOM": 0x17CB,
    "PCI_VENDOR_ID_SOLARFLARE": 0x1924,
    "PCI_VENDOR_ID_NXP": 0x1957,
    "PCI_VENDOR_ID_AMAZON_ANNAPURNA_LABS": 0x1C36,
    "PCI_VENDOR_ID_ZHAOXIN": 0x1D17,
    "PCI_VENDOR_ID_HXT": 0x1DBF,
    "PCI_VENDOR_ID_INTEL": 0x8086,
    "PCI_VENDOR_ID_WANGXUN": 0x8088,
}
ANY_DEVICE = None


def _rows(vendor: int, function: str, devices: Sequence[Optional[int]]) -> Tuple[Tuple[int, Optional[int], str], ...]:
    return tuple((vendor, device, function) for device in devices)


_V = VENDOR_IDS
MF = "pci_quirk_mf_endpoint_acs"
# pci_dev_acs_enabled[], in the kernel's order (the first entry that answers decides).
QUIRK_TABLE: Tuple[Tuple[int, Optional[int], str], ...] = (
    _rows(_V["PCI_VENDOR_ID_ATI"], "pci_quirk_amd_sb_acs", (0x4385, 0x439C, 0x4383, 0x439D, 0x4384, 0x4399))
    + _rows(_V["PCI_VENDOR_ID_AMD"], "pci_quirk_amd_sb_acs", (0x780F, 0x7809))
    + _rows(_V["PCI_VENDOR_ID_SOLARFLARE"], MF, (0x0903, 0x0923, 0x0A03))
    + _rows(_V["PCI_VENDOR_ID_INTEL"], MF, (
        0x10C6, 0x10DB, 0x10DD, 0x10E1, 0x10F1, 0x10F7, 0x10F8, 0x10F9, 0x10FA, 0x10FB, 0x10FC, 0x1507, 0x1514,
        0x151C, 0x1529, 0x152A, 0x154D, 0x154F, 0x1551, 0x1558,
        0x1509, 0x150E, 0x150F, 0x1510, 0x1511, 0x1516, 0x1527,  # 82580
        0x10C9, 0x10E6, 0x10E7, 0x10E8, 0x150A, 0x150D, 0x1518, 0x1526,  # 82576
        0x10A7, 0x10A9, 0x10D6,  # 82575
        0x1521, 0x1522, 0x1523, 0x1524,  # I350
        0x105E, 0x105F, 0x1060, 0x10D9,  # 82571
        0x15B7, 0x15B8))  # I219
    + _rows(_V["PCI_VENDOR_ID_INTEL"], "pci_quirk_rciep_acs", (ANY_DEVICE,))
    + _rows(_V["PCI_VENDOR_ID_QCOM"], "pci_quirk_qcom_rp_acs", (0x0400, 0x0401, 0x0115, 0x0111, 0x0120))
    + _rows(_V["PCI_VENDOR_ID_HXT"], "pci_quirk_qcom_rp_acs", (0x0401,))
    + _rows(_V["PCI_VENDOR_ID_INTEL"], "pci_quirk_intel_pch_acs", (ANY_DEVICE,))
    + _rows(_V["PCI_VENDOR_ID_INTEL"], "pci_quirk_intel_spt_pch_acs", (ANY_DEVICE,))
    + _rows(0x19A2, MF, (0x0710,))  # Emulex BE3-R
    + _rows(0x10DF, MF, (0x0720,))  # Emulex Skyhawk-R
    + _rows(_V["PCI_VENDOR_ID_CAVIUM"], "pci_quirk_cavium_acs", (ANY_DEVICE,))
    + _rows(_V["PCI_VENDOR_ID_CAVIUM"], MF, (0xA026, 0xA059, 0xA060))
    + _rows(_V["PCI_VENDOR_ID_AMCC"], "pci_quirk_xgene_acs", (0xE004,))
    + _rows(_V["PCI_VENDOR_ID_AMPERE"], "pci_quirk_xgene_acs", tuple(range(0xE005, 0xE00D)))
    + _rows(_V["PCI_VENDOR_ID_BROADCOM"], MF, (0x16D7, 0x1750, 0x1751, 0x1752, 0x1760, 0x1761, 0x1762, 0x1763))
    + _rows(_V["PCI_VENDOR_ID_BROADCOM"], "pci_quirk_brcm_acs", (0xD714,))
    + _rows(_V["PCI_VENDOR_ID_LOONGSON"], "pci_quirk_loongson_acs", (
        0x3C09, 0x3C19, 0x3C29, 0x7A09, 0x7A19, 0x7A29, 0x7A39, 0x7A49, 0x7A59, 0x7A69))
    + _rows(_V["PCI_VENDOR_ID_AMAZON_ANNAPURNA_LABS"], "pci_quirk_al_acs", (0x0031,))
    + _rows(_V["PCI_VENDOR_ID_ZHAOXIN"], MF, (0x3038, 0x3104, 0x9083))
    + _rows(_V["PCI_VENDOR_ID_NXP"], "pci_quirk_nxp_rp_acs", (
        0x8D81, 0x8DA1, 0x8D83, 0x8D80, 0x8DA0, 0x8D82, 0x8D90, 0x8DB0, 0x8D92, 0x8D91, 0x8DB1, 0x8D93,
        0x8D89, 0x8DA9, 0x8D8B, 0x8D88, 0x8DA8, 0x8D8A, 0x8D98, 0x8DB8, 0x8D9A, 0x8D99, 0x8DB9, 0x8D9B))
    + _rows(_V["PCI_VENDOR_ID_ZHAOXIN"], "pci_quirk_zhaoxin_pcie_ports_acs", (ANY_DEVICE,))
    + _rows(_V["PCI_VENDOR_ID_WANGXUN"], "pci_quirk_wangxun_nic_acs", (ANY_DEVICE,))
)

# The ACS controls each function says the hardware provides (the second argument of its pci_acs_ctrl_enabled()
# calls, in source order; pci_quirk_al_acs masks the same four out of the request instead).
GRANTED: Dict[str, Tuple[int, ...]] = {
    "pci_quirk_amd_sb_acs": (RR | CR,),
    "pci_quirk_cavium_acs": (SV | RR | CR | UF,),
    "pci_quirk_xgene_acs": (SV | RR | CR | UF,),
    "pci_quirk_zhaoxin_pcie_ports_acs": (SV | RR | CR | UF,),
    "pci_quirk_intel_pch_acs": (SV | RR | CR | UF, 0),
    "pci_quirk_qcom_rp_acs": (SV | RR | CR | UF,),
    "pci_quirk_nxp_rp_acs": (SV | RR | CR | UF,),
    "pci_quirk_al_acs": (SV | RR | CR | UF,),
    "pci_quirk_mf_endpoint_acs": (SV | TB | RR | CR | UF | DT,),
    "pci_quirk_rciep_acs": (SV | RR | CR | UF,),
    "pci_quirk_brcm_acs": (SV | RR | CR | UF,),
    "pci_quirk_loongson_acs": (SV | RR | CR | UF,),
    "pci_quirk_wangxun_nic_acs": (SV | RR | CR | UF,),
}
# pci_quirk_amd_sb_acs filters the request down to the flags that apply to multifunction devices.
AMD_SB_APPLICABLE = RR | CR | EC | DT

# Device ID lists and ranges inside the functions (inclusive ranges, as in the kernel's `case a ... b:`).
INTEL_PCH_ACS_IDS: Tuple[int, ...] = (
    tuple(range(0x3B42, 0x3B52))  # Ibexpeak
    + tuple(range(0x1C10, 0x1C20))  # Cougarpoint
    + tuple(range(0x1E10, 0x1E20))  # Pantherpoint
    + tuple(range(0x8C10, 0x8C20))  # Lynxpoint-H
    + tuple(range(0x9C10, 0x9C1C))  # Lynxpoint-LP
    + tuple(range(0x9C90, 0x9C9C))  # Wildcat
    + tuple(range(0x1D10, 0x1D1F, 2))  # Patsburg (X79)
    + tuple(range(0x8D10, 0x8D1F))  # Wellsburg (X99)
    + tuple(range(0x8C90, 0x8C9F, 2))  # Lynx Point (9 series)
)
ID_RANGES: Dict[str, Tuple[Tuple[int, int], ...]] = {
    "pci_quirk_cavium_acs": ((0xA000, 0xA7FF), (0xAF84, 0xAF84), (0xB884, 0xB884)),
    "pci_quirk_zhaoxin_pcie_ports_acs": ((0x0710, 0x071E), (0x0721, 0x0721), (0x0723, 0x0752)),
    "pci_quirk_intel_spt_pch_acs": ((0xA110, 0xA11F), (0xA167, 0xA16A), (0xA290, 0xA29F), (0xA2E7, 0xA2EE),
                                    (0x9D10, 0x9D1B)),
    "pci_quirk_wangxun_nic_acs": ((0x0100, 0x010F), (0x1001, 0x1001), (0x2001, 0x2001), (0x5010, 0x5010),
                                  (0x5025, 0x5025), (0x5040, 0x5040), (0x5110, 0x5110), (0x5125, 0x5125),
                                  (0x5140, 0x5140)),
}


class QuirkDevice(NamedTuple):
    """What the quirk functions look at."""

    vendor: int
    device: int
    port_type: Optional[str]  # None: not PCI Express
    has_acs: bool
    multifunction: bool = False
    on_root_bus: bool = False
    ivrs_table: bool = False  # ACPI IVRS (AMD IOMMU) present
    iommu_on: bool = True  # an IOMMU driver requested ACS at boot


class QuirkVerdict(NamedTuple):
    function: str
    outcome: str  # ISOLATED, NOT_ISOLATED, UNTIL_IOMMU, REGISTERS


def provides(granted: int, requested: int = REQ_ACS_FLAGS) -> bool:
    """pci_acs_ctrl_enabled(): every requested control is among those the hardware provides."""
    return requested & granted == requested


def in_ranges(device: int, ranges: Sequence[Tuple[int, int]]) -> bool:
    return any(low <= device <= high for low, high in ranges)


def outcome(isolated: bool) -> str:
    return ISOLATED if isolated else NOT_ISOLATED


def quirk_outcome(function: str, dev: QuirkDevice) -> Optional[str]:
    """What one quirk function answers for REQ_ACS_FLAGS; None where the kernel's returns a negative errno."""
    granted = GRANTED.get(function, (0,))[0]
    if function == "pci_quirk_amd_sb_acs":
        if not (dev.multifunction and dev.on_root_bus and dev.ivrs_table):
            return None
        return outcome(provides(granted, REQ_ACS_FLAGS & AMD_SB_APPLICABLE))
    if function == "pci_quirk_cavium_acs":
        if dev.port_type != "root_port" or not in_ranges(dev.device, ID_RANGES[function]):
            return None
        return outcome(provides(granted))
    if function == "pci_quirk_zhaoxin_pcie_ports_acs":
        if dev.port_type not in ("root_port", "downstream_port"):
            return None
        return outcome(in_ranges(dev.device, ID_RANGES[function]) and provides(granted))
    if function == "pci_quirk_intel_pch_acs":
        if dev.port_type != "root_port" or dev.device not in INTEL_PCH_ACS_IDS:
            return None
        return outcome(provides(granted)) if dev.iommu_on else UNTIL_IOMMU
    if function == "pci_quirk_intel_spt_pch_acs":
        if dev.port_type != "root_port" or not in_ranges(dev.device, ID_RANGES[function]) or not dev.has_acs:
            return None
        return REGISTERS
    if function == "pci_quirk_al_acs":
        if dev.port_type != "root_port":
            return None
        return outcome(REQ_ACS_FLAGS & ~granted == 0)
    if function == "pci_quirk_rciep_acs":
        if dev.port_type != "rc_integrated_endpoint":
            return None
        return outcome(provides(granted))
    if function == "pci_quirk_wangxun_nic_acs":
        return outcome(in_ranges(dev.device, ID_RANGES[function]) and provides(granted))
    # qcom_rp, nxp_rp, xgene, brcm, loongson, mf_endpoint: the vendor and device IDs are the whole test.
    return outcome(provides(granted))


def reads_header(vendor: int, device: int) -> bool:
    """Does a quirk for this device look at the multifunction bit (pci_quirk_amd_sb_acs)?"""
    return any(row[:2] == (vendor, device) and row[2] == "pci_quirk_amd_sb_acs" for row in QUIRK_TABLE)


def acs_quirk(dev: QuirkDevice) -> Optional[QuirkVerdict]:
    """The quirk that decides for this device (the first table entry that answers), or None: ACS decides."""
    for vendor, device, function in QUIRK_TABLE:
        if vendor != dev.vendor or device not in (ANY_DEVICE, dev.device):
            continue
        answer = quirk_outcome(function, dev)
        if answer is not None:
            return QuirkVerdict(function, answer)
    return None
