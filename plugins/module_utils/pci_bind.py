# Copyright: contributors to confidential_gpu.host
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Move one PCI function between kernel drivers at runtime, through sysfs.

The kernel's own interface, as ``driverctl`` and libvirt use it
(Documentation/ABI/testing/sysfs-bus-pci):

1. ``/sys/bus/pci/devices/<address>/driver_override``: the only driver that may
   bind the function from now on (an empty line clears it);
2. ``/sys/bus/pci/devices/<address>/driver/unbind``: release it from its
   current driver.  This write runs the driver's ``remove`` callback, which can
   wait for as long as a process holds the device (an open ``/dev/nvidia*``,
   a VM on ``/dev/vfio/N``), so it runs in a child process with a time limit:
   the module reports which device and why instead of hanging;
3. ``/sys/bus/pci/drivers_probe``: let the kernel bind the function again,
   which now means the driver of the override (or, with the override cleared,
   the default driver);
4. poll the ``driver`` link until it names the wanted driver.

The target driver is loaded with ``modprobe`` when
``/sys/bus/pci/drivers/<driver>`` is missing, on the live host only.  Every
path goes through :class:`HostRoot`, so the same code runs against a tree.
Generic on purpose: any caller that must move a function (GPU, VF) uses it.

Standard library only: this runs on target hosts with Python >= 3.8.
"""

from __future__ import annotations

import os
import time
from typing import Callable, Optional

from ansible_collections.confidential_gpu.host.plugins.module_utils import host_write
from ansible_collections.confidential_gpu.host.plugins.module_utils.sysfs import HostRoot

PCI_DEVICES = "/sys/bus/pci/devices"
PCI_DRIVERS = "/sys/bus/pci/drivers"
DRIVERS_PROBE = "/sys/bus/pci/drivers_probe"
POLL_INTERVAL = 0.05


class BindError(Exception):
    """A runtime driver change that failed or did not finish in time; the message names the device."""


class WriteTimeout(BindError):
    """A sysfs write that the kernel still blocks after the time limit."""


def device_path(address: str, name: str = "") -> str:
    """Host path of a function's sysfs directory or of one of its attributes."""
    return "%s/%s/%s" % (PCI_DEVICES, address, name) if name else "%s/%s" % (PCI_DEVICES, address)


def current_driver(host: HostRoot, address: str) -> Optional[str]:
    """Name of the driver bound to the function now (its ``driver`` link), None when unbound."""
    link = host.readlink(device_path(address, "driver"))
    return link.rstrip("/").rsplit("/", 1)[-1] if link else None


def driver_override(host: HostRoot, address: str) -> Optional[str]:
    """The function's ``driver_override``; None when unset (``(null)``) or when the kernel has none."""
    text = host.read_text(device_path(address, "driver_override"))
    return None if text in (None, "", "(null)") else text


def driver_loaded(host: HostRoot, driver: str) -> bool:
    """Is ``driver`` registered with the PCI bus (``/sys/bus/pci/drivers/<driver>``)?"""
    return os.path.isdir(host.path("%s/%s" % (PCI_DRIVERS, driver)))


def driver_module(host: HostRoot, driver: str) -> Optional[str]:
    """Kernel module that provides a PCI driver (``bochs`` for ``bochs-drm``); None when built in or unknown."""
    link = host.readlink("%s/%s/module" % (PCI_DRIVERS, driver))
    return link.rstrip("/").rsplit("/", 1)[-1] if link else None


def write_attribute(host: HostRoot, host_path: str, value: str, timeout: float = 5.0) -> None:
    """Write a sysfs attribute through the collection's one writer (host_write: its timeout policy)."""
    try:
        host_write.write_attribute(host, host_path, value, timeout)
    except host_write.SysfsWriteTimeout as error:
        raise WriteTimeout(str(error)) from None
    except host_write.SysfsWriteError as error:
        raise BindError(str(error)) from None


def holder_hint(address: str, driver: Optional[str], group: Optional[int]) -> str:
    """How to find the process that holds a function, by the driver it is on."""
    if driver in ("vfio-pci", "vfio_pci") and group is not None:
        return "a VM or container still has it open: fuser -v /dev/vfio/%d /dev/vfio/devices/*" % group
    if driver and driver.startswith("nvidia"):
        return ("a process holds the GPU (nvidia-persistenced, DCGM, a CUDA job): fuser -v /dev/nvidia*; "
                "stop it, then run again")
    return "a process holds the device: lsof or fuser -v on its /dev nodes (/dev/dri/*, /dev/snd/*) shows which"


def unbind(host: HostRoot, address: str, timeout: float, group: Optional[int] = None) -> Optional[str]:
    """Release the function from its driver; returns the driver it left (None when it had none)."""
    driver = current_driver(host, address)
    if driver is None:
        return None
    try:
        write_attribute(host, "%s/%s/unbind" % (PCI_DRIVERS, driver), address, timeout)
    except WriteTimeout:
        raise WriteTimeout("%s: unbinding it from %s did not finish within %g s; %s. Its driver_override "
                           "stays set, so the device goes to the new driver once it is released and probed "
                           "(run again)" % (address, driver, timeout, holder_hint(address, driver, group))) from None
    except BindError as error:
        raise BindError("%s: cannot unbind it from %s: %s" % (address, driver, error)) from None
    return driver


def probe(host: HostRoot, address: str, timeout: float) -> None:
    """Ask the kernel to bind the function to a driver that matches it (``drivers_probe``)."""
    try:
        write_attribute(host, DRIVERS_PROBE, address, timeout)
    except BindError as error:
        raise BindError("%s: probing a driver for it failed: %s" % (address, error)) from None


def wait_for(condition: Callable[[], bool], timeout: float) -> bool:
    """Poll ``condition`` until it holds or ``timeout`` seconds pass; its last value."""
    deadline = time.monotonic() + timeout
    while True:
        if condition():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(POLL_INTERVAL)


def wait_for_driver(host: HostRoot, address: str, driver: str, timeout: float) -> None:
    """Wait until the function's ``driver`` link names ``driver``; :class:`BindError` naming what it shows."""
    if wait_for(lambda: current_driver(host, address) == driver, timeout):
        return
    shown = current_driver(host, address)
    raise BindError("%s: not bound to %s within %g s (driver now: %s); the kernel log (dmesg) says why the "
                    "probe failed" % (address, driver, timeout, shown or "none"))


def load_driver(host: HostRoot, driver: str, timeout: float, runner: host_write.CommandRunner) -> None:
    """Load the module of ``driver`` when the PCI bus does not know it yet (live host only).

    ``runner.commands`` gets the command line (also in check mode, where it is not run).
    """
    if driver_loaded(host, driver):
        return
    if host.root != "/":
        raise BindError("driver %s is not loaded in %s (no %s/%s); modprobe runs only on the live host (root /)"
                        % (driver, host.root, PCI_DRIVERS, driver))
    try:
        runner.change(["modprobe", driver], timeout)
    except runner.error as error:
        raise BindError("driver %s is not loaded: %s; is the kernel module installed for this kernel?"
                        % (driver, error)) from None
    if not runner.check_mode and not wait_for(lambda: driver_loaded(host, driver), min(timeout, 5.0)):
        raise BindError("modprobe %s succeeded but %s/%s did not appear; see the kernel log (dmesg)"
                        % (driver, PCI_DRIVERS, driver))


def bind(host: HostRoot, address: str, driver: str, timeout: float, group: Optional[int] = None) -> Optional[str]:
    """Move the function to ``driver``: override, unbind, probe, wait.  Returns the driver it left.

    The driver must be loaded already (:func:`load_driver`).
    """
    write_attribute(host, device_path(address, "driver_override"), driver)
    left = unbind(host, address, timeout, group)
    if current_driver(host, address) != driver:
        probe(host, address, timeout)
    wait_for_driver(host, address, driver, timeout)
    return left


def release(host: HostRoot, address: str, driver: str, timeout: float, group: Optional[int] = None) -> Optional[str]:
    """Take the function from ``driver`` back to its default driver; returns the driver it has afterwards.

    Clears an override naming ``driver``, unbinds the function when ``driver``
    holds it and probes again.  Some drivers probe asynchronously, so the new
    driver link is awaited for a moment; a function no driver wants stays
    unbound (None).
    """
    if driver_override(host, address) == driver:
        write_attribute(host, device_path(address, "driver_override"), "\n")
    if current_driver(host, address) != driver:
        return current_driver(host, address)
    unbind(host, address, timeout, group)
    probe(host, address, timeout)
    wait_for(lambda: current_driver(host, address) is not None, min(timeout, 2.0))
    return current_driver(host, address)
