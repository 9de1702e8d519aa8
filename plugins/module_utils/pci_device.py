# Copyright: contributors to confidential_gpu.host
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The PCI device model every module and the Kata plan share: kinds, roles, one selector, groups, viability.

A device is a dict in ``pci_topology_info``'s format.  Its ``kind`` is decided
once, when the topology is read (:func:`function_kind`):

- ``host_only``: a host bridge (class 0600) or ISA/LPC bridge (0601), chipset
  functions the host cannot give away;
- ``bridge``: a header that is not type 0 (PCI-to-PCI bridge, PCIe port,
  CardBus bridge).  VFIO's own test: up to Linux 5.18
  ``vfio_dev_driver_allowed()`` in drivers/vfio/vfio.c accepted any driver on
  a function with ``pdev->hdr_type != PCI_HEADER_TYPE_NORMAL``, "PCI
  interconnect devices, ie. bridges".  Without a readable header the class
  decides (0604 PCI bridge, 0607 CardBus, 0609 semi-transparent);
- ``vf``: an SR-IOV virtual function (it has a ``physfn``);
- ``endpoint``: anything else.

Bridges and host-only functions stay with the host: a guest gets the other
members of an IOMMU group (Kata's ``GetAllVFIODevicesFromIOMMUGroup`` in
src/runtime/pkg/device/drivers/utils.go, tags 3.26.0 to 4.1.0, skips host
bridges 0600 and PCI bridges 0604 the same way).

The selection rule (:class:`Selector`), the same in every module: criteria of
one dimension add up, the two dimensions narrow each other.  *What* a function
is: any given role or ``vendor:device`` ID; *where* it is: any given address or
IOMMU group.  A function is selected when it matches the *what* criteria (or
none are given) and the *where* criteria (or none are given).  Modules that
hand functions to a guest never pick a bridge or host-only function unless its
address is named.

Standard library only: this runs on target hosts with Python >= 3.8.
"""

from __future__ import annotations

import re
from typing import Any, Dict, List, NamedTuple, Optional, Sequence, Tuple

ADDRESS_RE = re.compile(r"^[0-9a-f]{4,}:[0-9a-f]{2}:[0-9a-f]{2}\.[0-7]$")
# What users may write: the domain is optional (normalize_address adds 0000).
ADDRESS_INPUT_RE = re.compile(r"^([0-9a-f]{4,}:)?[0-9a-f]{2}:[0-9a-f]{2}\.[0-7]$")
PCI_ID_RE = re.compile(r"^[0-9a-f]{4}:([0-9a-f]{4}|\*)$")

ROLES = ("gpu", "nvswitch", "nic", "bridge", "storage", "other")
NVIDIA = "10de"
ENDPOINT, BRIDGE, HOST_ONLY, VF = "endpoint", "bridge", "host_only", "vf"
KINDS = (ENDPOINT, BRIDGE, HOST_ONLY, VF)
# Chipset functions a host cannot give away: host bridge, ISA/LPC bridge.
HOST_ONLY_CLASSES = {"0600": "a host bridge", "0601": "an ISA/LPC bridge"}
# Bridge classes, for a function whose header type could not be read: PCI bridge, CardBus, semi-transparent.
BRIDGE_CLASSES = ("0604", "0607", "0609")
# Drivers under which VFIO accepts a group member (Linux: vfio_dev_driver_allowed).
VFIO_DRIVERS = ("vfio-pci", "pci-stub")
# Drivers VFIO accepts on a bridge in a group it opens, or none: since Linux 5.19 the IOMMU core's DMA ownership
# decides (commits 31076af0cb00 "vfio: Remove use of vfio_group_viable()", c7d469849747 "PCI: portdrv: Set
# driver_managed_dma", 18c7a349d072 "PCI: pci_stub: Set driver_managed_dma").
GROUP_SAFE_BRIDGE_DRIVERS = ("pcieport", "pci-stub", "vfio-pci")
# The options of every selecting module (doc fragment device_selection documents them), combined by Selector.
SELECTION_OPTIONS: Dict[str, Dict[str, Any]] = {
    "addresses": {"type": "list", "elements": "str", "default": []},
    "pci_ids": {"type": "list", "elements": "str", "default": []},
    "roles": {"type": "list", "elements": "str", "default": [], "choices": list(ROLES)},
    "iommu_groups": {"type": "list", "elements": "int", "default": []},
}


def device_role(vendor_id: Optional[str], class_id: Optional[str]) -> str:
    """gpu, nvswitch, nic, bridge, storage or other, from vendor and class."""
    if not class_id:
        return "other"
    base, sub = class_id[:2], class_id[:4]
    if vendor_id == NVIDIA and sub in ("0300", "0302"):
        return "gpu"
    if vendor_id == NVIDIA and sub == "0680":
        return "nvswitch"
    return {"02": "nic", "06": "bridge", "01": "storage"}.get(base, "other")


def function_kind(class_id: Optional[str], header_type: Optional[str], physfn: Optional[str]) -> str:
    """endpoint, bridge, host_only or vf, from class, header type (None: not read) and the PF link."""
    sub = (class_id or "")[:4]
    if sub in HOST_ONLY_CLASSES:
        return HOST_ONLY
    if header_type in ("bridge", "cardbus") or (header_type in (None, "unknown") and sub in BRIDGE_CLASSES):
        return BRIDGE
    return VF if physfn else ENDPOINT


def kind_of(dev: Dict[str, Any]) -> str:
    """A device's kind: as read (``kind``), or from its class for a topology of an older release."""
    return dev.get("kind") or function_kind(dev.get("class_id"), None, dev.get("physfn"))


def is_bridge(dev: Dict[str, Any]) -> bool:
    return kind_of(dev) == BRIDGE


def stays_with_host(dev: Dict[str, Any]) -> bool:
    """Bridges and host-only functions: never handed to a guest."""
    return kind_of(dev) in (BRIDGE, HOST_ONLY)


def normalize_address(address: str) -> str:
    """Lower-case ``DDDD:BB:DD.F``; a missing domain means 0000."""
    address = address.strip().lower()
    return "0000:" + address if address.count(":") == 1 else address


def invalid_filters(addresses: Sequence[str], pci_ids: Sequence[str]) -> List[str]:
    """A readable problem for every address and vendor:device filter that is not well formed."""
    problems = ["address %r is not DDDD:BB:DD.F or BB:DD.F (hex, like 0000:3b:00.0)" % value
                for value in addresses if not ADDRESS_INPUT_RE.match(value.strip().lower())]
    problems += ["pci_id %r is not vendor:device in hex (like 10de:2330 or 10de:*)" % value
                 for value in pci_ids if not PCI_ID_RE.match(value.strip().lower())]
    return problems


def id_matches(dev: Dict[str, Any], wanted: str) -> bool:
    """``vendor:device`` equal, or ``vendor:*`` and the vendor equal."""
    if wanted.endswith(":*"):
        return dev.get("vendor_id") == wanted[:-2]
    return "%s:%s" % (dev.get("vendor_id"), dev.get("device_id")) == wanted


class Selector(NamedTuple):
    """Normalized criteria (see the module docstring for the rule)."""

    addresses: Tuple[str, ...] = ()
    pci_ids: Tuple[str, ...] = ()
    roles: Tuple[str, ...] = ()
    iommu_groups: Tuple[int, ...] = ()

    @classmethod
    def of(cls, addresses: Sequence[str] = (), pci_ids: Sequence[str] = (), roles: Sequence[str] = (),
           iommu_groups: Sequence[int] = ()) -> Selector:
        return cls(tuple(map(normalize_address, addresses)), tuple(i.strip().lower() for i in pci_ids),
                   tuple(roles), tuple(iommu_groups))

    def empty(self) -> bool:
        return not (self.addresses or self.pci_ids or self.roles or self.iommu_groups)

    def or_roles(self, roles: Sequence[str]) -> Selector:
        """This selector, or one of ``roles`` when it names nothing (a module's default selection)."""
        return Selector(roles=tuple(roles)) if self.empty() else self

    def matches(self, dev: Dict[str, Any]) -> bool:
        what = not (self.roles or self.pci_ids) or dev.get("role") in self.roles \
            or any(id_matches(dev, wanted) for wanted in self.pci_ids)
        where = not (self.addresses or self.iommu_groups) or dev.get("address") in self.addresses \
            or dev.get("iommu_group") in self.iommu_groups
        return what and where

    def select(self, devices: Sequence[Dict[str, Any]], to_guest: bool = False) -> List[Dict[str, Any]]:
        """The matching devices in their order; ``to_guest``: bridges and host-only ones only when named."""
        return [dev for dev in devices if self.matches(dev)
                and not (to_guest and stays_with_host(dev) and dev["address"] not in self.addresses)]

    def unknown(self, devices: Sequence[Dict[str, Any]]) -> Tuple[List[str], List[int]]:
        """Addresses and IOMMU groups this selector names that the host does not have."""
        addresses = {dev["address"] for dev in devices}
        groups = {dev.get("iommu_group") for dev in devices}
        return ([a for a in self.addresses if a not in addresses],
                [g for g in self.iommu_groups if g not in groups])


def members_by_group(devices: Sequence[Dict[str, Any]]) -> Dict[int, List[Dict[str, Any]]]:
    """IOMMU group id -> its members, in device order (devices without a group left out)."""
    members: Dict[int, List[Dict[str, Any]]] = {}
    for dev in devices:
        if dev.get("iommu_group") is not None:
            members.setdefault(dev["iommu_group"], []).append(dev)
    return members


def expand_groups(selected: Sequence[Dict[str, Any]],
                  members: Dict[int, List[Dict[str, Any]]]) -> List[Tuple[int, List[str], List[str]]]:
    """Each group of the selected functions, first selected first: (id, members that go along, bridges kept).

    A group goes to a guest whole: every member that is not a bridge goes with
    a selected function (host-only members make the group not viable, see
    :func:`group_verdict`).
    """
    out: List[Tuple[int, List[str], List[str]]] = []
    for dev in selected:
        gid = dev.get("iommu_group")
        if gid is None or gid not in members or gid in [entry[0] for entry in out]:
            continue
        out.append((gid, [m["address"] for m in members[gid] if not is_bridge(m)],
                    [m["address"] for m in members[gid] if is_bridge(m)]))
    return out


def group_verdict(members: Sequence[Dict[str, Any]]) -> Dict[str, Any]:
    """Can this group be handed to one guest as a whole (every reason why not), and is VFIO ready for it now?"""
    reasons: List[str] = []
    endpoints = [dev for dev in members if not is_bridge(dev)]
    for dev in members:
        what = HOST_ONLY_CLASSES.get((dev.get("class_id") or "")[:4])
        if what and len(members) == 1:
            reasons.append("%s is %s: it stays with the host" % (dev["address"], what))
        elif what:
            reasons.append("%s is %s (driver %s) that the host needs, so its group cannot be passed "
                           "through; splitting the group needs ACS on the bridges above (BIOS setting) "
                           "or the devices in another slot" % (dev["address"], what, dev.get("driver") or "none"))
        elif is_bridge(dev) and dev.get("driver") not in (None,) + GROUP_SAFE_BRIDGE_DRIVERS:
            reasons.append("bridge %s is bound to %s, which does not declare driver_managed_dma, so VFIO cannot "
                           "claim the group" % (dev["address"], dev["driver"]))
    if not endpoints:
        reasons.append("the group holds only bridges: nothing to pass through")
    on_vfio = all(dev.get("driver") is None or dev.get("driver") in VFIO_DRIVERS for dev in endpoints)
    return {"viable": not reasons, "reasons": reasons, "bound_to_vfio": bool(endpoints) and on_vfio}
