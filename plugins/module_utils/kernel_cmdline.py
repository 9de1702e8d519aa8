# Copyright: contributors to confidential_gpu.host
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Kernel command line: detect the boot setup and bring it to a request (the module's one entry point).

The argument model is :mod:`kernel_args_model`; each boot setup has its backend (:mod:`boot_grub`,
:mod:`boot_grubby`, :mod:`boot_systemd_boot`, :mod:`boot_rpm_ostree`) on :mod:`boot_backend`.
Standard library only: this runs on target hosts with Python >= 3.8.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional

from ansible_collections.confidential_gpu.host.plugins.module_utils.boot_backend import Backend, Runner
from ansible_collections.confidential_gpu.host.plugins.module_utils.boot_grub import GrubBackend
from ansible_collections.confidential_gpu.host.plugins.module_utils.boot_grubby import GrubbyBackend
from ansible_collections.confidential_gpu.host.plugins.module_utils.boot_rpm_ostree import RpmOstreeBackend
from ansible_collections.confidential_gpu.host.plugins.module_utils.boot_systemd_boot import SystemdBootBackend
from ansible_collections.confidential_gpu.host.plugins.module_utils.kernel_args_model import (
    Arg,
    KernelCmdlineError,
    Request,
    pending_changes,
    split_cmdline,
)
from ansible_collections.confidential_gpu.host.plugins.module_utils.sysfs import HostRoot, os_release_ids

BACKENDS = ("grub", "grubby", "systemd_boot", "rpm_ostree")


def detect_backend(host: HostRoot) -> str:
    """The backend that boots this host, from files below the root; an error that lists what was seen."""
    if host.exists("/run/ostree-booted"):
        return "rpm_ostree"
    if any(host.exists(d + "/loader/loader.conf") for d in ("/efi", "/boot/efi", "/boot")):
        return "systemd_boot"
    family = os_release_ids(host)
    if family & {"rhel", "fedora", "centos"}:
        return "grubby"
    if family & {"debian", "ubuntu"} and host.exists(GrubBackend.DEFAULTS):
        return "grub"
    raise KernelCmdlineError(
        "unknown boot setup: no /run/ostree-booted (rpm-ostree), no loader/loader.conf in /efi, /boot/efi or /boot "
        "(systemd-boot), /etc/os-release ID/ID_LIKE %s is neither EL/Fedora (grubby) nor Debian/Ubuntu with %s "
        "(GRUB); pass backend explicitly if one of them applies"
        % (" ".join(sorted(family)) or "unreadable", GrubBackend.DEFAULTS))


def make_backend(name: str, host: HostRoot, runner: Runner, grub_dropin_name: str) -> Backend:
    if name == "auto":
        name = detect_backend(host)
    if name == "grub":
        return GrubBackend(host, runner, grub_dropin_name)
    classes = {"grubby": GrubbyBackend, "systemd_boot": SystemdBootBackend, "rpm_ostree": RpmOstreeBackend}
    if name not in classes:
        raise KernelCmdlineError("unknown backend %r: use auto or one of %s" % (name, ", ".join(BACKENDS)))
    return classes[name](host, runner)


def read_active(host: HostRoot) -> Optional[List[Arg]]:
    text = host.read_text("/proc/cmdline")
    return None if text is None else split_cmdline(text)[0]


def manage(host: HostRoot, runner: Runner, backend_name: str, request: Request,
           grub_dropin_name: str = "99-confidential-gpu.cfg") -> Dict[str, Any]:
    """Bring the boot configuration to the request; the module's result (without ``diff``) plus ``diff``."""
    backend = make_backend(backend_name, host, runner, grub_dropin_name)
    outcome = backend.apply(request)
    active = read_active(host)
    pending = pending_changes(outcome.configured, active, request) if active is not None else []
    return {
        "changed": outcome.changed,
        "backend": backend.name,
        "configured": [a.text for a in outcome.configured],
        "configured_before": [a.text for a in outcome.before],
        "active": None if active is None else [a.text for a in active],
        "pending": pending,
        "reboot_required": bool(pending) if active is not None else outcome.changed,
        "commands": runner.commands,
        "files": outcome.files,
        "grub_reader": getattr(backend, "reader", None),
        "diff": outcome.diff,
    }
