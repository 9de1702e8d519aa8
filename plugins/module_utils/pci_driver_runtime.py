# Copyright: contributors to confidential_gpu.host
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""pci_driver's runtime moves through :mod:`pci_bind`: loading the driver, binding and releasing functions, the
VFIO device nodes.  Standard library only."""

from __future__ import annotations

import functools
from typing import Any, Dict, List, Sequence

from ansible_collections.confidential_gpu.host.plugins.module_utils import pci_bind
from ansible_collections.confidential_gpu.host.plugins.module_utils.host_write import CommandRunner
from ansible_collections.confidential_gpu.host.plugins.module_utils.pci_driver_model import (
    DEFAULT_DRIVER,
    Intent,
    PciDriverError,
)
from ansible_collections.confidential_gpu.host.plugins.module_utils.sysfs import HostRoot


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
