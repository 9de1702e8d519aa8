# Copyright: contributors to confidential_gpu.host
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""SR-IOV virtual functions: a PF's state, the writes that reach the wanted state, and their boot persistence.

Everything goes through the PF's sysfs attributes (Linux ``drivers/pci/iov.c``):
``sriov_totalvfs`` (the most VFs the PF driver and firmware allow), ``sriov_numvfs``,
``sriov_drivers_autoprobe``, ``sriov_offset``, ``sriov_stride`` and one
``virtfnN`` link per enabled VF.  What the kernel does with a write to ``sriov_numvfs``
(``sriov_numvfs_store``): a value above ``sriov_totalvfs`` is ``ERANGE``; the current value is a
no-op; without a PF driver that implements ``sriov_configure`` it is ``ENOENT``; ``0`` removes every
VF; any other value while VFs exist is ``EBUSY`` ("Disable before enabling").  So a change from N to
M VFs is ``0`` then ``M``, and it destroys every existing VF.

The flow is the collection's: :func:`read_pf` reads, :func:`plan_pfs` is a pure function of the
states and the wanted values (the ordered writes, or every refusal at once, before anything is
written), :func:`apply_plans` writes and waits for the VFs, and :func:`persistence_changes` gives
the files that re-create the VFs at boot (a configuration file, a POSIX sh script and a systemd
oneshot unit).

Standard library only: this runs on target hosts with Python >= 3.8.
"""

from __future__ import annotations

import errno
import re
import time
from typing import Any, Dict, List, Mapping, NamedTuple, Optional, Sequence, Tuple

from ansible_collections.confidential_gpu.host.plugins.module_utils.pci_device import ADDRESS_RE, normalize_address
from ansible_collections.confidential_gpu.host.plugins.module_utils.pci_topology import (
    PCI_DEVICES,
    virtual_function_addresses,
)
from ansible_collections.confidential_gpu.host.plugins.module_utils import host_write
from ansible_collections.confidential_gpu.host.plugins.module_utils.host_files import FileChange
from ansible_collections.confidential_gpu.host.plugins.module_utils.host_write import seconds
from ansible_collections.confidential_gpu.host.plugins.module_utils.systemd_units import (
    LINK,
    UNIT_DIR,
    change_diff,
    shipped_text,
    unit_changes,
    write_changes,
)
from ansible_collections.confidential_gpu.host.plugins.module_utils.sysfs import HostRoot

CONFIG_FILE = "/etc/confidential-gpu/sriov.conf"
SCRIPT_FILE = "/usr/local/libexec/confidential-gpu/sriov-apply"
SHIPPED_SCRIPT = "sriov-apply.sh"  # the collection's files/, handed over by the action plugin
SHIPPED_UNIT = "confidential-gpu-sriov.service"
DEFAULT_UNIT = "confidential-gpu-sriov.service"
DEFAULT_TIMEOUT = 60
# The longest wait taken: past an hour a write to sriov_numvfs is hung, not slow, and the boot unit's start
# limit (2 x timeout per PF) would hold the boot for hours.
MAX_TIMEOUT = 3600
MAX_VFS = 0xFFFF  # sriov_numvfs takes a u16 (kstrtou16)
UNIT_NAME_RE = re.compile(r"^[A-Za-z0-9:_.\-]+\.service$")
POLL_SECONDS = 0.1

_WRITE_HINTS = {
    errno.ERANGE: "more VFs than sriov_totalvfs allows",
    errno.ENOENT: "the PF has no driver, or its driver cannot configure SR-IOV through sysfs (vfio-pci needs "
                  "enable_sriov=1); bind the PF's own driver (nvme, mlx5_core...) or pci-pf-stub",
    errno.EBUSY: "VFs are still enabled (the kernel changes a non-zero count only through 0) or the PF driver is "
                 "busy",
    errno.EINVAL: "the kernel did not accept the value",
}
_ENABLE_HINT = ("the PF driver could not enable the VFs: check the device firmware (ConnectX: SRIOV_EN and "
                "NUM_OF_VFS with mlxconfig, see docs/sriov.md), SR-IOV support in the BIOS, and free bus numbers "
                "and MMIO space for the VFs (pci=realloc)")


class SriovError(Exception):
    """A request that cannot be carried out; the message names the PF, the file or value, and the fix."""

    def __init__(self, message: str, problems: Optional[List[str]] = None,
                 results: Optional[List[Dict[str, Any]]] = None) -> None:
        super().__init__(message)
        self.problems = problems or [message]
        self.results = results or []


class Want(NamedTuple):
    """What the user asks for one PF; ``drivers_autoprobe`` None leaves it as it is."""

    address: str
    num_vfs: int
    drivers_autoprobe: Optional[bool]


class PfState(NamedTuple):
    """A PF as sysfs shows it now."""

    address: str
    driver: Optional[str]
    total_vfs: int
    num_vfs: int
    drivers_autoprobe: Optional[bool]
    offset: Optional[int]
    stride: Optional[int]
    vfs: Tuple[str, ...]
    vf_drivers: Tuple[Tuple[str, Optional[str]], ...]


class PfPlan(NamedTuple):
    """The writes (host path, value) that bring one PF to what is wanted, in order."""

    state: PfState
    want: Want
    writes: Tuple[Tuple[str, str], ...]

    @property
    def recreates(self) -> bool:
        """True when the VFs are removed or created (sriov_numvfs changes)."""
        return self.want.num_vfs != self.state.num_vfs


# --------------------------------------------------------------------------
# Input
# --------------------------------------------------------------------------

def parse_pfs(items: Sequence[Mapping[str, Any]]) -> List[Want]:
    """The module's ``pfs``, validated and normalized; every problem at once, before anything is read."""
    wants: List[Want] = []
    problems: List[str] = []
    seen: Dict[str, int] = {}
    for index, item in enumerate(items or []):
        raw = str(item.get("address") or "")
        address = normalize_address(raw)
        num_vfs = item.get("num_vfs")
        autoprobe = item.get("drivers_autoprobe")
        if not ADDRESS_RE.match(address):
            problems.append("pfs[%d].address %r is not a PCI address; give it as DDDD:BB:DD.F, like 0000:01:00.0"
                            % (index, raw))
            continue
        if not isinstance(num_vfs, int) or isinstance(num_vfs, bool) or not 0 <= num_vfs <= MAX_VFS:
            problems.append("pfs[%d].num_vfs %r for %s: give a whole number from 0 to %d"
                            % (index, num_vfs, address, MAX_VFS))
            continue
        if address in seen:
            problems.append("pfs[%d]: %s is already pfs[%d]; give each PF once" % (index, address, seen[address]))
            continue
        seen[address] = index
        wants.append(Want(address, num_vfs, None if autoprobe is None else bool(autoprobe)))
    if problems:
        raise SriovError("; ".join(problems), problems)
    return wants


# --------------------------------------------------------------------------
# Reading
# --------------------------------------------------------------------------

def _basename(link: Optional[str]) -> Optional[str]:
    return link.rstrip("/").rsplit("/", 1)[-1] if link else None


def linked_vfs(host: HostRoot, address: str) -> List[str]:
    """The PF's VFs from its ``virtfnN`` links, in VF order (the kernel makes one per enabled VF)."""
    base = "%s/%s" % (PCI_DEVICES, address)
    found = []
    for name in host.listdir(base):
        if name.startswith("virtfn") and name[6:].isdigit():
            target = _basename(host.readlink("%s/%s" % (base, name)))
            if target:
                found.append((int(name[6:]), target))
    return [vf for _index, vf in sorted(found)]


def expected_vfs(address: str, offset: Optional[int], stride: Optional[int], count: int) -> List[str]:
    """VF addresses from the PF's routing ID, First VF Offset and VF Stride, as the kernel computes them."""
    if offset is None or count <= 0:
        return []
    return virtual_function_addresses({"address": address, "sriov": {
        "vf_enabled": True, "num_vfs": count, "vf_offset": offset, "vf_stride": stride or 0}})


# The PF's attributes this module reads or writes.
PF_ATTRIBUTES = ("sriov_totalvfs", "sriov_numvfs", "sriov_drivers_autoprobe", "sriov_offset", "sriov_stride")


def refuse_links_outside_root(host: HostRoot, host_paths: Sequence[str], what: str) -> None:
    """With a root other than /, a link below it that resolves outside it would make a read or a write land on
    another tree (or the controller's own /sys): refuse, naming the link, before touching anything."""
    for host_path in host_paths:
        outside = host.link_outside(host_path)
        if outside:
            raise SriovError("%s: %s is a symbolic link to %s, outside root %s; nothing was read or written. Fix "
                             "or remove the link (a captured tree keeps its sysfs and /etc below root)"
                             % (what, outside[0], outside[1], host.root))


def read_pf(host: HostRoot, address: str) -> PfState:
    """The PF's SR-IOV state; an error when the address is no device or no SR-IOV physical function."""
    base = "%s/%s" % (PCI_DEVICES, address)
    refuse_links_outside_root(host, ["%s/%s" % (base, name) for name in PF_ATTRIBUTES], address)
    if not host.exists(base):
        raise SriovError("%s: no such PCI device (%s is absent); the SR-IOV PFs of a host are the devices whose "
                         "sriov is not null in confidential_gpu.host.pci_topology_info" % (address, base))
    total = host.read_int(base + "/sriov_totalvfs")
    if total is None and host.read_text(base + "/sriov_totalvfs"):
        raise SriovError("%s: %s/sriov_totalvfs holds %r, not a number of VFs; the PF driver or the tree this "
                         "reads is broken: reload the PF's driver, or recapture the tree"
                         % (address, base, (host.read_text(base + "/sriov_totalvfs") or "")[:40]))
    if total is None:
        physfn = _basename(host.readlink(base + "/physfn"))
        if physfn:
            raise SriovError("%s is a virtual function of %s, not a physical function; give the PF's address"
                             % (address, physfn))
        raise SriovError("%s is not an SR-IOV physical function: it has no %s/sriov_totalvfs (no SR-IOV "
                         "capability, or SR-IOV turned off in the BIOS or in the device's firmware; on ConnectX "
                         "see docs/sriov.md for SRIOV_EN and NUM_OF_VFS)" % (address, base))
    num = host.read_int(base + "/sriov_numvfs")
    if num is None:
        raise SriovError("%s: cannot read %s/sriov_numvfs" % (address, base))
    autoprobe = host.read_int(base + "/sriov_drivers_autoprobe")
    offset = host.read_int(base + "/sriov_offset")
    stride = host.read_int(base + "/sriov_stride")
    vfs = linked_vfs(host, address)
    if len(vfs) != num:
        vfs = expected_vfs(address, offset, stride, num) or vfs
    return PfState(
        address=address,
        driver=_basename(host.readlink(base + "/driver")),
        total_vfs=total,
        num_vfs=num,
        drivers_autoprobe=None if autoprobe is None else bool(autoprobe),
        offset=offset,
        stride=stride,
        vfs=tuple(vfs),
        vf_drivers=tuple((vf, _basename(host.readlink("%s/%s/driver" % (PCI_DEVICES, vf)))) for vf in vfs),
    )


# --------------------------------------------------------------------------
# Planning (pure)
# --------------------------------------------------------------------------

def plan_pf(state: PfState, want: Want, force: bool = False) -> PfPlan:
    """The ordered writes for one PF: autoprobe first, then sriov_numvfs 0 (when VFs exist) and N."""
    base = "%s/%s" % (PCI_DEVICES, state.address)
    if want.num_vfs > state.total_vfs:
        raise SriovError("%s: %d VFs asked for, but its sriov_totalvfs is %d; ask for at most %d (the PF driver "
                         "and the device firmware set this limit; on ConnectX raise NUM_OF_VFS, see docs/sriov.md)"
                         % (state.address, want.num_vfs, state.total_vfs, state.total_vfs))
    writes: List[Tuple[str, str]] = []
    if want.drivers_autoprobe is not None and want.drivers_autoprobe != state.drivers_autoprobe:
        if state.drivers_autoprobe is None:
            raise SriovError("%s: %s/sriov_drivers_autoprobe cannot be read (the kernel has it since Linux 4.12); "
                             "leave drivers_autoprobe out" % (state.address, base))
        writes.append((base + "/sriov_drivers_autoprobe", "1" if want.drivers_autoprobe else "0"))
    if want.num_vfs != state.num_vfs:
        if state.driver is None:
            raise SriovError("%s has no driver bound: the kernel changes sriov_numvfs only through the PF's driver "
                             "(ENOENT otherwise); load its driver (nvme, mlx5_core...) or bind the PF to pci-pf-stub "
                             "first" % state.address)
        if state.num_vfs:
            bound = ["%s (%s)" % (vf, driver) for vf, driver in state.vf_drivers if driver]
            if bound and not force:
                raise SriovError(
                    "%s: going from %d to %d VFs removes every VF first, and %s bound to a driver: %s. A VF's user "
                    "loses it (a VF on vfio-pci may be in a guest, and then the kernel holds the write until the "
                    "guest lets the VF go). Release them first (confidential_gpu.host.pci_driver with state "
                    "absent, stop their guests), or set force to true"
                    % (state.address, state.num_vfs, want.num_vfs,
                       "one VF is" if len(bound) == 1 else "%d VFs are" % len(bound), ", ".join(bound)))
            writes.append((base + "/sriov_numvfs", "0"))
        if want.num_vfs:
            writes.append((base + "/sriov_numvfs", str(want.num_vfs)))
    return PfPlan(state, want, tuple(writes))


def plan_pfs(states: Mapping[str, PfState], wants: Sequence[Want], force: bool = False,
             unreadable: Optional[Mapping[str, str]] = None) -> List[PfPlan]:
    """Plans for every PF in ``wants`` order; one error with every problem (unreadable PFs included)."""
    problems = [unreadable[want.address] for want in wants if unreadable and want.address in unreadable]
    plans = []
    for want in wants:
        if want.address not in states:
            continue
        try:
            plans.append(plan_pf(states[want.address], want, force))
        except SriovError as error:
            problems.append(str(error))
    if problems:
        raise SriovError("nothing was changed: " + "; ".join(problems), problems)
    return plans


def read_and_plan(host: HostRoot, wants: Sequence[Want], force: bool = False) -> List[PfPlan]:
    states: Dict[str, PfState] = {}
    unreadable: Dict[str, str] = {}
    for want in wants:
        try:
            states[want.address] = read_pf(host, want.address)
        except SriovError as error:
            unreadable[want.address] = str(error)
    return plan_pfs(states, wants, force, unreadable)


# --------------------------------------------------------------------------
# Applying
# --------------------------------------------------------------------------

def write_attribute(host: HostRoot, host_path: str, value: str, timeout: float, address: str) -> None:
    """Write ``value`` to a sysfs attribute through the one writer (host_write: its timeout policy).

    A write to sriov_numvfs that removes a VF held by a VFIO user (a guest) waits in the kernel until the user
    lets go (vfio_unregister_group_dev: "Device is currently in use, task ... blocked until device is released").
    """
    refuse_links_outside_root(host, [host_path], address)
    try:
        host_write.write_attribute(host, host_path, value + "\n", timeout)
    except host_write.SysfsWriteTimeout as error:
        raise SriovError(
            "%s: writing %s to %s did not return within %s s; the kernel still holds it (process %d, killed, ends "
            "when the kernel lets it go), most likely because a VF is in use by a VFIO user (a guest): the kernel "
            "log says 'Device is currently in use ... blocked until device is released'. Stop the guest, or wait "
            "and run again" % (address, value, host_path, seconds(timeout), error.pid)) from None
    except host_write.SysfsWriteError as error:
        if error.errno == errno.ENOENT and not host.exists(host_path):
            hint = "the file does not exist"
        elif host_path.endswith("/sriov_numvfs") and value != "0":
            hint = _WRITE_HINTS.get(error.errno, _ENABLE_HINT)
        else:
            hint = _WRITE_HINTS.get(error.errno, "see the kernel log")
        raise SriovError("%s: writing %s to %s failed: %s (%s); see the kernel log (dmesg)"
                         % (address, value, host_path, error.reason, hint)) from None


def wait_for_vfs(host: HostRoot, address: str, count: int, timeout: float) -> List[str]:
    """The PF's ``count`` VFs once all are in /sys/bus/pci/devices; an error naming them after ``timeout``."""
    base = "%s/%s" % (PCI_DEVICES, address)
    deadline = time.monotonic() + timeout
    while True:
        # Offset and stride may change with NumVFs (PCIe SR-IOV): read them after the write.
        expected = expected_vfs(address, host.read_int(base + "/sriov_offset"), host.read_int(base + "/sriov_stride"),
                                count)
        if not expected:
            expected = linked_vfs(host, address)
        missing = [vf for vf in expected if not host.exists("%s/%s" % (PCI_DEVICES, vf))]
        if len(expected) == count and not missing:
            return expected
        if time.monotonic() >= deadline:
            names = ", ".join(missing or expected) if expected else "virtfn0 to virtfn%d" % (count - 1)
            raise SriovError(
                "%s: sriov_numvfs is %d, but VF(s) %s did not appear in %s within %s s; the PF driver may have "
                "failed to enable them (see dmesg), or they come up slowly: raise timeout"
                % (address, count, names, PCI_DEVICES, seconds(timeout)))
        time.sleep(POLL_SECONDS)


def pf_result(plan: PfPlan, vfs: Sequence[str], done: bool) -> Dict[str, Any]:
    """One PF in the module's result."""
    state, want = plan.state, plan.want
    return {
        "address": state.address,
        "driver": state.driver,
        "total_vfs": state.total_vfs,
        "num_vfs_before": state.num_vfs,
        "num_vfs": want.num_vfs,
        "drivers_autoprobe_before": state.drivers_autoprobe,
        "drivers_autoprobe": state.drivers_autoprobe if want.drivers_autoprobe is None else want.drivers_autoprobe,
        "vfs_before": list(state.vfs),
        "vfs": list(vfs),
        "recreated": plan.recreates,
        "changed": bool(plan.writes),
        "writes": [{"path": path, "value": value} for path, value in plan.writes],
        "applied": done,
    }


def apply_plans(host: HostRoot, plans: Sequence[PfPlan], timeout: float, check_mode: bool) -> List[Dict[str, Any]]:
    """Carry out the plans in order (nothing in check mode); the PFs' results, VF addresses included."""
    results: List[Dict[str, Any]] = []
    for plan in plans:
        state, want = plan.state, plan.want
        if not plan.recreates:
            vfs: Sequence[str] = state.vfs
        elif check_mode:
            vfs = expected_vfs(state.address, state.offset, state.stride, want.num_vfs)
        else:
            vfs = []
        if check_mode:
            results.append(pf_result(plan, vfs, False))
            continue
        try:
            for path, value in plan.writes:
                write_attribute(host, path, value, timeout, state.address)
            if plan.recreates and want.num_vfs:
                vfs = wait_for_vfs(host, state.address, want.num_vfs, timeout)
        except SriovError as error:
            done = [result["address"] for result in results if result["changed"]]
            message = str(error)
            if done:
                message += " (already changed in this run: %s)" % ", ".join(done)
            raise SriovError(message, [str(error)], results) from None
        results.append(pf_result(plan, vfs, True))
    return results


def state_diff(plan: PfPlan) -> Dict[str, str]:
    """The PF's attributes before and after, for diff mode."""
    state, want = plan.state, plan.want
    autoprobe = state.drivers_autoprobe if want.drivers_autoprobe is None else want.drivers_autoprobe

    def text(num: int, probe: Optional[bool]) -> str:
        shown = "unknown" if probe is None else "%d" % probe
        return "sriov_drivers_autoprobe: %s\nsriov_numvfs: %d\n" % (shown, num)

    header = "%s/%s" % (PCI_DEVICES, state.address)
    return {"before_header": header, "after_header": header,
            "before": text(state.num_vfs, state.drivers_autoprobe), "after": text(want.num_vfs, autoprobe)}


# --------------------------------------------------------------------------
# Persistence: configuration, script, unit
# --------------------------------------------------------------------------

def config_text(wants: Sequence[Want], unit_name: str) -> str:
    lines = ["# Managed by confidential_gpu.host.sriov_vfs (rewritten on every run); read at boot by %s." % unit_name,
             "# PF address, number of VFs, sriov_drivers_autoprobe (1, 0, or - to leave it as the kernel has it)."]
    for want in wants:
        probe = "-" if want.drivers_autoprobe is None else ("1" if want.drivers_autoprobe else "0")
        lines.append("%s %d %s" % (want.address, want.num_vfs, probe))
    return "\n".join(lines) + "\n"


def unit_text(shipped: Mapping[str, str], pf_count: int, timeout: int) -> str:
    """The oneshot unit (files/confidential-gpu-sriov.service).  See docs/sriov.md for its ordering decisions."""
    values = {"TIMEOUT": str(timeout), "START_TIMEOUT": str(2 * timeout * max(pf_count, 1) + 30)}
    return shipped_text(shipped, SHIPPED_UNIT, values)


def persistence_changes(host: HostRoot, wants: Sequence[Want], persist: bool, unit_name: str, timeout: int,
                        shipped: Mapping[str, str]) -> List[FileChange]:
    """Files to write or remove, and the unit's enablement links to make or remove (persistence off, no PF)."""
    keep = persist and bool(wants)
    unit = script = None
    if keep:
        try:
            unit = unit_text(shipped, len(wants), timeout)
            script = shipped_text(shipped, SHIPPED_SCRIPT)
        except ValueError as error:
            raise SriovError(str(error)) from None
    desired = ((CONFIG_FILE, config_text(wants, unit_name) if keep else None, 0o644), (SCRIPT_FILE, script, 0o755),
               ("%s/%s" % (UNIT_DIR, unit_name), unit, 0o644))
    for host_path in (entry[0] for entry in desired):
        refuse_links_outside_root(host, [host_path], host_path)
    return unit_changes(host, unit_name, unit, desired, SriovError)


# --------------------------------------------------------------------------
# The module's work
# --------------------------------------------------------------------------

def manage(host: HostRoot, wants: Sequence[Want], persist: bool = True, unit_name: str = DEFAULT_UNIT,
           timeout: int = DEFAULT_TIMEOUT, force: bool = False, check_mode: bool = False,
           shipped: Optional[Mapping[str, str]] = None) -> Dict[str, Any]:
    """Plan, apply (unless check mode) and persist; the module's result with ``diff``."""
    # fullmatch: a trailing newline is no name; systemd takes names of at most 255 bytes
    # (systemd src/basic/unit-name.h, v255: UNIT_NAME_MAX 256, the NUL included)
    if not UNIT_NAME_RE.fullmatch(unit_name or "") or len(unit_name) > 255:
        raise SriovError("unit_name %r: give a systemd service name (letters, digits, ':', '_', '.', '-') ending "
                         "in .service, like %s" % (unit_name, DEFAULT_UNIT))
    if not 0 < timeout <= MAX_TIMEOUT:
        raise SriovError("timeout %r: give a number of seconds above 0 and at most %d (one hour)"
                         % (timeout, MAX_TIMEOUT))
    plans = read_and_plan(host, wants, force)
    changes = persistence_changes(host, wants, persist, unit_name, timeout, shipped or {})
    results = apply_plans(host, plans, timeout, check_mode)
    if not check_mode:
        write_changes(host, changes, SriovError)
    unit_path = "%s/%s" % (UNIT_DIR, unit_name)
    diff = [state_diff(plan) for plan in plans if plan.writes] + [change_diff(change) for change in changes]
    return {
        "changed": any(plan.writes for plan in plans) or bool(changes),
        "pfs": results,
        "vfs": [vf for result in results for vf in result["vfs"]],
        "files": [change.host_path for change in changes],
        "unit_name": unit_name,
        "unit_path": unit_path,
        "unit_changed": any(change.host_path == unit_path or change.mode == LINK for change in changes),
        "persisted": persist and bool(wants),
        "diff": diff,
    }
