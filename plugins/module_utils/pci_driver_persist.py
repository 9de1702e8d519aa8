# Copyright: contributors to confidential_gpu.host
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""pci_driver's persistent files: driverctl overrides, the udev rule and its helper, the modprobe.d file for
early binding, the initramfs generators' drop-ins; their content from the plan, their writing and the initramfs
update.  Standard library only."""

from __future__ import annotations

import os
import re
import shlex
from typing import Any, Dict, Iterable, List, NamedTuple, Optional, Sequence, Set, Tuple

from ansible_collections.confidential_gpu.host.plugins.module_utils import host_files
from ansible_collections.confidential_gpu.host.plugins.module_utils.host_files import FileChange
from ansible_collections.confidential_gpu.host.plugins.module_utils.host_write import CommandRunner
from ansible_collections.confidential_gpu.host.plugins.module_utils.pci_device import NVIDIA, is_bridge
from ansible_collections.confidential_gpu.host.plugins.module_utils.pci_driver_model import (
    Facts,
    Intent,
    PciDriverError,
)
from ansible_collections.confidential_gpu.host.plugins.module_utils.systemd_units import shipped_text
from ansible_collections.confidential_gpu.host.plugins.module_utils.sysfs import HostRoot

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
RULE_RE = re.compile(r'^ACTION=="add",\s*SUBSYSTEM=="pci",\s*KERNEL=="([^"]+)"')
MARKER = "Managed by confidential_gpu.host.pci_driver"
# The collection's files/ that the action plugin hands over: the udev helper and the generators' drop-ins, whose
# @DRIVER@ and @MODULES@ are filled in here.
SHIPPED_HELPER = "pci-override.sh"

RULES_HEADER = (
    "# %s.\n"
    "# On boot, hotplug and SR-IOV VF creation, give these PCI functions the driver named in\n"
    "# %s/pci-<address> (driverctl's format). Sorted before 80-drivers.rules, so that the\n"
    "# override is set before udev loads the default driver's module.\n" % (MARKER, DRIVERCTL_DIR)
)


class InitramfsGenerator(NamedTuple):
    """An initramfs generator: the configuration directory that tells the host has it, and our drop-in there."""

    directory: str
    dropin: str
    mode: int
    shipped: str


# Drop-ins that put the early-binding driver into the initramfs, by generator: a hook, a configuration file.
INITRAMFS_GENERATORS = {
    "initramfs-tools": InitramfsGenerator(INITRAMFS_TOOLS_DIR, INITRAMFS_TOOLS_HOOK, 0o755,
                                          "confidential-gpu-vfio-initramfs-hook.sh"),
    "dracut": InitramfsGenerator(DRACUT_CONF_DIR, DRACUT_CONF, 0o644, "confidential-gpu-vfio-dracut.conf"),
}
# Files the initramfs carries a copy of: a change to one of them is followed by the initramfs update.
INITRAMFS_INPUTS = (MODPROBE_CONF,) + tuple(generator.dropin for generator in INITRAMFS_GENERATORS.values())


def read_file(host: HostRoot, host_path: str) -> Optional[str]:
    """A file's text; ``None`` when it does not exist; an error naming it when it cannot be read."""
    return host_files.read_file(host, host_path, PciDriverError)[0]


def shipped(intent: Intent, name: str, values: Optional[Dict[str, str]] = None) -> str:
    """File ``name`` of the collection's files/ as the action plugin handed it over, placeholders filled."""
    try:
        return shipped_text(intent.shipped or {}, name, values)
    except ValueError as error:
        raise PciDriverError(str(error)) from None


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


def parse_modprobe_conf(text: Optional[str]) -> Dict[str, Tuple[List[str], List[str]]]:
    """Each driver our modprobe.d file names, in modprobe's spelling (``vfio_pci``: ``vfio-pci``): its
    (``ids=`` IDs, modules that load after it by ``softdep``)."""
    drivers: Dict[str, Tuple[List[str], List[str]]] = {}
    for line in (text or "").splitlines():
        words = line.split()
        if len(words) >= 3 and words[0] == "options":
            ids = [item for word in words[2:] if word.startswith("ids=") for item in word[4:].split(",") if item]
            if ids:
                drivers.setdefault(words[1].replace("_", "-"), ([], []))[0].extend(ids)
        elif len(words) >= 4 and words[0] == "softdep" and words[2] == "pre:":
            for driver in set(words[3:]):
                drivers.setdefault(driver.replace("_", "-"), ([], []))[1].append(words[1])
    return drivers


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


def early_binding_content(facts: Facts, intent: Intent, targets: Sequence[Dict[str, Any]],
                          warnings: List[str]) -> Optional[str]:
    """New content of our modprobe.d file: the targets' IDs added (present) or taken out (absent)."""
    before = facts.files.get(MODPROBE_CONF)
    conf = parse_modprobe_conf(before)
    ids, softdeps = conf.get(intent.driver.replace("_", "-"), ([], []))
    mine = {"%s:%s" % (dev["vendor_id"], dev["device_id"]) for dev in targets}
    if intent.state == "absent":
        if not set(ids) & mine:
            return before
        return render_modprobe_conf(intent.driver, [i for i in ids if i not in mine], softdeps)
    # One driver per file: modprobe honours only the first softdep line naming a module (kmod v30,
    # libkmod/libkmod-module.c, kmod_module_get_softdeps), so a second driver could not load before nvidia too.
    others = sorted(driver for driver, (claimed, _softdeps) in conf.items()
                    if claimed and driver != intent.driver.replace("_", "-"))
    if others:
        raise PciDriverError("early binding: %s serves one driver and already holds %s's ids=; bind these devices to "
                             "%s at runtime and by the udev rule (early_binding: false), or first take %s's devices "
                             "off it (state: absent)" % (MODPROBE_CONF, others[0], intent.driver, others[0]))
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
    values = {"DRIVER": intent.driver, "MODULES": " ".join(INITRAMFS_MODULES.get(intent.driver, ()))}
    for name, generator in INITRAMFS_GENERATORS.items():
        if early and name in facts.initramfs_generators:
            wanted[generator.dropin] = (shipped(intent, generator.shipped, values), generator.mode)
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
    wanted[HELPER] = (shipped(intent, SHIPPED_HELPER) if rules_text else None, 0o755)
    if intent.early_binding or intent.state == "absent":
        modprobe = early_binding_content(facts, intent, targets, warnings)
        wanted[MODPROBE_CONF] = (modprobe, 0o644)
        wanted.update(initramfs_dropins(facts, intent, modprobe is not None, warnings))
    return [FileChange(path, files.get(path), after, mode) for path, (after, mode) in sorted(wanted.items())
            if files.get(path) != after]


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
