# Copyright: contributors to confidential_gpu.host
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Which PCI functions go to which driver, safely, at runtime and across reboots.

Three steps, the way the collection's design card splits them:

- **facts** (:func:`gather_facts`): the topology of :mod:`pci_topology`, the
  host-critical devices (the controller of the disk holding ``/``, the NIC of
  the default route, the console's framebuffer), each function's
  ``driver_override``, the persistent files as they are, the drivers' modules;
- **plan** (:func:`pci_driver_plan.make_plans`): a pure function of facts and
  intent, one per binding (each made on the facts the bindings before it
  leave).  It selects functions (addresses, vendor:device IDs, roles, IOMMU
  groups), widens the selection to every endpoint of each IOMMU group, refuses
  groups that are not viable, host-critical devices the user did not name in
  ``allow_host_critical`` and group members the user did not select and did
  not name in ``allow_group_members`` (a NIC or storage controller, or a
  function in another slot), gives each function an action and computes the
  persistent files' new content (:mod:`pci_driver_persist`).  Check mode
  returns it as it is;
- **apply** (:func:`manage_all`): files first, every binding's merged
  (:func:`pci_driver_persist.apply_files`: driverctl-compatible overrides, a udev rule and its helper, optionally a
  modprobe.d file, the initramfs generator's drop-in and the initramfs update),
  then the runtime moves (:mod:`pci_driver_runtime`, through :mod:`pci_bind`).
  A refusal raises before anything is written.  Errors and the shared types
  live in :mod:`pci_driver_model`.

Standard library only: this runs on target hosts with Python >= 3.8.
"""

from __future__ import annotations

import re
from typing import Any, Dict, List, Sequence, Set

from ansible_collections.confidential_gpu.host.plugins.module_utils import pci_bind
from ansible_collections.confidential_gpu.host.plugins.module_utils.host_critical import host_critical
from ansible_collections.confidential_gpu.host.plugins.module_utils.host_files import FileChange
from ansible_collections.confidential_gpu.host.plugins.module_utils.host_write import SYSTEM_PATH
from ansible_collections.confidential_gpu.host.plugins.module_utils.pci_device import (
    ADDRESS_RE,
    PCI_ID_RE,
    ROLES,
    is_bridge,
    normalize_address,
)
from ansible_collections.confidential_gpu.host.plugins.module_utils.pci_driver_model import (
    DEFAULT_DRIVER,
    Facts,
    Intent,
    PciDriverError,
    PciDriverRefused,
)
from ansible_collections.confidential_gpu.host.plugins.module_utils.pci_driver_persist import (
    EARLY_BINDING_DRIVERS,
    InitramfsRunner,
    apply_files,
    initramfs_changes,
    initramfs_command,
    initramfs_generators,
    persistent_paths,
    read_file,
)
from ansible_collections.confidential_gpu.host.plugins.module_utils.pci_driver_plan import (
    make_plans,
    refusal_message,
    slot_of,
)
from ansible_collections.confidential_gpu.host.plugins.module_utils.pci_driver_runtime import (
    apply_runtime,
    ensure_driver,
    vfio_nodes,
)
from ansible_collections.confidential_gpu.host.plugins.module_utils.pci_topology import read_host_facts, read_topology
from ansible_collections.confidential_gpu.host.plugins.module_utils.pcie_acs import describe_bridges
from ansible_collections.confidential_gpu.host.plugins.module_utils.sysfs import HostRoot, os_release_ids

DRIVER_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.+-]*$")


def _address(value: Any, option: str) -> str:
    address = normalize_address(str(value))
    if not ADDRESS_RE.match(address):
        raise PciDriverError("%s: %r is not a PCI address; write it as DDDD:BB:DD.F or BB:DD.F, like 0000:3b:00.0"
                             % (option, value))
    return address


def build_intent(params: Dict[str, Any]) -> Intent:
    """Validate one selection and what to do with it; every problem fails before anything is read or written."""
    addresses = tuple(_address(item, "addresses") for item in params.get("addresses") or [])
    pci_ids = tuple(str(item).strip().lower() for item in params.get("pci_ids") or [])
    for pci_id in pci_ids:
        if not PCI_ID_RE.match(pci_id):
            raise PciDriverError("pci_ids: %r is not vendor:device in hex (like 10de:2330, or 10de:* for a vendor)"
                                 % pci_id)
    roles = tuple(params.get("roles") or [])
    for role in roles:
        if role not in ROLES:
            raise PciDriverError("roles: %r is not one of %s" % (role, ", ".join(ROLES)))
    groups = tuple(params.get("iommu_groups") or [])
    for group in groups:
        if not isinstance(group, int) or isinstance(group, bool) or group < 0:
            raise PciDriverError("iommu_groups: %r is not an IOMMU group number" % (group,))
    driver = params.get("driver") or DEFAULT_DRIVER
    if not DRIVER_RE.fullmatch(driver):  # fullmatch: '$' alone lets a trailing newline through
        raise PciDriverError("driver: %r is not a kernel driver name (like vfio-pci)" % driver)
    state = params.get("state") or "present"
    if state not in ("present", "absent"):
        raise PciDriverError("state: %r is neither present nor absent" % state)
    if not (addresses or pci_ids or roles or groups):
        raise PciDriverError("no devices selected: give addresses, pci_ids, roles or iommu_groups")
    early = bool(params.get("early_binding"))
    if early and driver not in EARLY_BINDING_DRIVERS:
        raise PciDriverError("early_binding needs a driver with an ids= option (%s), not %s; bind %s at runtime "
                             "and with the udev rule only (early_binding: false)"
                             % (", ".join(EARLY_BINDING_DRIVERS), driver, driver))
    allow = tuple(_address(item, "allow_host_critical") for item in params.get("allow_host_critical") or [])
    members = tuple(_address(item, "allow_group_members") for item in params.get("allow_group_members") or [])
    return Intent(addresses, pci_ids, roles, groups, driver, state, bool(params.get("whole_group", True)), allow,
                  bool(params.get("persist", True)), early, members, params.get("_shipped_files"))


SELECTION_KEYS = ("addresses", "pci_ids", "roles", "iommu_groups")


def build_intents(params: Dict[str, Any]) -> List[Intent]:
    """The run's bindings, in order: the items of ``bindings``, or the top-level selection alone.

    An option an item leaves out (None) takes the top-level value; AnsibleModule has checked the items' keys.
    """
    bindings = params.get("bindings") or []
    if not bindings:
        return [build_intent(params)]
    if any(params.get(key) for key in SELECTION_KEYS):
        raise PciDriverError("give the selection either at the top (addresses, pci_ids, roles, iommu_groups) or in "
                             "each item of bindings, not both")
    intents = []
    for index, item in enumerate(bindings):
        merged = dict(params, **{key: None for key in SELECTION_KEYS})
        merged.update((key, value) for key, value in item.items() if value is not None)
        try:
            intents.append(build_intent(merged))
        except PciDriverError as error:
            raise PciDriverError("bindings[%d]: %s" % (index, error)) from None
    return intents


def gather_facts(host: HostRoot, intent: Intent) -> Facts:
    """Read what the plan needs: topology, host-critical devices, overrides, files, driver modules."""
    topology = read_topology(host)
    devices = topology["devices"]
    critical = host_critical(host, devices) if intent.state == "present" else {}
    overrides = {dev["address"]: pci_bind.driver_override(host, dev["address"]) for dev in devices}
    addresses = [dev["address"] for dev in devices]
    files = {path: read_file(host, path) for path in persistent_paths(addresses)}
    drivers = {dev["driver"] for dev in devices if dev["driver"]}
    modules = {driver: pci_bind.driver_module(host, driver) for driver in sorted(drivers)}
    isolation = bridge_isolation(host, devices) if intent.state == "present" else {}
    return Facts(topology, critical, overrides, files, modules, os_release_ids(host), initramfs_generators(host),
                 isolation)


def bridge_isolation(host: HostRoot, devices: Sequence[Dict[str, Any]]) -> Dict[str, Dict[str, Any]]:
    """pcie_acs's verdict on every bridge above the endpoints of groups whose endpoints sit in several slots."""
    slots: Dict[int, Set[str]] = {}
    for dev in devices:
        if dev["iommu_group"] is not None and not is_bridge(dev):
            slots.setdefault(dev["iommu_group"], set()).add(slot_of(dev["address"]))
    spread = [dev for dev in devices if len(slots.get(dev["iommu_group"], ())) > 1 and not is_bridge(dev)]
    if not spread:
        return {}
    by_address = {dev["address"]: dev for dev in devices}
    facts = read_host_facts(host, devices, spread)
    return {entry["address"]: entry for entry in describe_bridges(facts, by_address, spread, True)}


def merge_devices(plans: Sequence[Dict[str, Any]]) -> List[Dict[str, Any]]:
    """One entry per function over all bindings: its driver before the run, the last move and where it ends."""
    merged: Dict[str, Dict[str, Any]] = {}
    for plan in plans:
        for entry in plan["devices"]:
            first = merged.setdefault(entry["address"], entry)
            if first is not entry and entry["action"] != "none":
                merged[entry["address"]] = dict(entry, driver_before=first["driver_before"])
    return [merged[address] for address in sorted(merged)]


def merge_groups(plans: Sequence[Dict[str, Any]]) -> List[Dict[str, Any]]:
    groups: Dict[int, Dict[str, Any]] = {}
    for plan in plans:
        for group in plan["groups"]:
            groups.setdefault(group["id"], group)
    return [groups[gid] for gid in sorted(groups)]


def merge_file_changes(plans: Sequence[Dict[str, Any]]) -> List[FileChange]:
    """Each file once: its content before the run and after the last binding that changes it."""
    changes: Dict[str, FileChange] = {}
    for plan in plans:
        for change in plan["file_changes"]:
            first = changes.get(change.host_path, change)
            changes[change.host_path] = change._replace(before=first.before, mode_before=first.mode_before)
    return [changes[path] for path in sorted(changes) if changes[path].before != changes[path].after]


def manage(host: HostRoot, intent: Intent, check_mode: bool, timeout: float = 30.0,
           initramfs_setting: str = "auto") -> Dict[str, Any]:
    """One binding: :func:`manage_all` of it alone."""
    return manage_all(host, [intent], check_mode, timeout, initramfs_setting)


def manage_all(host: HostRoot, intents: Sequence[Intent], check_mode: bool, timeout: float = 30.0,
               initramfs_setting: str = "auto") -> Dict[str, Any]:
    """Facts (read once), one plan per binding, refusal or apply: the module's result (``diff`` included; the
    module drops it unless asked).  Every binding is planned and checked before anything is written."""
    facts = gather_facts(host, intents[0])
    plans = make_plans(facts, intents)
    runner = InitramfsRunner(SYSTEM_PATH, check_mode, host.root)
    for plan in plans:
        for warning in plan["warnings"]:
            host.warn(warning)
    refused = [item for plan in plans for item in plan["refused"]]
    if refused:
        raise PciDriverRefused(refusal_message(refused), refused)
    changes = merge_file_changes(plans)
    result: Dict[str, Any] = {"changed": False, "devices": [], "groups": merge_groups(plans),
                              "files": [change.host_path for change in changes], "commands": runner.commands,
                              "vfio_nodes": [], "initramfs_updated": False, "refused": [],
                              "diff": [change.diff() for change in changes]}
    initramfs = None
    if initramfs_changes(changes):
        if host.root != "/" and initramfs_setting == "auto":
            host.warn("root is %s: the initramfs is not updated (give initramfs_command to run one)" % host.root)
        else:
            initramfs = initramfs_command(initramfs_setting, host, facts.os_ids)
    for plan, intent in zip(plans, intents):
        ensure_driver(host, plan, intent, timeout, runner)
    apply_files(host, changes, initramfs, runner, result)
    try:
        for plan, intent in zip(plans, intents):
            apply_runtime(host, plan, intent, timeout, check_mode, result)
    except PciDriverError as error:
        if changes and not check_mode:
            raise PciDriverError("%s. The persistent files were written before (%s), so the next boot applies "
                                 "them" % (error, ", ".join(result["files"]))) from None
        raise
    devices = result["devices"] = merge_devices(plans)  # after the moves, which set each entry's driver_after
    moved = any(entry["action"] in ("bind", "release") for entry in devices)
    result["changed"] = bool(changes) or moved
    if not check_mode and intents[0].state == "present" and any(i.driver == DEFAULT_DRIVER for i in intents):
        result["vfio_nodes"] = vfio_nodes(host, devices, 2.0 if moved else 0.0)
    return result
