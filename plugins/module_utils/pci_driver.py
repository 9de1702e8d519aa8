# Copyright: contributors to confidential_gpu.host
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Which PCI functions go to which driver, safely, at runtime and across reboots.

Three steps, the way the collection's design card splits them:

- **facts** (:func:`gather_facts`): the topology of :mod:`pci_topology`, the
  host-critical devices (the controller of the disk holding ``/``, the NIC of
  the default route, the console's framebuffer), each function's
  ``driver_override``, the persistent files as they are, the drivers' modules;
- **plan** (:func:`make_plan`): a pure function of facts and intent.  It selects
  functions (addresses, vendor:device IDs, roles, IOMMU groups), widens the
  selection to every endpoint of each IOMMU group, refuses groups that are not
  viable, host-critical devices the user did not name in
  ``allow_host_critical`` and group members the user did not select and did
  not name in ``allow_group_members`` (a NIC or storage controller, or a
  function in another slot), gives each function an action and computes the
  persistent files' new content.  Check mode returns it as it is;
- **apply** (:func:`manage`): files first (driverctl-compatible overrides, a
  udev rule and its helper, optionally a modprobe.d file, the initramfs
  generator's drop-in that puts the driver into the initramfs, and the
  initramfs update),
  then the runtime moves of :mod:`pci_bind`.  A refusal raises before anything
  is written.

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

Standard library only: this runs on target hosts with Python >= 3.8.
"""

from __future__ import annotations

import functools
import os
import re
import shlex
from typing import Any, Dict, Iterable, List, NamedTuple, Optional, Sequence, Set, Tuple

from ansible_collections.confidential_gpu.host.plugins.module_utils import pci_bind
from ansible_collections.confidential_gpu.host.plugins.module_utils.host_critical import host_critical
from ansible_collections.confidential_gpu.host.plugins.module_utils.host_write import SYSTEM_PATH, CommandRunner
from ansible_collections.confidential_gpu.host.plugins.module_utils.pcie_acs import describe_bridges, what
from ansible_collections.confidential_gpu.host.plugins.module_utils import pci_device
from ansible_collections.confidential_gpu.host.plugins.module_utils.pci_device import (
    ADDRESS_RE,
    GROUP_SAFE_BRIDGE_DRIVERS,
    HOST_ONLY_CLASSES,
    NVIDIA,
    PCI_ID_RE,
    ROLES,
    VFIO_DRIVERS,
    Selector,
    is_bridge,
    normalize_address,
)
from ansible_collections.confidential_gpu.host.plugins.module_utils.pci_topology import read_topology
from ansible_collections.confidential_gpu.host.plugins.module_utils import host_files
from ansible_collections.confidential_gpu.host.plugins.module_utils.host_files import FileChange
from ansible_collections.confidential_gpu.host.plugins.module_utils.sysfs import HostRoot, os_release_ids

DEFAULT_DRIVER = "vfio-pci"
DRIVERCTL_DIR = "/etc/driverctl.d"
UDEV_RULES = "/etc/udev/rules.d/70-confidential-gpu-vfio.rules"
HELPER = "/usr/local/libexec/confidential-gpu/pci-override"
MODPROBE_CONF = "/etc/modprobe.d/confidential-gpu-vfio.conf"
INITRAMFS_TOOLS_DIR = "/etc/initramfs-tools"
INITRAMFS_TOOLS_HOOK = INITRAMFS_TOOLS_DIR + "/hooks/confidential-gpu-vfio"
DRACUT_CONF_DIR = "/etc/dracut.conf.d"
DRACUT_CONF = DRACUT_CONF_DIR + "/confidential-gpu-vfio.conf"
# Drivers with an ``ids=`` module option that claims devices by vendor:device when the module loads.
EARLY_BINDING_DRIVERS = ("vfio-pci", "pci-stub")
# Kernel modules each of them needs in the initramfs, as modprobe names them (vfio_pci pulls vfio, vfio_pci_core
# and irqbypass in as dependencies; vfio_iommu_type1 is only a soft dependency of vfio, so it is named).
INITRAMFS_MODULES = {"vfio-pci": ("vfio_pci", "vfio_iommu_type1"), "pci-stub": ("pci_stub",)}
HELPER_ROOT_ENV = "PCI_OVERRIDE_ROOT"
DRIVER_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.+-]*$")
RULE_RE = re.compile(r'^ACTION=="add",\s*SUBSYSTEM=="pci",\s*KERNEL=="([^"]+)"')
MARKER = "Managed by confidential_gpu.host.pci_driver"

HELPER_SCRIPT = r"""#!/bin/sh
# %(marker)s.
# Called by udev (%(rules)s) with the address of a PCI function that was
# just added (boot, hotplug, SR-IOV VF): binds it to the driver named in
# /etc/driverctl.d/pci-<address> (the driverctl file format), so that the
# override holds with or without driverctl installed.
# Usage: pci-override 0000:bb:dd.f
set -u
root="${%(root_env)s:-}"
dev="${1:?usage: pci-override <pci address>}"
conf="$root/etc/driverctl.d/pci-$dev"
sys="$root/sys/bus/pci/devices/$dev"
[ -s "$conf" ] || exit 0
[ -e "$sys/driver_override" ] || exit 0
drv=""
IFS= read -r drv < "$conf" || [ -n "$drv" ] || exit 0
[ -n "$drv" ] || exit 0
driver_of() {
    if [ -L "$sys/driver" ]; then basename "$(readlink "$sys/driver")"; fi
}
cur=$(driver_of)
[ "$cur" = "$drv" ] && exit 0
printf '%%s' "$drv" > "$sys/driver_override" || exit 1
if [ ! -d "$root/sys/bus/pci/drivers/$drv" ] && [ -z "$root" ]; then
    modprobe -q "$drv" || true
fi
# A driver may leave the function on its own between the read above and the unbind (a probe that fails
# late, as nvme's does on a VF that is not ready: in drivers/nvme/host/pci.c of Linux 6.1, nvme_reset_work()
# ends in nvme_remove_dead_ctrl(), which queues the release of the driver): the unbind then fails with ENODEV.
# Wait up to 10 s for the driver to be gone.
if [ -n "$cur" ] && ! printf '%%s' "$dev" > "$root/sys/bus/pci/drivers/$cur/unbind" 2>/dev/null; then
    tries=0
    while [ "$(driver_of)" = "$cur" ]; do
        tries=$((tries + 1))
        [ "$tries" -le 50 ] || { echo "pci-override: $dev stays on $cur: unbind failed" >&2; exit 1; }
        sleep 0.2
    done
fi
if [ ! -L "$sys/driver" ]; then
    printf '%%s' "$dev" > "$root/sys/bus/pci/drivers_probe" || exit 1
fi
exit 0
""" % {"marker": MARKER, "rules": UDEV_RULES, "root_env": HELPER_ROOT_ENV}

RULES_HEADER = (
    "# %s.\n"
    "# On boot, hotplug and SR-IOV VF creation, give these PCI functions the driver named in\n"
    "# %s/pci-<address> (driverctl's format). Sorted before 80-drivers.rules, so that the\n"
    "# override is set before udev loads the default driver's module.\n" % (MARKER, DRIVERCTL_DIR)
)


INITRAMFS_TOOLS_HOOK_SCRIPT = r"""#!/bin/sh
# %(marker)s.
# Puts %%(driver)s into the initramfs. mkinitramfs copies %(modprobe)s
# in too, so a GPU driver that loads from the initramfs pulls %%(driver)s in first
# (softdep) and %%(driver)s claims the devices by ID (ids=) before that driver can.
PREREQ=""
prereqs() { echo "$PREREQ"; }
case "$1" in
prereqs) prereqs; exit 0 ;;
esac
. /usr/share/initramfs-tools/hook-functions
manual_add_modules %%(modules)s
""" % {"marker": MARKER, "modprobe": MODPROBE_CONF}

DRACUT_CONF_TEXT = """# %(marker)s.
# Puts %%(driver)s into the initramfs and loads it there before udev starts (rd.driver.pre), with the
# ids= and softdep lines of %(modprobe)s (dracut copies /etc/modprobe.d in when it builds
# host-only images, its default on EL and Fedora), so that a GPU driver that loads from the initramfs
# does not take the devices first.
force_drivers+=" %%(modules)s "
""" % {"marker": MARKER, "modprobe": MODPROBE_CONF}


class InitramfsGenerator(NamedTuple):
    """An initramfs generator: the configuration directory that tells the host has it, and our drop-in there."""

    directory: str
    dropin: str
    mode: int
    template: str


# Drop-ins that put the early-binding driver into the initramfs, by generator: a hook, a configuration file.
INITRAMFS_GENERATORS = {
    "initramfs-tools": InitramfsGenerator(INITRAMFS_TOOLS_DIR, INITRAMFS_TOOLS_HOOK, 0o755,
                                          INITRAMFS_TOOLS_HOOK_SCRIPT),
    "dracut": InitramfsGenerator(DRACUT_CONF_DIR, DRACUT_CONF, 0o644, DRACUT_CONF_TEXT),
}
# Files the initramfs carries a copy of: a change to one of them is followed by the initramfs update.
INITRAMFS_INPUTS = (MODPROBE_CONF,) + tuple(generator.dropin for generator in INITRAMFS_GENERATORS.values())


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


# --------------------------------------------------------------------------
# Intent
# --------------------------------------------------------------------------

def _address(value: Any, option: str) -> str:
    address = normalize_address(str(value))
    if not ADDRESS_RE.match(address):
        raise PciDriverError("%s: %r is not a PCI address; write it as DDDD:BB:DD.F or BB:DD.F, like 0000:3b:00.0"
                             % (option, value))
    return address


def build_intent(params: Dict[str, Any]) -> Intent:
    """Validate the module's parameters; every problem fails before anything is read or written."""
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
                  bool(params.get("persist", True)), early, members)


# --------------------------------------------------------------------------
# Persistent files: read, render, parse
# --------------------------------------------------------------------------

def read_file(host: HostRoot, host_path: str) -> Optional[str]:
    """A file's text; ``None`` when it does not exist; an error naming it when it cannot be read."""
    return host_files.read_file(host, host_path, PciDriverError)[0]


def driverctl_path(address: str) -> str:
    """driverctl's override file for a PCI function: /etc/driverctl.d/pci-<address>, holding the driver name."""
    return "%s/pci-%s" % (DRIVERCTL_DIR, address)


def rule_addresses(text: Optional[str]) -> List[str]:
    """Addresses in our udev rules file."""
    found = []
    for line in (text or "").splitlines():
        match = RULE_RE.match(line.strip())
        if match:
            found.append(match.group(1))
    return found


def render_rules(addresses: Iterable[str]) -> Optional[str]:
    lines = ['ACTION=="add", SUBSYSTEM=="pci", KERNEL=="%s", RUN+="%s $kernel"' % (address, HELPER)
             for address in sorted(set(addresses))]
    return RULES_HEADER + "\n".join(lines) + "\n" if lines else None


def parse_modprobe_conf(text: Optional[str], driver: str) -> Tuple[List[str], List[str]]:
    """(ids, softdep modules) of our modprobe.d file for ``driver``."""
    ids: List[str] = []
    softdeps: List[str] = []
    same = {driver, driver.replace("-", "_")}
    for line in (text or "").splitlines():
        words = line.split()
        if len(words) >= 3 and words[0] == "options" and words[1] in same:
            for word in words[2:]:
                if word.startswith("ids="):
                    ids += [item for item in word[4:].split(",") if item]
        elif len(words) >= 4 and words[0] == "softdep" and words[2] == "pre:" and set(words[3:]) & same:
            softdeps.append(words[1])
    return ids, softdeps


def render_modprobe_conf(driver: str, ids: Iterable[str], softdeps: Iterable[str]) -> Optional[str]:
    ids = sorted(set(ids))
    if not ids:
        return None
    lines = ["# %s: %s claims these vendor:device IDs when it loads," % (MARKER, driver),
             "# and it loads before the drivers below (softdep), so that they do not take the devices first.",
             "# Every device with such an ID is claimed, not only the selected ones.",
             "options %s ids=%s" % (driver, ",".join(ids))]
    lines += ["softdep %s pre: %s" % (module, driver) for module in sorted(set(softdeps)) if module != driver]
    return "\n".join(lines) + "\n"


def persistent_paths(addresses: Iterable[str]) -> List[str]:
    return [UDEV_RULES, HELPER] + list(INITRAMFS_INPUTS) + [driverctl_path(address)
                                                            for address in sorted(set(addresses))]


def initramfs_generators(host: HostRoot) -> Tuple[str, ...]:
    """The initramfs generators whose configuration directory the host has: initramfs-tools, dracut."""
    return tuple(name for name, generator in INITRAMFS_GENERATORS.items()
                 if os.path.isdir(host.path(generator.directory)))


# --------------------------------------------------------------------------
# Facts
# --------------------------------------------------------------------------

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


def slot_of(address: str) -> str:
    """Domain, bus and device of a function address: the functions of one device share it."""
    return address.rsplit(".", 1)[0]


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
    return {entry["address"]: entry for entry in describe_bridges(host, by_address, spread, {}, True)}


# --------------------------------------------------------------------------
# The plan (pure)
# --------------------------------------------------------------------------

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


def early_binding_content(facts: Facts, intent: Intent, targets: Sequence[Dict[str, Any]],
                          warnings: List[str]) -> Optional[str]:
    """New content of our modprobe.d file: the targets' IDs added (present) or taken out (absent)."""
    before = facts.files.get(MODPROBE_CONF)
    ids, softdeps = parse_modprobe_conf(before, intent.driver)
    mine = {"%s:%s" % (dev["vendor_id"], dev["device_id"]) for dev in targets}
    if intent.state == "absent":
        if not set(ids) & mine:
            return before
        return render_modprobe_conf(intent.driver, [i for i in ids if i not in mine], softdeps)
    target_addresses = {dev["address"] for dev in targets}
    wanted = set(ids)
    for pci_id in sorted(mine):
        others = [dev["address"] for dev in facts.topology["devices"]
                  if "%s:%s" % (dev["vendor_id"], dev["device_id"]) == pci_id and dev["address"] not in target_addresses
                  and not is_bridge(dev)]
        if others:
            warnings.append("early binding: %s is left out of ids= because %s (not selected) would be claimed by %s "
                            "too (same ID); the selected devices are still bound at boot by the udev rule"
                            % (pci_id, ", ".join(others), intent.driver))
            continue
        wanted.add(pci_id)
    modules = set(softdeps)
    for dev in targets:
        if "%s:%s" % (dev["vendor_id"], dev["device_id"]) not in wanted:
            continue
        if dev["driver"] and dev["driver"] != intent.driver:
            module = facts.modules.get(dev["driver"])
            if module:
                modules.add(module)
            else:
                warnings.append("early binding: driver %s of %s is built into the kernel, so %s cannot load before "
                                "it; the udev rule moves the device at boot"
                                % (dev["driver"], dev["address"], intent.driver))
        if dev["vendor_id"] == NVIDIA and dev["role"] in ("gpu", "nvswitch"):
            modules.update(("nvidia", "nouveau") if dev["role"] == "gpu" else ("nvidia",))
    return render_modprobe_conf(intent.driver, wanted, modules)


def initramfs_dropins(facts: Facts, intent: Intent, early: bool,
                      warnings: List[str]) -> Dict[str, Tuple[Optional[str], int]]:
    """Our initramfs drop-ins: present while the modprobe.d file binds devices early, else removed."""
    if early and not facts.initramfs_generators and intent.state == "present":
        warnings.append("early binding: the host has neither %s nor %s, so %s is not put into the initramfs; a "
                        "driver that loads from the initramfs takes the devices first there (add %s to your "
                        "initramfs generator's modules, then rebuild it)"
                        % (INITRAMFS_TOOLS_DIR, DRACUT_CONF_DIR, intent.driver,
                           " ".join(INITRAMFS_MODULES[intent.driver])))
    wanted: Dict[str, Tuple[Optional[str], int]] = {}
    values = {"driver": intent.driver, "modules": " ".join(INITRAMFS_MODULES.get(intent.driver, ()))}
    for name, generator in INITRAMFS_GENERATORS.items():
        if early and name in facts.initramfs_generators:
            wanted[generator.dropin] = (generator.template % values, generator.mode)
        elif facts.files.get(generator.dropin) is not None:
            wanted[generator.dropin] = (None, generator.mode)
    return wanted


def file_changes(facts: Facts, intent: Intent, actions: Sequence[Dict[str, Any]],
                 warnings: List[str], targets: Sequence[Dict[str, Any]]) -> List[FileChange]:
    """The persistent files whose content this run changes (None after: removed)."""
    if not intent.persist:
        return []
    files = facts.files
    wanted: Dict[str, Tuple[Optional[str], int]] = {}
    endpoints = [entry["address"] for entry in actions if entry["action"] != "keep"]
    rules = set(rule_addresses(files.get(UDEV_RULES)))
    content = "%s\n" % intent.driver
    if intent.state == "present":
        for address in endpoints:
            wanted[driverctl_path(address)] = (content, 0o644)
        rules.update(endpoints)
    else:
        for address in endpoints:
            path = driverctl_path(address)
            if (files.get(path) or "").strip() == intent.driver:
                wanted[path] = (None, 0o644)
            if (files.get(path) or "").strip() in ("", intent.driver):
                rules.discard(address)
    rules_text = render_rules(rules)
    wanted[UDEV_RULES] = (rules_text, 0o644)
    wanted[HELPER] = (HELPER_SCRIPT if rules_text else None, 0o755)
    if intent.early_binding or intent.state == "absent":
        modprobe = early_binding_content(facts, intent, targets, warnings)
        wanted[MODPROBE_CONF] = (modprobe, 0o644)
        wanted.update(initramfs_dropins(facts, intent, modprobe is not None, warnings))
    return [FileChange(path, files.get(path), after, mode) for path, (after, mode) in sorted(wanted.items())
            if files.get(path) != after]


def make_plan(facts: Facts, intent: Intent) -> Dict[str, Any]:
    """What this run does, from facts and intent alone: devices, groups, refusals, file changes, warnings."""
    chosen = plan_targets(facts, intent)
    actions = device_actions(facts, intent, chosen.groups, chosen.targets)
    warnings = list(chosen.warnings)
    changes = [] if chosen.refused else file_changes(facts, intent, actions, warnings, chosen.targets)
    return {"devices": actions, "groups": chosen.groups, "refused": chosen.refused, "file_changes": changes,
            "warnings": warnings}


def refusal_message(refused: Sequence[Dict[str, Any]]) -> str:
    return "refused, nothing was changed: " + " | ".join("%s; %s" % (item["reason"], item["fix"]) for item in refused)


# --------------------------------------------------------------------------
# Apply
# --------------------------------------------------------------------------

def initramfs_command(setting: str, host: HostRoot, os_ids: Set[str]) -> Optional[List[str]]:
    """The initramfs update command: ``auto`` by distribution, a command line as given, None for ``""``."""
    if not setting:
        return None
    if setting != "auto":
        return shlex.split(setting)
    if os_ids & {"debian", "ubuntu"}:
        return ["update-initramfs", "-u"]
    if os_ids & {"rhel", "fedora", "centos"}:
        return ["dracut", "-f"]
    raise PciDriverError("initramfs_command auto: /etc/os-release (ID/ID_LIKE %s) is neither Debian/Ubuntu "
                         "(update-initramfs -u) nor EL/Fedora (dracut -f); give the command, or '' to skip it"
                         % (" ".join(sorted(os_ids)) or "unreadable"))


class InitramfsRunner(CommandRunner):
    """The initramfs generator and modprobe, failures as :class:`PciDriverError`."""

    error = PciDriverError
    missing_hint = "install it or give initramfs_command"


def initramfs_changes(changes: Sequence[FileChange]) -> List[FileChange]:
    """The changes to files the initramfs carries (modprobe.d file, generator drop-ins)."""
    return [change for change in changes if change.host_path in INITRAMFS_INPUTS]


def apply_files(host: HostRoot, changes: Sequence[FileChange], initramfs: Optional[List[str]],
                runner: CommandRunner, result: Dict[str, Any]) -> None:
    """Write the files; update the initramfs when a file it carries changed (those rolled back if that fails)."""
    carried = initramfs_changes(changes)
    if runner.check_mode:
        if carried and initramfs is not None:
            runner.change(initramfs)
        return
    for change in changes:
        host_files.write_file(host, change, PciDriverError)
    if not carried:
        return
    if initramfs is None:
        if host.root == "/":
            host.warn("%s changed but no initramfs_command is set: the initramfs keeps the old copy"
                      % ", ".join(change.host_path for change in carried))
        return
    try:
        runner.change(initramfs)
    except PciDriverError:
        for change in carried:
            host_files.write_file(host, FileChange(change.host_path, None, change.before, change.mode), PciDriverError)
        raise
    result["initramfs_updated"] = True


def vfio_nodes(host: HostRoot, devices: Sequence[Dict[str, Any]], wait: float) -> List[str]:
    """/dev/vfio/<group> of every group on vfio-pci, and /dev/vfio/devices/vfioN (VFIO cdev, for iommufd)."""
    on_vfio = [entry for entry in devices if entry["driver_after"] == DEFAULT_DRIVER and entry["action"] != "keep"]
    nodes: List[str] = []
    for gid in sorted({entry["group"] for entry in on_vfio if entry["group"] is not None}):
        path = "/dev/vfio/%d" % gid
        if pci_bind.wait_for(functools.partial(host.exists, path), wait):
            nodes.append(path)
        else:
            host.warn("IOMMU group %d is on vfio-pci but %s is missing" % (gid, path))
    for entry in on_vfio:
        for name in host.listdir(pci_bind.device_path(entry["address"], "vfio-dev")):
            if host.exists("/dev/vfio/devices/%s" % name):
                nodes.append("/dev/vfio/devices/%s" % name)
    return nodes


def move(host: HostRoot, entry: Dict[str, Any], intent: Intent, timeout: float) -> None:
    """Bind or release one function; sets its ``driver_after``."""
    if entry["action"] == "bind":
        pci_bind.bind(host, entry["address"], intent.driver, timeout, entry["group"])
        entry["driver_after"] = intent.driver
        return
    entry["driver_after"] = pci_bind.release(host, entry["address"], intent.driver, timeout, entry["group"])
    if entry["driver_after"] == intent.driver:
        host.warn("%s went back to %s after its override was cleared (the loaded module's ids= option claims "
                  "it); it leaves %s at the next boot" % (entry["address"], intent.driver, intent.driver))


def ensure_driver(host: HostRoot, plan: Dict[str, Any], intent: Intent, timeout: float,
                  runner: CommandRunner) -> None:
    """Load the target driver when functions are to be bound to it; runs before any file is written, so that a
    driver that is not there refuses the run with nothing changed (no persistent file naming it)."""
    moving = any(entry["action"] in ("bind", "release") for entry in plan["devices"])
    if intent.state == "present" and moving:
        try:
            pci_bind.load_driver(host, intent.driver, timeout, runner)
        except pci_bind.BindError as error:  # a message naming the driver, not a traceback
            raise PciDriverError("%s; nothing was changed" % error) from None


def apply_runtime(host: HostRoot, plan: Dict[str, Any], intent: Intent, timeout: float, check_mode: bool,
                  result: Dict[str, Any]) -> None:
    """Move the functions whose action is bind or release, in address order (a group's functions together)."""
    moving = [entry for entry in plan["devices"] if entry["action"] in ("bind", "release")]
    done: List[str] = []
    for entry in moving:
        if check_mode:
            entry["driver_after"] = intent.driver if entry["action"] == "bind" else None
            continue
        try:
            move(host, entry, intent, timeout)
        except pci_bind.BindError as error:
            raise PciDriverError("%s%s" % (error, "; moved before the failure: %s" % ", ".join(done) if done else
                                           "")) from None
        done.append(entry["address"])


def manage(host: HostRoot, intent: Intent, check_mode: bool, timeout: float = 30.0,
           initramfs_setting: str = "auto") -> Dict[str, Any]:
    """Facts, plan, refusal or apply: the module's result (``diff`` included; the module drops it unless asked)."""
    facts = gather_facts(host, intent)
    plan = make_plan(facts, intent)
    runner = InitramfsRunner(SYSTEM_PATH, check_mode, host.root)
    for warning in plan["warnings"]:
        host.warn(warning)
    if plan["refused"]:
        raise PciDriverRefused(refusal_message(plan["refused"]), plan["refused"])
    changes: List[FileChange] = plan["file_changes"]
    result: Dict[str, Any] = {"changed": False, "devices": plan["devices"], "groups": plan["groups"],
                              "files": [change.host_path for change in changes], "commands": runner.commands,
                              "vfio_nodes": [], "initramfs_updated": False, "refused": [],
                              "diff": [change.diff() for change in changes]}
    initramfs = None
    if initramfs_changes(changes):
        if host.root != "/" and initramfs_setting == "auto":
            host.warn("root is %s: the initramfs is not updated (give initramfs_command to run one)" % host.root)
        else:
            initramfs = initramfs_command(initramfs_setting, host, facts.os_ids)
    ensure_driver(host, plan, intent, timeout, runner)
    apply_files(host, changes, initramfs, runner, result)
    try:
        apply_runtime(host, plan, intent, timeout, check_mode, result)
    except PciDriverError as error:
        if changes and not check_mode:
            raise PciDriverError("%s. The persistent files were written before (%s), so the next boot applies "
                                 "them" % (error, ", ".join(result["files"]))) from None
        raise
    moved = any(entry["action"] in ("bind", "release") for entry in plan["devices"])
    result["changed"] = bool(changes) or moved
    if not check_mode and intent.state == "present" and intent.driver == DEFAULT_DRIVER:
        result["vfio_nodes"] = vfio_nodes(host, plan["devices"], 2.0 if moved else 0.0)
    return result
