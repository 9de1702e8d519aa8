# Copyright: contributors to confidential_gpu.host
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""pci_driver's plan, a pure function of facts and intent: selection, group expansion, refusals, each function's
action and the persistent files' new content.

Bridges in a group stay with the host; the group's viability is :func:`pci_device.group_verdict`'s.

Group members the user did not ask for: a group goes whole, so selecting a GPU
takes every other endpoint of its group too.  Its own functions (same
bus:device, like the HD-audio function) go without a word; a NIC or a storage
controller, even in the same slot, and any function in another slot must be
named in ``allow_group_members``.  The refusal says why they share the group,
the way the kernel builds groups (``pci_device_group()`` in
drivers/iommu/iommu.c, read in Linux v6.12.118, Debian's linux-source-6.12,
lines 1515-1577): a function joins the group of each
bridge above it whose path up to the root is not isolated by ACS
(``pci_acs_path_enabled(..., REQ_ACS_FLAGS)``), and the functions of a
multi-function device without ACS share one group
(``get_pci_function_alias_group()``).  Each bridge's verdict is
:func:`pcie_acs.describe_bridges`' (quirks included).
"""

from __future__ import annotations

from typing import Any, Dict, List, NamedTuple, Sequence, Set

from ansible_collections.confidential_gpu.host.plugins.module_utils import pci_device
from ansible_collections.confidential_gpu.host.plugins.module_utils.pci_device import (
    GROUP_SAFE_BRIDGE_DRIVERS,
    HOST_ONLY_CLASSES,
    VFIO_DRIVERS,
    is_bridge,
)
from ansible_collections.confidential_gpu.host.plugins.module_utils.pci_driver_model import (
    Facts,
    Intent,
    PciDriverError,
)
from ansible_collections.confidential_gpu.host.plugins.module_utils.pci_driver_persist import file_changes
from ansible_collections.confidential_gpu.host.plugins.module_utils.pcie_acs import what


def slot_of(address: str) -> str:
    """Domain, bus and device of a function address: the functions of one device share it."""
    return address.rsplit(".", 1)[0]


def needs_group(driver: str) -> bool:
    """VFIO drivers (vfio-pci and its variants) work on IOMMU groups; pci-stub does not."""
    return "vfio" in driver


def select(devices: Sequence[Dict[str, Any]], intent: Intent) -> List[str]:
    """Selected addresses, in address order (pci_device's rule; bridges and host-only functions only by address,
    and then refused).  Unknown addresses and IOMMU groups are errors."""
    missing, absent_groups = intent.selector.unknown(devices)
    if missing:
        raise PciDriverError("no PCI function %s on this host (see pci_topology_info); nothing was changed"
                             % ", ".join(missing))
    if absent_groups:
        raise PciDriverError("no IOMMU group %s on this host (see /sys/kernel/iommu_groups); nothing was changed"
                             % ", ".join(str(group) for group in absent_groups))
    return sorted(dev["address"] for dev in intent.selector.select(devices, to_guest=True))


def member_note(dev: Dict[str, Any], driver: str) -> str:
    """Why one member of a group matters for the group's verdict."""
    what = HOST_ONLY_CLASSES.get((dev["class_id"] or "")[:4])
    if what:
        return "%s: the host needs it and it cannot be given away" % what
    if is_bridge(dev):
        if dev["driver"] in (None,) + GROUP_SAFE_BRIDGE_DRIVERS:
            return "bridge: stays with the host (VFIO accepts it in the group)"
        return ("bridge bound to %s, which VFIO does not accept in a group it opens (only pcieport, pci-stub or no "
                "driver)" % dev["driver"])
    return "endpoint (%s, class %s): would move to %s with the group" % (dev["role"], dev["class_id"], driver)


def group_refusal(gid: int, members: Sequence[Dict[str, Any]], reasons: Sequence[str],
                  driver: str) -> Dict[str, Any]:
    listed = [{"address": dev["address"], "driver": dev["driver"], "why": member_note(dev, driver)}
              for dev in members]
    text = "; ".join("%s (driver %s): %s" % (m["address"], m["driver"] or "none", m["why"]) for m in listed)
    return {
        "kind": "not_viable",
        "group": gid,
        "address": None,
        "driver": None,
        "members": listed,
        "reason": "IOMMU group %d is not viable (%s). Members: %s" % (gid, "; ".join(reasons), text),
        "fix": "a group goes to a guest whole or not at all: select devices whose group is viable "
               "(pci_topology_info lists the groups)",
    }


def critical_refusal(dev: Dict[str, Any], reasons: Sequence[str], selected: bool) -> Dict[str, Any]:
    how = "selected" if selected else "in the same IOMMU group as a selected device"
    return {
        "kind": "host_critical",
        "group": dev["iommu_group"],
        "address": dev["address"],
        "driver": dev["driver"],
        "reason": "%s (driver %s, %s) is host-critical: %s" % (dev["address"], dev["driver"] or "none", how,
                                                               "; ".join(reasons)),
        "fix": "the host would lose it; if that is intended, name it: allow_host_critical: ['%s']" % dev["address"],
    }


# pcie_acs verdicts of a bridge that does not isolate the functions below it, in words.
NOT_ISOLATING = {
    "partial": "ACS %(missing)s not enabled",
    "disabled": "ACS %(missing)s not enabled",
    "no_acs": "no ACS capability",
    "pci_bridge": "a PCI bridge: the functions behind it share its requester ID",
    "quirk_not_isolating": "the kernel's %(quirk)s quirk does not count it as isolating",
    "quirk_inactive": "isolates only through the kernel's %(quirk)s quirk, which waits for the IOMMU to be on",
    "unknown": "its ACS is unknown (extended config space not readable)",
}


def shared_group_cause(dev: Dict[str, Any], selected: Sequence[Dict[str, Any]],
                       isolation: Dict[str, Dict[str, Any]]) -> str:
    """Why an unselected function is in the group of the selected ones: the bridges above them without ACS."""
    siblings = [other["address"] for other in selected if slot_of(other["address"]) == slot_of(dev["address"])]
    if siblings:
        return ("it is another function of the device of %s, and a multi-function device without ACS keeps its "
                "functions in one group" % siblings[0])
    above = sorted({address for other in [dev] + list(selected) for address in other["path"][:-1]})
    weak = [isolation[address] for address in above if isolation.get(address, {}).get("isolation") in NOT_ISOLATING]
    if not weak:
        return "no ACS isolation between them and %s" % ", ".join(other["address"] for other in selected)
    return "the bridges above them do not isolate them: %s" % "; ".join(
        "%s: %s" % (what(bridge), NOT_ISOLATING[bridge["isolation"]] % {
            "missing": ", ".join(bridge["missing"]), "quirk": bridge["quirk"]}) for bridge in weak)


def needs_naming(dev: Dict[str, Any], selected: Sequence[Dict[str, Any]]) -> bool:
    """A member the group would take that the user must name: a NIC or storage controller, or another slot's."""
    if dev["role"] in ("nic", "storage"):
        return True
    return slot_of(dev["address"]) not in {slot_of(other["address"]) for other in selected}


def group_member_refusal(gid: int, taken: Sequence[Dict[str, Any]], selected: Sequence[Dict[str, Any]],
                         isolation: Dict[str, Dict[str, Any]], driver: str) -> Dict[str, Any]:
    listed = [{"address": dev["address"], "driver": dev["driver"], "role": dev["role"],
               "why": shared_group_cause(dev, selected, isolation)} for dev in taken]
    names = ", ".join("%s (%s %s:%s, driver %s)" % (dev["address"], dev["role"], dev["vendor_id"], dev["device_id"],
                                                    dev["driver"] or "none") for dev in taken)
    causes = "; ".join("%s: %s" % (m["address"], m["why"]) for m in listed)
    return {
        "kind": "group_member",
        "group": gid,
        "address": None,
        "driver": None,
        "members": listed,
        "reason": "IOMMU group %d would take functions nobody selected to %s with %s: %s. Why they share the "
                  "group: %s" % (gid, driver, ", ".join(dev["address"] for dev in selected), names, causes),
        "fix": "the host would lose them; if that is intended, name them: allow_group_members: [%s] (role vfio: "
               "vfio_allow_group_members); otherwise leave this group out, or move the device to a slot whose ports "
               "isolate it (pci_topology_info lists each group, pcie_acs each port's ACS)"
               % ", ".join("'%s'" % dev["address"] for dev in taken),
    }


def group_member_refusals(facts: Facts, intent: Intent, out: Selection, selected: Sequence[str]) -> None:
    """Refuse each group whose expansion takes functions the user neither selected nor named.

    A group refused as not viable is not asked about: naming its members would not let it through.
    """
    by_address = {dev["address"]: dev for dev in facts.topology["devices"]}
    targets = {dev["address"] for dev in out.targets}
    taken_anyway: Set[str] = set()
    for group in out.groups:
        if not group["viable"]:
            continue
        chosen = [by_address[a] for a in group["endpoints"] if a in selected]
        others = [by_address[a] for a in group["endpoints"] if a in targets and a not in selected
                  and by_address[a]["driver"] != intent.driver]
        unnamed = [dev for dev in others if needs_naming(dev, chosen)]
        taken_anyway.update(dev["address"] for dev in others)
        missing = [dev for dev in unnamed if dev["address"] not in intent.allow_group_members]
        if chosen and missing:
            out.refused.append(group_member_refusal(group["id"], missing, chosen, facts.isolation, intent.driver))
    for address in intent.allow_group_members:
        if address not in taken_anyway:
            out.warnings.append("allow_group_members names %s, which no selected group takes with it here" % address)


def simple_refusal(kind: str, dev: Dict[str, Any], reason: str, fix: str) -> Dict[str, Any]:
    return {"kind": kind, "group": dev["iommu_group"], "address": dev["address"], "driver": dev["driver"],
            "reason": reason, "fix": fix}


class Selection(NamedTuple):
    groups: List[Dict[str, Any]]
    targets: List[Dict[str, Any]]
    refused: List[Dict[str, Any]]
    warnings: List[str]


def expand_groups(facts: Facts, intent: Intent, selected: Sequence[str]) -> Selection:
    """The endpoints to act on (each selected function's whole group, or only it) and the groups they are in."""
    devices = facts.topology["devices"]
    by_address = {dev["address"]: dev for dev in devices}
    members = pci_device.members_by_group(devices)
    chosen = [by_address[address] for address in selected]
    groups = {gid: (endpoints, bridges) for gid, endpoints, bridges
              in pci_device.expand_groups([dev for dev in chosen if not is_bridge(dev)], members)}
    verdicts = {group["id"]: group for group in facts.topology["iommu_groups"]}
    present = intent.state == "present"
    out = Selection([], [], [], [])
    for dev in chosen:
        gid = dev["iommu_group"]
        if is_bridge(dev):
            out.refused.append(simple_refusal("bridge", dev, "%s is a bridge (driver %s): bridges stay with the host"
                                              % (dev["address"], dev["driver"] or "none"),
                                              "select the endpoints below it, or its IOMMU group"))
            continue
        if gid is None and present and needs_group(intent.driver):
            out.refused.append(simple_refusal("no_iommu_group", dev, "%s has no IOMMU group: the IOMMU is off"
                                              % dev["address"], "turn the IOMMU on (role kernel_args: intel_iommu=on "
                                              "for VT-d, amd_iommu=off gone for AMD-Vi) and reboot"))
        if gid is None or not intent.whole_group:
            out.targets.append(dev)
        if gid is None or gid in [group["id"] for group in out.groups]:
            continue
        endpoints, bridges = groups[gid]
        out.targets.extend(by_address[address] for address in endpoints if intent.whole_group)
        reasons = list(verdicts.get(gid, {}).get("reasons", []))
        out.groups.append({"id": gid, "devices": [m["address"] for m in members[gid]], "endpoints": endpoints,
                           "bridges": bridges, "viable": not reasons, "reasons": reasons})
        if present and reasons:
            out.refused.append(group_refusal(gid, members[gid], reasons, intent.driver))
    unique = {dev["address"]: dev for dev in out.targets}
    out.targets[:] = [unique[address] for address in sorted(unique)]
    return out


def plan_targets(facts: Facts, intent: Intent) -> Selection:
    """Selection, group expansion and the safety checks (viability, host-critical devices)."""
    selected = select(facts.topology["devices"], intent)
    out = expand_groups(facts, intent, selected)
    if not selected:
        out.warnings.append("no PCI function matched the selection (addresses %s, pci_ids %s, roles %s, "
                            "iommu_groups %s)" % (list(intent.addresses), list(intent.pci_ids), list(intent.roles),
                                                  list(intent.iommu_groups)))
    if intent.state != "present":
        return out
    chosen = {dev["address"] for dev in out.targets}
    by_address = {dev["address"]: dev for dev in facts.topology["devices"]}
    for group in out.groups:
        left = [by_address[a] for a in group["endpoints"] if a not in chosen]
        left = [dev for dev in left if dev["driver"] not in (None,) + VFIO_DRIVERS]
        if left and needs_group(intent.driver):
            out.warnings.append("IOMMU group %d: %s stay on their drivers (whole_group is false); VFIO will not "
                                "open the group until they are released" % (group["id"], ", ".join(
                                    "%s (%s)" % (dev["address"], dev["driver"]) for dev in left)))
    group_member_refusals(facts, intent, out, selected)
    for dev in out.targets:
        reasons = facts.critical.get(dev["address"])
        if reasons and dev["address"] not in intent.allow_host_critical and dev["driver"] != intent.driver:
            out.refused.append(critical_refusal(dev, reasons, dev["address"] in selected))
    for address in intent.allow_host_critical:
        if address not in facts.critical:
            out.warnings.append("allow_host_critical names %s, which is not host-critical here" % address)
    return out


def device_actions(facts: Facts, intent: Intent, groups: Sequence[Dict[str, Any]],
                   targets: Sequence[Dict[str, Any]]) -> List[Dict[str, Any]]:
    """One entry per function the run looks at: endpoints to move (or leave) and bridges kept."""
    entries = []
    for dev in targets:
        driver = dev["driver"]
        if intent.state == "present":
            action = "none" if driver == intent.driver else "bind"
        else:
            owned = driver == intent.driver or facts.overrides.get(dev["address"]) == intent.driver
            action = "release" if owned else "none"
        entries.append({"address": dev["address"], "group": dev["iommu_group"],
                        "pci_id": "%s:%s" % (dev["vendor_id"], dev["device_id"]), "role": dev["role"],
                        "driver_before": driver, "driver_after": driver if action == "none" else None,
                        "action": action})
    by_address = {dev["address"]: dev for dev in facts.topology["devices"]}
    for group in groups:
        for address in group["bridges"]:
            dev = by_address[address]
            entries.append({"address": address, "group": group["id"],
                            "pci_id": "%s:%s" % (dev["vendor_id"], dev["device_id"]), "role": dev["role"],
                            "driver_before": dev["driver"], "driver_after": dev["driver"], "action": "keep"})
    entries.sort(key=lambda entry: entry["address"])
    return entries


def make_plan(facts: Facts, intent: Intent) -> Dict[str, Any]:
    """What this run does, from facts and intent alone: devices, groups, refusals, file changes, warnings."""
    chosen = plan_targets(facts, intent)
    actions = device_actions(facts, intent, chosen.groups, chosen.targets)
    warnings = list(chosen.warnings)
    changes = [] if chosen.refused else file_changes(facts, intent, actions, warnings, chosen.targets)
    return {"devices": actions, "groups": chosen.groups, "refused": chosen.refused, "file_changes": changes,
            "warnings": warnings}


def conflict_refusal(entry: Dict[str, Any], earlier: str, driver: str) -> Dict[str, Any]:
    return {"kind": "conflict", "group": entry["group"], "address": entry["address"], "driver": earlier,
            "reason": "%s is in two bindings of this run: an earlier one puts it on %s, a later one on %s"
                      % (entry["address"], earlier, driver),
            "fix": "leave it out of one of them (each run would move it twice and end on the last driver)"}


def advance(facts: Facts, plan: Dict[str, Any], intent: Intent) -> Facts:
    """The facts as the host will be once ``plan`` is applied: drivers, overrides and persistent files."""
    moved = {entry["address"]: intent.driver if entry["action"] == "bind" else None
             for entry in plan["devices"] if entry["action"] in ("bind", "release")}
    if not moved and not plan["file_changes"]:
        return facts
    devices = [dict(dev, driver=moved[dev["address"]]) if dev["address"] in moved else dev
               for dev in facts.topology["devices"]]
    files = dict(facts.files)
    files.update((change.host_path, change.after) for change in plan["file_changes"])
    return facts._replace(topology=dict(facts.topology, devices=devices), overrides=dict(facts.overrides, **moved),
                          files=files)


def make_plans(facts: Facts, intents: Sequence[Intent]) -> List[Dict[str, Any]]:
    """One plan per binding, in order, each made on the host as the bindings before it leave it (so one run
    with several bindings does what as many runs in a row would).  A function that a later binding would move
    off the driver an earlier one gives it (or keeps it on) is refused: each run would move it twice."""
    plans = []
    given: Dict[str, str] = {}
    for intent in intents:
        plan = make_plan(facts, intent)
        for entry in plan["devices"]:
            earlier = given.get(entry["address"])
            if entry["action"] == "bind" and earlier is not None and earlier != intent.driver:
                plan["refused"].append(conflict_refusal(entry, earlier, intent.driver))
            if entry["action"] in ("bind", "none") and intent.state == "present":
                given.setdefault(entry["address"], intent.driver)
        plans.append(plan)
        facts = advance(facts, plan, intent)
    return plans


def refusal_message(refused: Sequence[Dict[str, Any]]) -> str:
    return "refused, nothing was changed: " + " | ".join("%s; %s" % (item["reason"], item["fix"]) for item in refused)
