# Copyright: contributors to confidential_gpu.host
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""ACS on the bridges above selected devices: report, confidential check, P2P boot arguments.

Planning is a pure function of the topology that
:func:`pci_topology.read_topology` returns, plus the current kernel command
line:

- every bridge on the ``path`` of a selected device is judged the way the
  kernel judges it when it builds IOMMU groups (``pci_acs_enabled``): root and
  switch downstream ports need Source Validation, Request Redirect, Completion
  Redirect and Upstream Forwarding enabled (a flag the port does not implement
  counts as hard-wired on), upstream ports need nothing, PCI bridges never
  isolate;
- profile ``confidential`` turns every shortfall into a violation with its fix;
- profile ``p2p`` finds the switch downstream ports that peer-to-peer traffic
  between two selected devices crosses and writes the ``pci=disable_acs_redir=``
  or ``pci=config_acs=`` boot argument for them, merged with the other ``pci=``
  options already on the command line.

The optional runtime write (labs only) sets the ACS control register through
sysfs ``config``; IOMMU groups are computed at boot, so it regroups nothing.

Standard library only: this runs on target hosts with Python >= 3.8.
"""

from __future__ import annotations

import os
import re
import struct
from itertools import combinations
from typing import Any, Callable, Dict, List, NamedTuple, Optional, Sequence, Tuple

from ansible_collections.confidential_gpu.host.plugins.module_utils.acs_quirks import (
    CR,
    DT,
    EC,
    ISOLATED,
    NOT_ISOLATED,
    REGISTERS,
    REQ_ACS_FLAGS,
    RR,
    SV,
    TB,
    UF,
    UNTIL_IOMMU,
    QuirkDevice,
    QuirkVerdict,
    acs_quirk,
)
from ansible_collections.confidential_gpu.host.plugins.module_utils.cc_host import kernel_version
from ansible_collections.confidential_gpu.host.plugins.module_utils.cmdline_tokens import parse_cmdline
from ansible_collections.confidential_gpu.host.plugins.module_utils.host_write import SysfsWriteError, write_attribute
from ansible_collections.confidential_gpu.host.plugins.module_utils.pci_config import (
    ACS_FLAGS,
    ECAP_ID_ACS,
    EXTENDED_SIZE,
    LEGACY_SIZE,
    ConfigSpace,
    extended_capabilities,
    flag_dict,
)
from ansible_collections.confidential_gpu.host.plugins.module_utils.pci_device import ROLES, Selector, invalid_filters
from ansible_collections.confidential_gpu.host.plugins.module_utils.pci_topology import (
    PCI_DEVICES,
    PROC_CMDLINE,
    common_bridge,
    hex_id,
    read_config,
    read_host_facts,
    read_topology,
    unshape_devices,
)
from ansible_collections.confidential_gpu.host.plugins.module_utils.sysfs import HostRoot

PROFILES = ("report", "confidential", "p2p")
# direct_translated: the Kata VRA's way (docs/design/kata-vra.md): ATS on the endpoints, ACS Direct Translated P2P
# on the switch downstream ports, redirect kept, so IOMMU groups stay as they are.
P2P_MODES = ("direct_translated", "disable_acs_redir", "config_acs")
DEFAULT_P2P_MODE = "direct_translated"
DEVICE_FORMATS = ("address", "path")
# Selected when no filter is given: what this collection passes through or runs P2P between.
DEFAULT_ROLES = ("gpu", "nvswitch", "nic")

ACS_BITS = SV | TB | RR | CR | UF | EC | DT
# The kernel's REQ_ACS_FLAGS: what a port must enable for the devices below it to get their own groups.
ISOLATION_BITS = REQ_ACS_FLAGS
# What p2p_mode direct_translated forces on: Direct Translated P2P plus the isolation flags.  config_acs takes an
# 'x' (keep) bit from the value firmware left, not from what the kernel enabled (drivers/pci/pci.c
# __pci_config_acs: ctrl = (fw_ctrl & ~mask) | (flags & mask)), so the isolation flags must be written as 1.
DIRECT_TRANSLATED_BITS = DT | REQ_ACS_FLAGS
# Linux 6.11 added pci=config_acs= (drivers/pci/pci.c); older kernels ignore it as an unknown pci= option.
CONFIG_ACS_SINCE = (6, 11)
# What pci=disable_acs_redir= clears (P2P request and completion redirect, egress control).
REDIRECT_BITS = RR | CR | EC
# config_acs flags, most significant bit (Direct Translated P2P) first: clear RR, CR and EC, keep the rest.
DEFAULT_CONFIG_ACS_FLAGS = "x0x00xx"

ACS_OPTION_PREFIXES = ("disable_acs_redir=", "config_acs=")
# Out-of-tree kernel patch that makes the kernel pretend ports have ACS.
ACS_OVERRIDE_KEY = "pcie_acs_override"

PORTS_NEEDING_ACS = ("root_port", "downstream_port")
QUIRK_VERDICTS = {ISOLATED: "quirk", NOT_ISOLATED: "quirk_not_isolating", UNTIL_IOMMU: "quirk_inactive"}
# Port types the kernel never counts as isolating (pci_acs_enabled returns false).
NEVER_ISOLATING = ("pcie_to_pci_bridge", "pci_to_pcie_bridge", "rc_event_collector")

NOT_REGROUPED = ("runtime ACS writes do not regroup devices: IOMMU groups are computed at boot, so the groups "
                 "stay as they were until a reboot with the matching boot arguments (runtime_write is for labs)")

FLAGS_RE = re.compile(r"^[01x]{1,7}$")


class PcieAcsError(Exception):
    """The request cannot be carried out; the message names the value or device and the fix."""


class Request(NamedTuple):
    """Validated module input."""

    profile: str
    selector: Selector
    p2p_mode: str
    config_acs_flags: str
    device_format: str
    current_cmdline: Optional[str]
    runtime_write: bool


# --------------------------------------------------------------------------
# Input
# --------------------------------------------------------------------------

def normalize_flags(text: str) -> str:
    """A config_acs flag string in lower case, padded with ``x`` (keep) to all 7 bits."""
    return text.strip().lower().rjust(7, "x")


def flag_bits(flags: str) -> Tuple[int, int]:
    """(mask, value) of a config_acs flag string; the last character is bit 0 (Source Validation)."""
    mask = value = 0
    for shift, char in enumerate(reversed(flags)):
        if char in "01":
            mask |= 1 << shift
        if char == "1":
            value |= 1 << shift
    return mask, value


def build_request(profile: str, addresses: Sequence[str], pci_ids: Sequence[str], roles: Sequence[str],
                  p2p_mode: str = DEFAULT_P2P_MODE, config_acs_flags: str = DEFAULT_CONFIG_ACS_FLAGS,
                  device_format: str = "address", current_cmdline: Optional[str] = None,
                  runtime_write: bool = False, iommu_groups: Sequence[int] = ()) -> Request:
    """Check every input before anything is read; all problems in one :class:`PcieAcsError`."""
    problems = invalid_filters(addresses, pci_ids)
    problems += ["role %r is not one of %s" % (value, ", ".join(ROLES)) for value in roles if value not in ROLES]
    for name, value, choices in (("profile", profile, PROFILES), ("p2p_mode", p2p_mode, P2P_MODES),
                                 ("device_format", device_format, DEVICE_FORMATS)):
        if value not in choices:
            problems.append("%s %r is not one of %s" % (name, value, ", ".join(choices)))
    if not FLAGS_RE.match(config_acs_flags.strip().lower()):
        problems.append("config_acs_flags %r is not 1 to 7 characters of 0, 1 and x, most significant bit first "
                        "(Direct Translated P2P, Egress Control, Upstream Forwarding, Completion Redirect, Request "
                        "Redirect, Translation Blocking, Source Validation), like x0x00xx" % config_acs_flags)
    if runtime_write and profile == "report":
        problems.append("runtime_write needs profile confidential (set the isolation flags) or p2p (clear redirect); "
                        "profile report only reads")
    if problems:
        raise PcieAcsError("invalid input: " + "; ".join(problems))
    return Request(profile, Selector.of(addresses, pci_ids, roles, iommu_groups), p2p_mode,
                   normalize_flags(config_acs_flags), device_format, current_cmdline, runtime_write)


# --------------------------------------------------------------------------
# Selection and bridges
# --------------------------------------------------------------------------

def flag_names(bits: int) -> List[str]:
    return [name for bit, name in ACS_FLAGS if bits & bit]


def select_devices(devices: Sequence[Dict[str, Any]], request: Request) -> List[Dict[str, Any]]:
    """The devices the request names (GPUs, NVSwitches and NICs when it names none); unknown addresses fail."""
    missing, groups = request.selector.unknown(devices)
    if missing:
        raise PcieAcsError("%s not found in %s: give addresses of this host's functions (lspci -D lists them)"
                           % (", ".join(missing), PCI_DEVICES))
    if groups:
        raise PcieAcsError("no IOMMU group %s on this host (see /sys/kernel/iommu_groups)"
                           % ", ".join(str(group) for group in groups))
    return request.selector.or_roles(DEFAULT_ROLES).select(devices)


def port_type(dev: Dict[str, Any]) -> Optional[str]:
    return (dev.get("pcie") or {}).get("port_type")


def isolation_of(kind: Optional[str], acs: Optional[Dict[str, Any]], readable: int,
                 quirk: Optional[QuirkVerdict] = None) -> Tuple[str, int]:
    """(verdict, isolation bits the port implements but has off), the way the kernel's pci_acs_enabled judges.

    ``enabled``, ``partial``, ``disabled`` (ACS present), ``no_acs`` (a root or
    downstream port without it), ``not_needed`` (upstream ports and other
    single-function types), ``pci_bridge`` (never isolates), ``unknown``
    (config space not readable far enough to tell).  A kernel quirk answers
    first, as ``pci_dev_specific_acs_enabled`` does: ``quirk`` (isolated),
    ``quirk_inactive`` (isolated once an IOMMU driver asks for ACS at boot),
    ``quirk_not_isolating``.
    """
    if acs is None and (readable < LEGACY_SIZE or (kind is not None and readable < EXTENDED_SIZE)):
        return "unknown", 0
    if quirk is not None and quirk.outcome != REGISTERS:
        return QUIRK_VERDICTS[quirk.outcome], 0
    if kind is None or kind in NEVER_ISOLATING:
        return "pci_bridge", 0
    if kind not in PORTS_NEEDING_ACS:
        return "not_needed", 0
    if acs is None:
        return "no_acs", 0
    needed = ISOLATION_BITS & acs["capability"]
    missing = needed & ~acs["control"]
    if not missing:
        return "enabled", 0
    return ("disabled" if missing == needed else "partial"), missing


def bridge_entry(bridge: Dict[str, Any], below: List[str], readable: int,
                 quirk: Optional[QuirkVerdict]) -> Dict[str, Any]:
    acs = bridge.get("acs")
    verdict, missing = isolation_of(port_type(bridge), acs, readable, quirk)
    return {
        "address": bridge["address"],
        "vendor_id": bridge.get("vendor_id"),
        "device_id": bridge.get("device_id"),
        "port_type": port_type(bridge),
        "iommu_group": bridge.get("iommu_group"),
        "devices_below": below,
        "acs": None if acs is None else {key: acs[key] for key in (
            "capability", "control", "register_layout", "capabilities", "enabled")},
        "isolation": verdict,
        "missing": flag_names(missing),
        "quirk": None if quirk is None else quirk.function,
    }


def quirk_of(facts: Dict[str, Any], bridge: Dict[str, Any], iommu_on: bool) -> Optional[QuirkVerdict]:
    """The kernel quirk that decides whether this bridge isolates the devices below it (acs_quirks)."""
    multifunction = facts["multifunction"].get(bridge["address"], False)
    return acs_quirk(QuirkDevice(
        vendor=hex_id(bridge.get("vendor_id")), device=hex_id(bridge.get("device_id")), port_type=port_type(bridge),
        has_acs=bridge.get("acs") is not None, multifunction=multifunction,
        on_root_bus=len(bridge.get("path") or ()) == 1, ivrs_table=multifunction and facts["ivrs"], iommu_on=iommu_on))


def describe_bridges(facts: Dict[str, Any], by_address: Dict[str, Dict[str, Any]], selected: Sequence[Dict[str, Any]],
                     iommu_on: bool) -> List[Dict[str, Any]]:
    """Every bridge on the path of a selected device (the device itself excluded), by address."""
    below: Dict[str, List[str]] = {}
    for dev in selected:
        for address in dev["path"][:-1]:
            below.setdefault(address, []).append(dev["address"])
    entries = []
    for address in sorted(below):
        bridge = by_address.get(address, {"address": address})
        readable = EXTENDED_SIZE if bridge.get("acs") else facts["config_sizes"].get(address, 0)
        entries.append(bridge_entry(bridge, below[address], readable, quirk_of(facts, bridge, iommu_on)))
    return entries


def device_entry(dev: Dict[str, Any]) -> Dict[str, Any]:
    return {
        "address": dev["address"],
        "vendor_id": dev["vendor_id"],
        "device_id": dev["device_id"],
        "role": dev["role"],
        "iommu_group": dev["iommu_group"],
        "bridges": dev["path"][:-1],
        "ats": dev.get("ats"),
    }


# --------------------------------------------------------------------------
# Profile confidential
# --------------------------------------------------------------------------

def group_text(topology: Dict[str, Any], group_id: Optional[int]) -> str:
    for group in topology["iommu_groups"]:
        if group["id"] == group_id:
            return "; its IOMMU group %d holds %s" % (group_id, ", ".join(group["devices"]))
    return ""


def what(bridge: Dict[str, Any]) -> str:
    return "%s (%s %s:%s)" % (bridge["address"], bridge["port_type"] or "conventional PCI bridge",
                              bridge["vendor_id"], bridge["device_id"])


def bridge_violation(bridge: Dict[str, Any], topology: Dict[str, Any]) -> Optional[Dict[str, Any]]:
    """The violation a bridge above passthrough devices makes, or None when it isolates them."""
    verdict = bridge["isolation"]
    devices = ", ".join(bridge["devices_below"])
    if verdict in ("partial", "disabled"):
        acs = bridge["acs"]
        msg = ("%s above %s: ACS %s not enabled (capability 0x%04x, control 0x%04x)"
               % (what(bridge), devices, ", ".join(bridge["missing"]), acs["capability"], acs["control"]))
        fix = ("boot with the IOMMU on (role kernel_args: intel_iommu=on for VT-d, amd_iommu=off gone for AMD-Vi), "
               "which makes the kernel enable "
               "source validation, request and completion redirect and upstream forwarding on every port with ACS, "
               "and without a pci=disable_acs_redir= or pci=config_acs= entry for this port; a runtime write "
               "(runtime_write, labs only) sets the bits but regroups nothing")
    elif verdict == "no_acs":
        msg = ("%s above %s has no ACS capability: peer-to-peer requests from the devices below it are not forced "
               "up to the IOMMU, and the kernel merges those devices into the port's IOMMU group%s"
               % (what(bridge), devices, group_text(topology, bridge["iommu_group"])))
        fix = ("move the device to a slot whose root or switch downstream port has ACS, or get firmware that exposes "
               "it; ACS override kernel patches (pcie_acs_override) only pretend isolation")
    elif verdict == "quirk_inactive":
        msg = ("%s above %s isolates the devices below it only through the kernel's %s quirk, which the kernel "
               "turns on at boot when an IOMMU driver asks for ACS; the IOMMU is off now"
               % (what(bridge), devices, bridge["quirk"]))
        fix = ("boot with the IOMMU on (role kernel_args: intel_iommu=on); dmesg then says \"Intel PCH root port ACS "
               "workaround enabled\" for this port")
    elif verdict == "quirk_not_isolating":
        msg = ("%s above %s: the kernel's %s quirk decides for this port and does not count it as isolating "
               "(drivers/pci/quirks.c), so the kernel merges the devices below it into one IOMMU group%s"
               % (what(bridge), devices, bridge["quirk"], group_text(topology, bridge["iommu_group"])))
        fix = "move the device to a slot below a port that isolates it (pcie_acs reports each port's verdict)"
    elif verdict == "pci_bridge":
        msg = ("%s above %s is a PCI bridge: the devices behind it share its requester ID, so ACS cannot isolate them "
               "and they form one IOMMU group" % (what(bridge), devices))
        fix = "put the device in a PCI Express slot that is not behind a PCI or PCI-X bridge"
    elif verdict == "unknown":
        msg = ("%s above %s: its extended configuration space could not be read, so its ACS is unknown"
               % (what(bridge), devices))
        fix = "run the module as root (become: true) on a host whose kernel can read extended config space"
    else:
        return None
    return {"bridge": bridge["address"], "kind": verdict, "missing": bridge["missing"],
            "devices": bridge["devices_below"], "msg": msg, "fix": fix}


def cmdline_violation(options: Dict[str, Any]) -> Optional[Dict[str, Any]]:
    weakening = ["pci=" + option for option in options["acs"]] + options["override"]
    if not weakening:
        return None
    return {
        "bridge": None, "kind": "cmdline", "missing": [], "devices": [],
        "msg": "the kernel command line (%s) weakens ACS at boot: %s" % (options["source"], " ".join(weakening)),
        "fix": ("remove them: role pcie_acs hands kernel_args the arguments to drop (pcie_acs_kernel_args, "
                "pcie_acs_kernel_args_absent); then reboot"),
    }


def clears_at_boot(kind: str, iommu_enabled: bool, cmdline_weakens_acs: bool) -> bool:
    """Will a boot with the IOMMU on and without ACS-weakening arguments end this violation?

    At boot Linux enables Source Validation, Request and Completion Redirect
    and Upstream Forwarding on every port with ACS, but only when an IOMMU
    driver asked for ACS (``pci_request_acs``), then applies
    ``disable_acs_redir=``/``config_acs=``.  So ports with ACS off (partial,
    disabled) and the weakening arguments themselves clear at the next boot
    when the IOMMU is off now or such an argument is in force; a port without
    ACS, a PCI bridge or unreadable config space never do.
    """
    if kind == "cmdline":
        return True
    if kind == "quirk_inactive":
        return not iommu_enabled
    return kind in ("partial", "disabled") and (not iommu_enabled or cmdline_weakens_acs)


# --------------------------------------------------------------------------
# Profile p2p
# --------------------------------------------------------------------------

def p2p_ports(selected: Sequence[Dict[str, Any]], by_address: Dict[str, Dict[str, Any]],
              notes: List[str]) -> List[str]:
    """Switch downstream ports that P2P between two selected devices enters from below.

    Request Redirect acts where a request enters the switch: for two devices
    whose deepest common bridge is a switch upstream port, the two downstream
    ports of that switch on their paths.  Pairs that meet only in the root
    complex are noted; switch ACS does not govern them.
    """
    ports = set()
    root_complex_pairs = 0
    for left, right in combinations(selected, 2):
        common = common_bridge(left["path"], right["path"])
        if common is None:
            root_complex_pairs += 1
            continue
        if port_type(by_address.get(common, {})) != "upstream_port":
            continue
        depth = left["path"].index(common) + 1
        for dev in (left, right):
            port = dev["path"][depth]
            if port != dev["address"] and port_type(by_address.get(port, {})) == "downstream_port":
                ports.add(port)
    if root_complex_pairs:
        notes.append("%d pair(s) of selected devices meet only in the root complex (no switch above both): switch "
                     "ACS does not govern their peer-to-peer traffic, so no port is named for them"
                     % root_complex_pairs)
    if len(selected) < 2:
        notes.append("p2p needs at least two selected devices below one switch; %d selected" % len(selected))
    return sorted(ports)


def ports_implementing(bits: int, lacking: str, ports: Sequence[str], by_address: Dict[str, Dict[str, Any]],
                       notes: List[str]) -> List[str]:
    """The ports whose ACS capability implements one of ``bits`` (the only ones an argument can change); each
    other port gets a note (``lacking`` says what it does not implement and what follows)."""
    kept = []
    for address in ports:
        acs = by_address[address].get("acs")
        if acs is None:
            notes.append("%s has no ACS: nothing redirects peer-to-peer traffic there, so it needs no argument"
                         % address)
        elif not acs["capability"] & bits:
            notes.append("%s %s" % (address, lacking))
        else:
            kept.append(address)
    return kept


def direct_translated_flags(capability: int) -> str:
    """config_acs flags for one port: 1 for Direct Translated P2P and each isolation flag it implements, x else.

    ``x`` would take the bit from firmware's value, not the kernel's, so the
    isolation flags are written out; the bits it does not implement are
    hard-wired to 0 and stay ``x``.
    """
    return "".join("1" if capability & DIRECT_TRANSLATED_BITS & (1 << bit) else "x" for bit in range(6, -1, -1))


def port_flags(address: str, request: Request, by_address: Dict[str, Dict[str, Any]]) -> str:
    if request.p2p_mode == "direct_translated":
        return direct_translated_flags(by_address[address]["acs"]["capability"])
    return request.config_acs_flags


def device_spec(dev: Dict[str, Any], device_format: str) -> str:
    """<pci_dev> as the kernel reads it: ``DDDD:BB:DD.F`` or the path form ``DDDD:BB:DD.F/DD.F/...``."""
    if device_format == "address":
        return dev["address"]
    return "/".join([dev["path"][0]] + [address.rsplit(":", 1)[1] for address in dev["path"][1:]])


def acs_option(ports: Sequence[str], request: Request, by_address: Dict[str, Dict[str, Any]]) -> Optional[str]:
    """The pci= option for the ports: ``disable_acs_redir=A;B`` or ``config_acs=FLAGS@A;FLAGS@B``."""
    if not ports:
        return None
    if request.p2p_mode == "disable_acs_redir":
        return "disable_acs_redir=" + ";".join(device_spec(by_address[address], request.device_format)
                                               for address in ports)
    return "config_acs=" + ";".join("%s@%s" % (port_flags(address, request, by_address),
                                               device_spec(by_address[address], request.device_format))
                                    for address in ports)


def direct_translated_warnings(ports: Sequence[str], by_address: Dict[str, Dict[str, Any]],
                               selected: Sequence[Dict[str, Any]], options: Dict[str, Any]) -> List[str]:
    """What keeps Direct Translated P2P from working: endpoints without ATS, pci=noats, TB or EC left on."""
    warnings = []
    below = [dev for dev in selected if set(dev["path"]) & set(ports)]
    without = [dev["address"] for dev in below if dev["ats"] is None]
    if without:
        warnings.append("%s: no ATS capability, so their peer-to-peer requests are untranslated and still go up "
                        "through the IOMMU; Direct Translated P2P only helps endpoints with ATS" % ", ".join(without))
    if "noats" in options["current"]:
        warnings.append("pci=noats is on the command line: the kernel leaves ATS off on every device, so no request "
                        "is ever translated and Direct Translated P2P changes nothing; drop noats")
    for address in ports:
        control = by_address[address]["acs"]["control"]
        if control & (TB | EC):
            warnings.append("%s has %s on, which %s translated peer-to-peer requests; config_acs keeps what firmware "
                            "set there" % (address, ", ".join(flag_names(control & (TB | EC))),
                                           "blocks" if control & TB else "may block"))
    return warnings


def config_acs_kernel_warning(os_release: Optional[str], request: Request) -> List[str]:
    if request.p2p_mode == "disable_acs_redir":
        return []
    release = kernel_version(os_release)
    if release is None or release >= CONFIG_ACS_SINCE:
        return []
    return ["the running kernel is %d.%d: pci=config_acs= exists from Linux 6.11 on, and older kernels ignore it "
            "(\"PCI: Unknown option\"), so ACS stays as it is (isolated, peer-to-peer through the root complex) "
            "until the host boots 6.11 or later" % release]


def config_acs_warnings(ports: Sequence[str], request: Request, by_address: Dict[str, Dict[str, Any]],
                        selected: Sequence[Dict[str, Any]]) -> List[str]:
    """Flags set to 1 that a port does not implement; Direct Translated P2P without ATS below."""
    if request.p2p_mode != "config_acs":
        return []
    mask, value = flag_bits(request.config_acs_flags)
    warnings = []
    for address in ports:
        lacking = value & mask & ~by_address[address]["acs"]["capability"]
        if lacking:
            warnings.append("config_acs_flags %s enables %s, which %s does not implement"
                            % (request.config_acs_flags, ", ".join(flag_names(lacking)), address))
    if value & DT:
        below = [dev["address"] for dev in selected if set(dev["path"]) & set(ports)
                 and not (dev["ats"] or {}).get("enabled")]
        if below:
            warnings.append("config_acs_flags enables Direct Translated P2P, which only helps devices that use ATS; "
                            "ATS is absent or off on %s" % ", ".join(below))
    return warnings


# --------------------------------------------------------------------------
# Kernel command line
# --------------------------------------------------------------------------

def current_options(proc_cmdline: Optional[str], given: Optional[str]) -> Dict[str, Any]:
    """The ``pci=`` options (split at commas) and ACS overrides of the command line given, else /proc/cmdline's."""
    text: Optional[str]
    if given is not None:
        text, source = given, "current_cmdline"
    else:
        text, source = proc_cmdline, PROC_CMDLINE
    options: List[str] = []
    override: List[str] = []
    for arg in parse_cmdline(text)[0] if text is not None else []:
        name, value = arg["key"] or "", arg["value"]  # parse_cmdline always sets a key
        key = name.replace("-", "_")
        if key == "pci" and value:
            options += [option for option in value.split(",") if option]
        elif key == ACS_OVERRIDE_KEY:
            override.append(name if value is None else "%s=%s" % (name, value))
    return {
        "source": source if text is not None else None,
        "current": options,
        "kept": [option for option in options if not option.startswith(ACS_OPTION_PREFIXES)],
        "acs": [option for option in options if option.startswith(ACS_OPTION_PREFIXES)],
        "override": override,
    }


def kernel_arguments(options: Dict[str, Any], option: Optional[str],
                     drop_override: bool) -> Tuple[List[str], List[str]]:
    """(arguments to have, keys to remove): one ``pci=`` with the other options kept and ours last.

    ``pci=`` is one key to the boot configuration, so it is written whole;
    without an ACS option to add or remove, ``pci=`` is left alone.
    """
    absent = [ACS_OVERRIDE_KEY] if drop_override and options["override"] else []
    if option is not None:
        return ["pci=" + ",".join(options["kept"] + [option])], absent
    if not options["acs"]:
        return [], absent
    if options["kept"]:
        return ["pci=" + ",".join(options["kept"])], absent
    return [], absent + ["pci"]


# --------------------------------------------------------------------------
# Runtime write (labs)
# --------------------------------------------------------------------------

class Write(NamedTuple):
    address: str
    offset: int
    width: int
    before: int
    after: int


def wanted_control(bridge: Dict[str, Any], request: Request) -> int:
    """The ACS control value the profile asks of a port (only bits it implements are set)."""
    acs = bridge["acs"]
    control, capability = acs["control"], acs["capability"]
    if request.profile == "confidential":
        return control | (ISOLATION_BITS & capability)
    if request.p2p_mode == "disable_acs_redir":
        return control & ~REDIRECT_BITS
    if request.p2p_mode == "direct_translated":
        return control | (DIRECT_TRANSLATED_BITS & capability)
    mask, value = flag_bits(request.config_acs_flags)
    return (control & ~mask) | (value & mask & capability & ACS_BITS)


def control_offset(host: HostRoot, address: str, layout: str, configs: Dict[str, bytes]) -> int:
    if address not in configs or len(configs[address]) < EXTENDED_SIZE:
        configs[address] = read_config(host, address)
    found = extended_capabilities(ConfigSpace(configs[address])).get(ECAP_ID_ACS)
    if found is None:
        raise PcieAcsError("%s: the ACS capability vanished from %s/%s/config between two reads"
                           % (address, PCI_DEVICES, address))
    return found[0] + (8 if layout == "intel_pch_dword" else 6)


def plan_writes(host: HostRoot, bridges: Sequence[Dict[str, Any]], targets: Sequence[str], request: Request,
                configs: Dict[str, bytes]) -> List[Write]:
    writes = []
    for bridge in bridges:
        if bridge["address"] not in targets or bridge["acs"] is None:
            continue
        after = wanted_control(bridge, request)
        if after != bridge["acs"]["control"]:
            layout = bridge["acs"]["register_layout"]
            offset = control_offset(host, bridge["address"], layout, configs)
            writes.append(Write(bridge["address"], offset, 4 if layout == "intel_pch_dword" else 2,
                                bridge["acs"]["control"], after))
    return writes


def write_control(host: HostRoot, write: Write, timeout: float = 10.0) -> int:
    """Write one ACS control register through sysfs ``config`` (the one writer, at an offset); what reads back."""
    path = "%s/%s/config" % (PCI_DEVICES, write.address)
    fmt = "<I" if write.width == 4 else "<H"
    try:
        data = write_attribute(host, path, struct.pack(fmt, write.after), timeout, write.offset, write.width)
    except SysfsWriteError as error:
        raise PcieAcsError("cannot write the ACS control register of %s (%s at offset 0x%x): %s; runtime_write needs "
                           "root (become: true)" % (write.address, path, write.offset, error.reason)) from None
    return struct.unpack(fmt, data)[0] if len(data) == write.width else -1


def apply_control(bridge: Dict[str, Any], control: int) -> None:
    """Show a bridge as it is after a write (the verdict is judged again)."""
    bridge["acs"]["control"] = control
    bridge["acs"]["enabled"] = flag_dict(control)
    verdict, missing = isolation_of(bridge["port_type"], bridge["acs"], EXTENDED_SIZE)
    bridge["isolation"], bridge["missing"] = verdict, flag_names(missing)


def run_writes(host: HostRoot, bridges: Sequence[Dict[str, Any]], writes: Sequence[Write], check_mode: bool,
               warnings: List[str]) -> List[Dict[str, Any]]:
    by_address = {bridge["address"]: bridge for bridge in bridges}
    changes = []
    for write in writes:
        now = write.after if check_mode else write_control(host, write)
        if now != write.after:
            warnings.append("%s: wrote ACS control 0x%04x, reads back 0x%04x" % (write.address, write.after, now))
        apply_control(by_address[write.address], now if now >= 0 else write.after)
        changes.append({"address": write.address, "offset": write.offset, "width": write.width,
                        "before": write.before, "after": now})
    return changes


def write_diff(changes: Sequence[Dict[str, Any]]) -> Dict[str, str]:
    return {
        "before": "".join("%s acs_control=0x%04x\n" % (c["address"], c["before"]) for c in changes),
        "after": "".join("%s acs_control=0x%04x\n" % (c["address"], c["after"]) for c in changes),
        "before_header": "ACS control registers",
        "after_header": "ACS control registers",
    }


# --------------------------------------------------------------------------
# The whole plan
# --------------------------------------------------------------------------

def plan_boot(request: Request, selected: Sequence[Dict[str, Any]], by_address: Dict[str, Dict[str, Any]],
              options: Dict[str, Any], notes: List[str], warnings: List[str]) -> Tuple[List[str], List[str], List[str]]:
    """(p2p ports, kernel_args, kernel_args_absent) for the profile."""
    if request.profile == "report":
        return [], [], []
    ports: List[str] = []
    if request.profile == "p2p" and request.p2p_mode == "direct_translated":
        ports = ports_implementing(DT, "does not implement ACS Direct Translated P2P: translated requests keep going "
                                   "up through the root complex there (isolation unchanged)",
                                   p2p_ports(selected, by_address, notes), by_address, notes)
        if ports:
            warnings += direct_translated_warnings(ports, by_address, selected, options)
            warnings.append("profile p2p enables ACS Direct Translated P2P on %s at the next boot, with request and "
                            "completion redirect kept, so IOMMU groups stay as they are; requests a device marks as "
                            "translated then reach its peers without the IOMMU's check, so do not give these devices "
                            "to confidential guests" % ", ".join(ports))
    elif request.profile == "p2p":
        ports = ports_implementing(REDIRECT_BITS, "implements neither request nor completion redirect nor egress "
                                   "control: nothing to turn off", p2p_ports(selected, by_address, notes),
                                   by_address, notes)
        warnings += config_acs_warnings(ports, request, by_address, selected)
        if ports:
            warnings.append("profile p2p turns ACS redirect off on %s at the next boot: the devices below these ports "
                            "lose their isolation from each other; do not give them to confidential guests"
                            % ", ".join(ports))
    option = acs_option(ports, request, by_address)
    if options["source"] is None:
        warnings.append("%s could not be read: the pci= options the host boots with are unknown, so they are neither "
                        "checked nor kept in the pci= argument; pass current_cmdline" % PROC_CMDLINE)
    elif options["acs"] and option not in options["acs"]:
        notes.append("%s the ACS option(s) on the current command line: %s"
                     % ("removing" if option is None else "replacing", ", ".join(options["acs"])))
    args, absent = kernel_arguments(options, option, request.profile == "confidential")
    if options["kept"] and any(arg.startswith("pci=") for arg in args):
        notes.append("other pci= options kept in the pci= argument: %s" % ",".join(options["kept"]))
    return ports, args, absent


Writer = Callable[[List[Dict[str, Any]], List[str], List[str]], List[Dict[str, Any]]]


def plan_from_facts(topology: Dict[str, Any], facts: Dict[str, Any], request: Request,
                    write: Optional[Writer] = None) -> Dict[str, Any]:
    """The result, from the topology and :func:`read_host_facts` alone (the module's, or discovery's of the same
    run); ``write`` (runtime_write) changes ACS control registers before the violations are judged."""
    by_address = {dev["address"]: dev for dev in topology["devices"]}
    selected = select_devices(topology["devices"], request)
    iommu_enabled = any(dev["iommu_group"] is not None for dev in topology["devices"])
    bridges = describe_bridges(facts, by_address, selected, iommu_enabled)
    notes: List[str] = []
    warnings: List[str] = []
    if not selected:
        notes.append("no device matches the selection: nothing to judge")
    options = current_options(facts["cmdline"], request.current_cmdline)
    ports, args, absent = plan_boot(request, selected, by_address, options, notes, warnings)
    if ports:
        warnings += config_acs_kernel_warning(facts["os_release"], request)
    changes = write(bridges, ports, warnings) if write is not None else []
    violations: List[Dict[str, Any]] = []
    if request.profile == "confidential":
        found = [bridge_violation(bridge, topology) for bridge in bridges] + [cmdline_violation(options)]
        violations = [violation for violation in found if violation is not None]
        weakened = any(violation["kind"] == "cmdline" for violation in violations)
        for violation in violations:
            violation["clears_at_boot"] = clears_at_boot(violation["kind"], iommu_enabled, weakened)
    return {
        "changed": bool(changes),
        "profile": request.profile,
        "devices": [device_entry(dev) for dev in selected],
        "bridges": bridges,
        "violations": violations,
        "iommu_enabled": iommu_enabled,
        "p2p_ports": ports,
        "kernel_args": args,
        "kernel_args_absent": absent,
        "pci_options": {key: options[key] for key in ("source", "current", "kept", "acs", "override")},
        "runtime_changes": changes,
        "notes": notes,
        "warnings": warnings,
        "diff": write_diff(changes),
    }


def plan_from_discovery(result: Dict[str, Any], request: Request) -> Dict[str, Any]:
    """:func:`plan_from_facts` on a result of pci_topology_info gathered with ``[all, acs]`` (role discovery's, with
    cc_host too): the plan the module would make on that host then, without reading it again."""
    acs, devices = result.get("acs"), result.get("devices")
    if not isinstance(acs, dict) or not isinstance(devices, list) or "iommu_groups" not in result:
        raise PcieAcsError("give the result of confidential_gpu.host.pci_topology_info gathered with gather_subset "
                           "[all, acs]: it lacks %s" % ("acs" if not isinstance(acs, dict) else "devices"
                                                        if not isinstance(devices, list) else "iommu_groups"))
    if acs.get("functions") != len(devices):
        raise PcieAcsError("the pci_topology_info result holds %d of the host's %s functions (selected by addresses, "
                           "pci_ids, roles or iommu_groups): the plan needs every one"
                           % (len(devices), acs.get("functions")))
    if any("pcie" not in dev for dev in devices):
        raise PcieAcsError("the pci_topology_info result was gathered without capabilities: give gather_subset "
                           "[all, acs]")
    topology = {"devices": unshape_devices(devices), "iommu_groups": result["iommu_groups"]}
    return plan_from_facts(topology, acs, request)


def runtime_writer(host: HostRoot, request: Request, check_mode: bool) -> Writer:
    """runtime_write: set the profile's ACS control bits on the ports it names, through sysfs ``config``."""
    def write(bridges: List[Dict[str, Any]], ports: List[str], warnings: List[str]) -> List[Dict[str, Any]]:
        targets = ports if request.profile == "p2p" else [
            bridge["address"] for bridge in bridges if bridge["port_type"] in PORTS_NEEDING_ACS]
        writes = plan_writes(host, bridges, targets, request, {})
        if writes and not check_mode and host.root == "/" and os.geteuid() != 0:
            raise PcieAcsError("runtime_write would change the ACS control register of %s: that needs root "
                               "(become: true)" % ", ".join(write.address for write in writes))
        changes = run_writes(host, bridges, writes, check_mode, warnings)
        if changes:
            warnings.append(NOT_REGROUPED)
        return changes
    return write


def plan(host: HostRoot, request: Request, check_mode: bool) -> Dict[str, Any]:
    """Read the topology once and return the module's result (without ``warnings`` from ``host``)."""
    topology = read_topology(host)
    facts = read_host_facts(host, topology["devices"], select_devices(topology["devices"], request))
    return plan_from_facts(topology, facts, request,
                           runtime_writer(host, request, check_mode) if request.runtime_write else None)
