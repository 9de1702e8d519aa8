# Copyright: contributors to confidential_gpu.host
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The write side beside :class:`HostRoot`: one sysfs attribute writer and one command runner.

:func:`write_attribute` is the only way a module writes a sysfs file (``driver_override``, ``unbind``,
``sriov_numvfs``, ``nr_hugepages``, a config-space register), and :func:`read_attributes` the way it reads one
whose read can wait in the kernel; :class:`CommandRunner` is the only way it runs a host tool (modprobe,
initramfs generators, boot-loader tools).  Files the modules own go through
``host_files``.  Standard library only: this runs on target hosts with Python >= 3.8.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from typing import Dict, List, Optional, Sequence, Tuple, Type, Union

from ansible_collections.confidential_gpu.host.plugins.module_utils.sysfs import HostRoot

# --------------------------------------------------------------------------
# Sysfs attribute writes
# --------------------------------------------------------------------------

# The timeout policy, the same for every attribute.  Some writes wait in the kernel for as long as another
# party holds the device: an unbind or a sriov_numvfs write that removes a VF a guest holds waits in
# vfio_unregister_group_dev() ("blocked until device is released", torvalds/linux drivers/vfio/vfio_main.c), a
# config-space write waits in pci_wait_cfg() while the device is being reset (drivers/pci/access.c).  A thread
# blocked there would keep the module's process from exiting, so the write runs in a child process.  On timeout
# the child is killed (SIGKILL) and reaped for at most REAP_SECONDS, and the module fails naming the file, the
# value and the seconds: it never hangs.  A task asleep in the kernel dies only when the kernel lets it go, so
# the write may still take effect then; the next run reads the state again and plans from what it finds.
REAP_SECONDS = 1.0

# Writes one value to one file and nothing else, from argv: path, hex data, offset (-1: from the start, with
# O_TRUNC as a shell's ">" uses it; sysfs ignores it, a file in a tree then holds exactly the value), bytes to
# read back (printed as hex).  Never creates a file.  Errors: "<stage> <errno> <strerror>" on stderr.
_WRITER = """
import os, sys
path, data, offset, back = sys.argv[1], bytes.fromhex(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
stage = "open"
try:
    fd = os.open(path, os.O_WRONLY | os.O_TRUNC if offset < 0 and not back else os.O_RDWR)
    try:
        stage = "write"
        done = os.write(fd, data) if offset < 0 else os.pwrite(fd, data, offset)
        if done != len(data):
            raise OSError(5, "short write (%d of %d bytes)" % (done, len(data)))
        if back:
            sys.stdout.write(os.pread(fd, back, max(offset, 0)).hex())
    finally:
        os.close(fd)
except OSError as error:
    sys.stderr.write("%s %d %s" % (stage, error.errno or 0, error.strerror or error))
    sys.exit(1)
"""


class SysfsWriteError(Exception):
    """A write the kernel refused; ``errno``, ``reason`` (its strerror) and ``stage`` (open, write) say how."""

    def __init__(self, message: str, errno: int = 0, reason: str = "", stage: str = "write") -> None:
        super().__init__(message)
        self.errno = errno
        self.reason = reason or message
        self.stage = stage


class SysfsWriteTimeout(SysfsWriteError):
    """The kernel still held the write after the time limit; ``pid`` is the writer, killed (see REAP_SECONDS)."""

    def __init__(self, message: str, pid: int) -> None:
        super().__init__(message, stage="timeout")
        self.pid = pid


def seconds(value: float) -> str:
    """A time limit as people write it: ``1``, ``0.5``."""
    return ("%d" % value) if float(value).is_integer() else ("%g" % value)


class _ChildTimeout(Exception):
    def __init__(self, pid: int) -> None:
        super().__init__(pid)
        self.pid = pid


def _run_child(argv: List[str], timeout: float) -> Tuple[subprocess.Popen, bytes, bytes]:
    """Run ``argv`` in a child: (child, stdout, stderr).

    The policy above: a child still in the kernel after ``timeout`` is killed, reaped for at most REAP_SECONDS,
    and :class:`_ChildTimeout` raised.  OSError when it cannot start.
    """
    child = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             start_new_session=True)
    try:
        out, err = child.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        child.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            child.wait(timeout=REAP_SECONDS)
        raise _ChildTimeout(child.pid) from None
    return child, out, err


def write_attribute(host: HostRoot, host_path: str, value: Union[str, bytes], timeout: float,
                    offset: Optional[int] = None, read_back: int = 0) -> bytes:
    """Write ``value`` to an existing file below the root, at ``offset`` when given; what reads back after it.

    The one writer and its one timeout policy (above).  Messages name the file and the value; callers add the
    device and the fix.
    """
    data = value.encode() if isinstance(value, str) else value
    shown = value.strip() if isinstance(value, str) else "0x" + data.hex()
    try:
        child, out, err = _run_child([sys.executable or "python3", "-I", "-S", "-c", _WRITER, host.path(host_path),
                                      data.hex(), str(-1 if offset is None else offset), str(read_back)], timeout)
    except OSError as error:
        raise SysfsWriteError("cannot start a writer for %s: %s" % (host_path, error)) from None
    except _ChildTimeout as timed_out:
        raise SysfsWriteTimeout("writing %s to %s did not return within %s s (writer process %d killed; the write "
                                "may still take effect when the kernel lets it go)"
                                % (shown, host_path, seconds(timeout), timed_out.pid), timed_out.pid) from None
    if child.returncode == 0:
        return bytes.fromhex(out.decode("ascii", "replace").strip() or "")
    stage, _space, rest = err.decode("utf-8", "replace").strip().partition(" ")
    code, _space, reason = rest.partition(" ")
    reason = reason or "exit status %d" % child.returncode
    if stage == "open":
        message = "cannot open %s for writing: %s" % (host_path, reason)
    else:
        message = "writing %s to %s failed: %s" % (shown, host_path, reason)
    raise SysfsWriteError(message, int(code) if code.isdigit() else 0, reason, stage)


def read_attributes(host: HostRoot, host_paths: Sequence[str], timeout: float) -> Optional[List[Optional[str]]]:
    """Each file's text as :meth:`HostRoot.read_text` gives it (None: missing or unreadable), each read by ``cat``
    in a child with the writer's timeout policy; ``None`` when one did not answer within ``timeout`` (the rest are
    not tried: what holds one read holds the next) or no child could start.

    For attributes whose read takes a lock another task may hold for ever (vtconsole's ``bind``).  ``cat`` starts
    in about a millisecond where a Python child takes 10 to 20; Ansible's own remote commands need coreutils too.
    """
    texts: List[Optional[str]] = []
    for host_path in host_paths:
        try:
            child, out, _err = _run_child(["cat", host.path(host_path)], timeout)
        except (OSError, _ChildTimeout):
            return None
        texts.append(out.decode("utf-8", "replace").strip() if child.returncode == 0 else None)
    return texts


# --------------------------------------------------------------------------
# Commands
# --------------------------------------------------------------------------

SYSTEM_PATH = ("/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin")
# The root mapping, the same for every tool: each runs with the module's root in this variable.  The real tools
# ignore it and act on the live host (which is why modprobe is run only when the root is /); the stand-ins in
# tests/lib/standins act below it.
ROOT_ENV = "CONFIDENTIAL_GPU_ROOT"
OUTPUT_TAIL = 2000


class CommandError(Exception):
    """A tool that is missing, cannot start, fails or does not finish; the message names the command."""


class CommandRunner:
    """Runs tools found on ``search_path`` with the root in ``$CONFIDENTIAL_GPU_ROOT``.

    ``commands`` records every changing command, also in check mode, where it is not run.  Subclasses set
    ``error`` (the exception their module reports) and ``missing_hint`` (how to get a missing tool).
    """

    error: Type[Exception] = CommandError
    missing_hint = "install it"

    def __init__(self, search_path: Sequence[str], check_mode: bool, root: str) -> None:
        self.search_path = list(search_path)
        self.check_mode = check_mode
        self.root = root
        self.env = dict(os.environ, **{ROOT_ENV: root})
        self.commands: List[List[str]] = []

    def find(self, name: str) -> Optional[str]:
        """The executable for ``name``: an absolute path as given, else the first on the search path."""
        if os.path.isabs(name):
            return name if os.access(name, os.X_OK) else None
        for directory in self.search_path:
            path = os.path.join(directory, name)
            if os.path.isfile(path) and os.access(path, os.X_OK):
                return path
        return None

    def run(self, argv: List[str], timeout: Optional[float] = None,
            env: Optional[Dict[str, str]] = None) -> subprocess.CompletedProcess:
        """Run a command and return it whatever its exit status; an error when it cannot run or finish."""
        path = self.find(argv[0])
        if path is None:
            raise self.error("%s not found in %s; %s" % (argv[0], ":".join(self.search_path), self.missing_hint))
        try:
            return subprocess.run([path] + argv[1:], stdin=subprocess.DEVNULL, capture_output=True, text=True,
                                  env=env or self.env, timeout=timeout, check=False)
        except subprocess.TimeoutExpired:
            raise self.error("%s did not finish within %s s" % (" ".join(argv), seconds(timeout or 0))) from None
        except OSError as error:
            raise self.error("cannot run %s: %s" % (path, error)) from None

    def _checked(self, argv: List[str], timeout: Optional[float], env: Dict[str, str]) -> str:
        proc = self.run(argv, timeout, env)
        if proc.returncode != 0:
            text = (proc.stderr or "").strip() or (proc.stdout or "").strip() or "no output"
            raise self.error("%s failed (rc=%d): %s" % (" ".join(argv), proc.returncode, text[-OUTPUT_TAIL:]))
        return proc.stdout

    def read(self, argv: List[str], timeout: Optional[float] = None) -> str:
        """Run a command that changes nothing (also in check mode, in the C locale); its output, or an error."""
        return self._checked(argv, timeout, dict(self.env, LC_ALL="C"))

    def change(self, argv: List[str], timeout: Optional[float] = None) -> None:
        """Record a changing command and run it unless in check mode; an error when it fails."""
        self.commands.append(list(argv))
        if not self.check_mode:
            self._checked(argv, timeout, self.env)
