# Copyright: contributors to confidential_gpu.host
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Decode PCI configuration space (the bytes of sysfs ``config``).

Only what host preparation needs is decoded: identity, header type, the
PCI Express capability (port type, link capability and status), and the
extended capabilities ACS, ATS, PRI, PASID, SR-IOV, ARI and Resizable BAR.
Capability lists are walked with loop guards, so a corrupt or hostile chain
ends the walk instead of hanging it.  A short buffer (an unprivileged reader
sees 64 bytes) decodes what it holds and says what it could not.

The decoder takes bytes (a dump) or :class:`OnDemandConfigSpace` (an open
sysfs ``config`` file).  The kernel turns every 4 bytes read from that file
into a config access (an ECAM read on bare metal, a trap to the hypervisor in
a guest), so the on-demand reader fetches the 256-byte header and capability
area once and then, as the extended list is walked, each capability header
and the registers decoded from it (``EXTENDED_SPANS``): a few dozen accesses
per function instead of 1,024.

Standard library only: this runs on target hosts with Python >= 3.8.
"""

from __future__ import annotations

import os
import struct
from typing import Any, Dict, FrozenSet, List, Optional, Set, Tuple, Union

from ansible_collections.confidential_gpu.host.plugins.module_utils.acs_quirks import ID_RANGES

HEADER_SIZE = 64
LEGACY_SIZE = 256
EXTENDED_SIZE = 4096

# Standard capability IDs.
CAP_ID_SUBSYSTEM_VENDOR = 0x0D
CAP_ID_EXPRESS = 0x10
# Extended capability IDs.
ECAP_ID_ACS = 0x000D
ECAP_ID_ARI = 0x000E
ECAP_ID_ATS = 0x000F
ECAP_ID_SRIOV = 0x0010
ECAP_ID_PRI = 0x0013
ECAP_ID_REBAR = 0x0015
ECAP_ID_PASID = 0x001B

PORT_TYPES = {
    0x0: "endpoint",
    0x1: "legacy_endpoint",
    0x4: "root_port",
    0x5: "upstream_port",
    0x6: "downstream_port",
    0x7: "pcie_to_pci_bridge",
    0x8: "pci_to_pcie_bridge",
    0x9: "rc_integrated_endpoint",
    0xA: "rc_event_collector",
}
# Port types without a link of their own (no LnkCap/LnkSta to read).
LINKLESS_PORT_TYPES = ("rc_integrated_endpoint", "rc_event_collector")

LINK_SPEEDS_GTS = {1: 2.5, 2: 5.0, 3: 8.0, 4: 16.0, 5: 32.0, 6: 64.0}

ACS_FLAGS = (
    (0x01, "source_validation"),
    (0x02, "translation_blocking"),
    (0x04, "request_redirect"),
    (0x08, "completion_redirect"),
    (0x10, "upstream_forwarding"),
    (0x20, "egress_control"),
    (0x40, "direct_translated_p2p"),
)

HEADER_TYPES = {0: "normal", 1: "bridge", 2: "cardbus"}

# Intel PCH root ports whose ACS capability and control registers are 32 bits
# wide, so that control sits at +8 instead of +6 (Linux: pci_quirk_intel_spt_pch_acs
# for Sunrise Point, Union Point and 7th/8th gen mobile root ports; the ranges live
# with the other kernel ACS quirks).  lspci decodes them as standard.
INTEL_PCH_ACS_DWORD_RANGES = ID_RANGES["pci_quirk_intel_spt_pch_acs"]

MAX_STANDARD_CAPS = 48
MAX_EXTENDED_CAPS = (EXTENDED_SIZE - LEGACY_SIZE) // 4

# Bytes from the start of each decoded extended capability that its decoder
# reads (header included): what OnDemandConfigSpace fetches beyond the header.
# Resizable BAR: header plus up to six capability/control register pairs.
REBAR_MAX_BARS = 6
EXTENDED_SPANS = {
    ECAP_ID_ACS: 0x0C,
    ECAP_ID_ARI: 0x08,
    ECAP_ID_ATS: 0x08,
    ECAP_ID_SRIOV: 0x1C,
    ECAP_ID_PRI: 0x10,
    ECAP_ID_REBAR: 4 + 8 * REBAR_MAX_BARS,
    ECAP_ID_PASID: 0x08,
}
# The extended capabilities the device model needs of every function, whatever a caller asks for: SR-IOV (a PF's
# VFs, their IDs and physfn). The PCIe capability (bridge kinds) is in the first 256 bytes, read anyway.
MODEL_EXTENDED_CAPS = frozenset((ECAP_ID_SRIOV,))


class ConfigSpace:
    """A function's configuration space bytes with bounded little-endian reads."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.size = len(data)

    def load(self, offset: int, length: int) -> None:
        """Make ``length`` bytes at ``offset`` available: a dump holds them all already."""

    def has(self, offset: int, width: int) -> bool:
        return offset >= 0 and offset + width <= self.size

    def u8(self, offset: int) -> Optional[int]:
        return self.data[offset] if self.has(offset, 1) else None

    def u16(self, offset: int) -> Optional[int]:
        return struct.unpack_from("<H", self.data, offset)[0] if self.has(offset, 2) else None

    def u32(self, offset: int) -> Optional[int]:
        return struct.unpack_from("<I", self.data, offset)[0] if self.has(offset, 4) else None


class OnDemandConfigSpace(ConfigSpace):
    """Config space of an open sysfs ``config`` file, read as the decoder asks for it.

    The first 256 bytes come in one read; extended space (offset 256 on) only
    through :meth:`load`, which the extended capability walk calls for each
    header and the registers it decodes.  Bytes never loaded read as zero, so
    everything that decodes extended space must load first.  ``size`` is the
    readable size: 64 for an unprivileged reader, 256 for conventional PCI
    functions, 4096 once extended space has answered a read.
    """

    data: bytearray  # filled in place as extended space loads

    def __init__(self, fd: int) -> None:
        super().__init__(bytearray(os.pread(fd, LEGACY_SIZE, 0)))
        self.fd = fd
        self.extended: Optional[bool] = None  # None until extended space is first read

    def load(self, offset: int, length: int) -> None:
        if offset < LEGACY_SIZE or self.size < LEGACY_SIZE or self.extended is False:
            return
        length = min(length, EXTENDED_SIZE - offset)
        if length <= 0:
            return
        try:
            chunk = os.pread(self.fd, length, offset)
        except OSError:  # a function that stops answering (reset, surprise removal): decode what was read
            chunk = b""
        if self.extended is None:
            self.extended = bool(chunk)
            if not chunk:
                return
            self.data.extend(bytes(EXTENDED_SIZE - LEGACY_SIZE))
            self.size = EXTENDED_SIZE
        self.data[offset:offset + len(chunk)] = chunk


def hex4(value: Optional[int]) -> Optional[str]:
    return None if value is None else "%04x" % value


def standard_capabilities(cfg: ConfigSpace, header_type: int) -> Dict[int, int]:
    """Map capability ID -> offset of the first such capability (loop guarded)."""
    status = cfg.u16(0x06)
    if status is None or not status & 0x10:
        return {}
    pointer_offset = 0x14 if header_type == 2 else 0x34
    pointer = cfg.u8(pointer_offset)
    found: Dict[int, int] = {}
    seen: Set[int] = set()
    while pointer and len(seen) < MAX_STANDARD_CAPS:
        pointer &= 0xFC
        if pointer < HEADER_SIZE or pointer in seen or not cfg.has(pointer, 2):
            break
        seen.add(pointer)
        cap_id = cfg.data[pointer]
        found.setdefault(cap_id, pointer)
        pointer = cfg.data[pointer + 1]
    return found


def extended_capabilities(cfg: ConfigSpace, decoded: Optional[FrozenSet[int]] = None) -> Dict[int, Tuple[int, int]]:
    """Map extended capability ID -> (offset, version) of its first instance.

    The registers of each capability in ``decoded`` (default: every one a decoder reads) are loaded too.
    """
    found: Dict[int, Tuple[int, int]] = {}
    offset = LEGACY_SIZE
    seen: Set[int] = set()
    while offset and len(seen) < MAX_EXTENDED_CAPS:
        if offset in seen:
            break
        cfg.load(offset, 4)
        header = cfg.u32(offset)
        if header is None or header in (0, 0xFFFFFFFF):
            break
        seen.add(offset)
        cap_id = header & 0xFFFF
        if cap_id not in found:
            found[cap_id] = (offset, (header >> 16) & 0xF)
            span = EXTENDED_SPANS.get(cap_id) if decoded is None or cap_id in decoded else None
            if span:
                cfg.load(offset + 4, span - 4)
        offset = (header >> 20) & 0xFFC
        if offset < LEGACY_SIZE:
            break
    return found


def link_speed(code: int) -> Optional[float]:
    return LINK_SPEEDS_GTS.get(code)


def decode_express(cfg: ConfigSpace, offset: int) -> Optional[Dict[str, Any]]:
    """PCI Express capability: port type and link capability/status."""
    flags = cfg.u16(offset + 2)
    if flags is None:
        return None
    port_type = PORT_TYPES.get((flags >> 4) & 0xF, "unknown_%x" % ((flags >> 4) & 0xF))
    result: Dict[str, Any] = {
        "port_type": port_type,
        "link_speed_gts": None,
        "link_width": None,
        "max_link_speed_gts": None,
        "max_link_width": None,
    }
    if port_type in LINKLESS_PORT_TYPES:
        return result
    link_cap = cfg.u32(offset + 0x0C)
    link_status = cfg.u16(offset + 0x12)
    if link_cap is not None:
        result["max_link_speed_gts"] = link_speed(link_cap & 0xF)
        result["max_link_width"] = (link_cap >> 4) & 0x3F
    if link_status is not None:
        result["link_speed_gts"] = link_speed(link_status & 0xF)
        result["link_width"] = (link_status >> 4) & 0x3F
    return result


def flag_dict(value: int) -> Dict[str, bool]:
    return {name: bool(value & bit) for bit, name in ACS_FLAGS}


def uses_intel_pch_acs_quirk(vendor_id: int, device_id: int, port_type: Optional[str]) -> bool:
    if vendor_id != 0x8086 or port_type != "root_port":
        return False
    return any(low <= device_id <= high for low, high in INTEL_PCH_ACS_DWORD_RANGES)


def decode_acs(cfg: ConfigSpace, offset: int, dword_registers: bool) -> Optional[Dict[str, Any]]:
    """ACS capability and control, with the Intel PCH 32-bit register layout."""
    if dword_registers:
        capability, control = cfg.u32(offset + 4), cfg.u32(offset + 8)
    else:
        capability, control = cfg.u16(offset + 4), cfg.u16(offset + 6)
    if capability is None or control is None:
        return None
    return {
        "capability": capability,
        "control": control,
        "register_layout": "intel_pch_dword" if dword_registers else "standard",
        "capabilities": flag_dict(capability),
        "enabled": flag_dict(control),
        "egress_control_vector_size": (capability >> 8) & 0xFF,
    }


def decode_ats(cfg: ConfigSpace, offset: int) -> Optional[Dict[str, Any]]:
    capability, control = cfg.u16(offset + 4), cfg.u16(offset + 6)
    if capability is None or control is None:
        return None
    return {
        "enabled": bool(control & 0x8000),
        "invalidate_queue_depth": capability & 0x1F,
        "page_aligned_request": bool(capability & 0x20),
        "global_invalidate": bool(capability & 0x40),
        "smallest_translation_unit": control & 0x1F,
    }


def decode_pri(cfg: ConfigSpace, offset: int) -> Optional[Dict[str, Any]]:
    control, status = cfg.u16(offset + 4), cfg.u16(offset + 6)
    capacity, allocation = cfg.u32(offset + 8), cfg.u32(offset + 0x0C)
    if control is None or status is None or capacity is None or allocation is None:
        return None
    return {
        "enabled": bool(control & 0x1),
        "response_failure": bool(status & 0x1),
        "unexpected_response": bool(status & 0x2),
        "stopped": bool(status & 0x100),
        "prg_response_pasid_required": bool(status & 0x8000),
        "outstanding_capacity": capacity,
        "outstanding_allocation": allocation,
    }


def decode_pasid(cfg: ConfigSpace, offset: int) -> Optional[Dict[str, Any]]:
    capability, control = cfg.u16(offset + 4), cfg.u16(offset + 6)
    if capability is None or control is None:
        return None
    return {
        "enabled": bool(control & 0x1),
        "max_width": (capability >> 8) & 0x1F,
        "execute_supported": bool(capability & 0x2),
        "privileged_supported": bool(capability & 0x4),
        "execute_enabled": bool(control & 0x2),
        "privileged_enabled": bool(control & 0x4),
    }


def decode_sriov(cfg: ConfigSpace, offset: int) -> Optional[Dict[str, Any]]:
    control = cfg.u16(offset + 0x08)
    vf_device = cfg.u16(offset + 0x1A)
    if control is None or vf_device is None:
        return None
    return {
        "initial_vfs": cfg.u16(offset + 0x0C),
        "total_vfs": cfg.u16(offset + 0x0E),
        "num_vfs": cfg.u16(offset + 0x10),
        "vf_offset": cfg.u16(offset + 0x14),
        "vf_stride": cfg.u16(offset + 0x16),
        "vf_device_id": hex4(vf_device),
        "vf_enabled": bool(control & 0x1),
        "vf_memory_space_enabled": bool(control & 0x8),
        "ari_capable_hierarchy": bool(control & 0x10),
    }


def decode_ari(cfg: ConfigSpace, offset: int) -> Optional[Dict[str, Any]]:
    capability = cfg.u16(offset + 4)
    if capability is None:
        return None
    return {
        "next_function": (capability >> 8) & 0xFF,
        "mfvc_function_groups": bool(capability & 0x1),
        "acs_function_groups": bool(capability & 0x2),
    }


def rebar_sizes(capability: int, control: int) -> List[int]:
    """Supported BAR sizes in bytes: capability bits 4-31 from 1 MiB, control bits 16-31 from 256 TiB."""
    sizes = [1 << (20 + bit - 4) for bit in range(4, 32) if capability & (1 << bit)]
    sizes += [1 << (48 + bit - 16) for bit in range(16, 32) if control & (1 << bit)]
    return sizes


def decode_rebar(cfg: ConfigSpace, offset: int) -> Optional[List[Dict[str, Any]]]:
    first_control = cfg.u32(offset + 8)
    if first_control is None:
        return None
    count = min((first_control >> 5) & 0x7, 6) or 1
    bars: List[Dict[str, Any]] = []
    for index in range(count):
        capability = cfg.u32(offset + 4 + index * 8)
        control = cfg.u32(offset + 8 + index * 8)
        if capability is None or control is None:
            break
        bars.append({
            "bar": control & 0x7,
            "size_bytes": 1 << (20 + ((control >> 8) & 0x3F)),
            "supported_sizes_bytes": rebar_sizes(capability, control),
        })
    return bars


def identity(cfg: ConfigSpace) -> Dict[str, Any]:
    """Vendor, device, class, header type, subsystem IDs from the header (fast path for a full header)."""
    data = cfg.data
    if cfg.size < HEADER_SIZE:
        return short_identity(cfg)
    vendor, device = struct.unpack_from("<HH", data, 0)
    header = data[0x0E]
    header_type = header & 0x7F
    info: Dict[str, Any] = {
        "vendor_id": "%04x" % vendor,
        "device_id": "%04x" % device,
        "class_id": data[0x09:0x0C][::-1].hex(),
        "header_type": HEADER_TYPES.get(header_type, "unknown"),
        "multifunction": bool(header & 0x80),
        "subsystem_vendor_id": None,
        "subsystem_device_id": None,
    }
    if header_type in (0, 2):
        sub_vendor, sub_device = struct.unpack_from("<HH", data, 0x2C if header_type == 0 else 0x40) \
            if cfg.has(0x40 if header_type == 2 else 0x2C, 4) else (None, None)
        info["subsystem_vendor_id"], info["subsystem_device_id"] = hex4(sub_vendor), hex4(sub_device)
    elif header_type == 1:
        info["secondary_bus"] = data[0x19]
        info["subordinate_bus"] = data[0x1A]
    return info


def short_identity(cfg: ConfigSpace) -> Dict[str, Any]:
    """What a header shorter than 64 bytes still tells (each field null when cut off)."""
    class_bytes = cfg.data[0x09:0x0C] if cfg.has(0x09, 3) else None
    header = cfg.u8(0x0E)
    return {
        "vendor_id": hex4(cfg.u16(0x00)),
        "device_id": hex4(cfg.u16(0x02)),
        "class_id": None if class_bytes is None else class_bytes[::-1].hex(),
        "header_type": None if header is None else HEADER_TYPES.get(header & 0x7F, "unknown"),
        "multifunction": None if header is None else bool(header & 0x80),
        "subsystem_vendor_id": None,
        "subsystem_device_id": None,
    }


EXTENDED_DECODERS = (
    ("ats", ECAP_ID_ATS, decode_ats),
    ("pri", ECAP_ID_PRI, decode_pri),
    ("pasid", ECAP_ID_PASID, decode_pasid),
    ("sriov", ECAP_ID_SRIOV, decode_sriov),
    ("ari", ECAP_ID_ARI, decode_ari),
    ("resizable_bar", ECAP_ID_REBAR, decode_rebar),
)


def decode_config(data: Union[bytes, ConfigSpace], capabilities: bool = True) -> Dict[str, Any]:
    """Decode one function's configuration space (bytes, or a ConfigSpace such as OnDemandConfigSpace).

    Returns the identity fields plus ``pcie``, ``acs``, ``ats``, ``pri``,
    ``pasid``, ``sriov``, ``ari`` and ``resizable_bar`` (each ``None`` when
    absent or not readable) and ``config_size`` (bytes available). With
    ``capabilities`` false only what the device model needs is decoded (the
    PCIe capability and SR-IOV, MODEL_EXTENDED_CAPS); the other capabilities
    are ``None`` and their registers are not read.
    """
    cfg = data if isinstance(data, ConfigSpace) else ConfigSpace(data)
    info = identity(cfg)
    header_type = {"normal": 0, "bridge": 1, "cardbus": 2}.get(info["header_type"] or "", 0)
    caps = standard_capabilities(cfg, header_type)
    if header_type == 1 and CAP_ID_SUBSYSTEM_VENDOR in caps:
        ssvid = caps[CAP_ID_SUBSYSTEM_VENDOR]
        info["subsystem_vendor_id"] = hex4(cfg.u16(ssvid + 4))
        info["subsystem_device_id"] = hex4(cfg.u16(ssvid + 6))
    pcie = decode_express(cfg, caps[CAP_ID_EXPRESS]) if CAP_ID_EXPRESS in caps else None
    info["pcie"] = pcie
    decoded = None if capabilities else MODEL_EXTENDED_CAPS
    ecaps = extended_capabilities(cfg, decoded) if pcie is not None else {}
    if decoded is not None:
        ecaps = {cap_id: found for cap_id, found in ecaps.items() if cap_id in decoded}
    info["config_size"] = cfg.size
    acs = ecaps.get(ECAP_ID_ACS)
    info["acs"] = None
    if acs is not None:
        vendor = cfg.u16(0x00) or 0
        device = cfg.u16(0x02) or 0
        quirk = uses_intel_pch_acs_quirk(vendor, device, pcie["port_type"] if pcie else None)
        info["acs"] = decode_acs(cfg, acs[0], quirk)
    for key, cap_id, decoder in EXTENDED_DECODERS:
        found = ecaps.get(cap_id)
        info[key] = decoder(cfg, found[0]) if found is not None else None
    return info


def decode_model_config(data: Union[bytes, ConfigSpace]) -> Dict[str, Any]:
    """decode_config with only what the device model needs (``capabilities`` false)."""
    return decode_config(data, capabilities=False)
