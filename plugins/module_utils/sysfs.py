# Copyright: contributors to confidential_gpu.host
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Read sysfs, procfs, /etc and /dev below a root prefix.

Every module of this collection takes a ``root`` option so that it can run
against the live host (``/``) or against a captured or synthetic tree (tests,
offline replay of a capture).  All file access goes through :class:`HostRoot`,
which maps absolute host paths such as ``/sys/bus/pci/devices`` below that
root and turns the usual sysfs failure modes (missing attribute, permission
denied, garbage content) into ``None`` plus a warning instead of a crash.

Standard library only: this runs on target hosts with Python >= 3.8.
"""

from __future__ import annotations

import errno
import os
from typing import List, Optional, Set, Tuple


class HostRootError(Exception):
    """The root prefix cannot be used at all (missing, not a directory)."""


class HostRoot:
    """Access to a host's files below ``root`` (``/`` for the live host)."""

    def __init__(self, root: str = "/") -> None:
        if not root:
            root = "/"
        if not os.path.isdir(root):
            raise HostRootError(
                "root %r does not exist or is not a directory; pass the host's "
                "root ('/') or the top of a captured tree that contains sys/ and proc/" % root
            )
        self.root = os.path.abspath(root)
        self.prefix = "" if self.root == "/" else self.root
        self.warnings: List[str] = []

    def path(self, host_path: str) -> str:
        """Map an absolute host path (``/sys/...``) below the root (plain concatenation: it runs per attribute)."""
        return self.prefix + host_path

    def warn(self, message: str) -> None:
        if message not in self.warnings:
            self.warnings.append(message)

    def exists(self, host_path: str) -> bool:
        return os.path.exists(self.path(host_path))

    def read_bytes(self, host_path: str, limit: int = 1 << 20) -> Optional[bytes]:
        """File content (at most ``limit`` bytes); ``None`` when missing or unreadable.

        Raw ``os.read`` calls: sysfs attributes are read by the thousand, and
        Python file objects cost more than the read itself.
        """
        fd = self._open_below_root(host_path)
        if fd is None:
            return None
        try:
            chunks = []
            size = 0
            while size < limit:
                chunk = os.read(fd, min(65536, limit - size))
                if not chunk:
                    break
                chunks.append(chunk)
                size += len(chunk)
            return b"".join(chunks)
        except OSError as error:
            self.warn("cannot read %s: %s" % (host_path, error.strerror or error))
            return None
        finally:
            os.close(fd)

    def _open_below_root(self, host_path: str) -> Optional[int]:
        """A read-only descriptor of the file, or ``None`` (warned) when it cannot be read. Below a root other
        than /, a file that is itself a link is opened only when the link resolves inside the root: a captured
        tree from another host must not make the controller read its own files."""
        flags = os.O_RDONLY if not self.prefix else os.O_RDONLY | os.O_NOFOLLOW
        try:
            return os.open(self.path(host_path), flags)
        except FileNotFoundError:
            return None
        except OSError as error:
            if error.errno == errno.ELOOP and self.prefix:
                return self._open_link_below_root(host_path)
            self.warn("cannot read %s: %s" % (host_path, error.strerror or error))
            return None

    def _open_link_below_root(self, host_path: str) -> Optional[int]:
        outside = self.link_outside(host_path)
        if outside is not None:
            self.warn("%s is not read: it is a link to %s, outside root %s; replace the link with the file's "
                      "content in the tree" % (outside[0], outside[1], self.root))
            return None
        try:
            return os.open(self.path(host_path), os.O_RDONLY)
        except OSError as error:
            self.warn("cannot read %s: %s" % (host_path, error.strerror or error))
            return None

    def read_text(self, host_path: str) -> Optional[str]:
        """File content stripped of surrounding whitespace; ``None`` when unreadable."""
        data = self.read_bytes(host_path)
        if data is None:
            return None
        return data.decode("utf-8", "replace").strip()

    def read_int(self, host_path: str, base: int = 10) -> Optional[int]:
        """Integer content (``base`` 0 accepts 0x prefixes); warns on garbage."""
        text = self.read_text(host_path)
        if text is None or text == "":
            return None
        try:
            return int(text, base)
        except ValueError:
            self.warn("%s holds %r, not an integer; ignored" % (host_path, text[:40]))
            return None

    def listdir(self, host_path: str) -> List[str]:
        """Sorted entries of a directory; empty when it is missing or unreadable."""
        try:
            return sorted(os.listdir(self.path(host_path)))
        except FileNotFoundError:
            return []
        except OSError as error:
            self.warn("cannot list %s: %s" % (host_path, error.strerror or error))
            return []

    def listdir_required(self, host_path: str) -> List[str]:
        """Sorted entries of a directory that must be readable when it exists: empty when it is missing, an
        error (naming the path and why) when it is there but cannot be listed, e.g. a symlink loop."""
        try:
            return sorted(os.listdir(self.path(host_path)))
        except FileNotFoundError:
            return []
        except OSError as error:
            raise HostRootError("cannot list %s below %s: %s; fix the tree (or the host's sysfs) before reading it"
                                % (host_path, self.root, error.strerror or error)) from None

    def readlink(self, host_path: str) -> Optional[str]:
        """Target of a symlink as written (no resolution), ``None`` when it is not one."""
        try:
            return os.readlink(self.path(host_path))
        except OSError:
            return None

    def link_outside(self, host_path: str) -> Optional[Tuple[str, str]]:
        """The first symbolic link on the way to ``host_path`` (itself included) that resolves outside the root,
        as (the link's host path, the path it resolves to); None when the root is / or nothing leads out.
        Reading or writing through such a link would touch a file of another tree (or of the controller)."""
        if self.root == "/":
            return None
        root_real = os.path.realpath(self.root)
        parts = [part for part in host_path.split("/") if part]
        for count in range(1, len(parts) + 1):
            partial = "/" + "/".join(parts[:count])
            if os.path.islink(self.path(partial)):
                resolved = os.path.realpath(self.path(partial))
                if resolved != root_real and not resolved.startswith(root_real + os.sep):
                    return partial, resolved
        return None

    def realpath(self, host_path: str) -> str:
        """Resolved host path (``/sys/devices/...``) of ``host_path`` below the root."""
        resolved = os.path.realpath(self.path(host_path))
        if self.root == "/":
            return resolved
        root_real = os.path.realpath(self.root)
        if resolved == root_real:
            return "/"
        if resolved.startswith(root_real + os.sep):
            return resolved[len(root_real):]
        return resolved


def os_release_ids(host: HostRoot) -> Set[str]:
    """ID and ID_LIKE words of the host's /etc/os-release (``debian``, ``rhel``, ``fedora`` ...)."""
    words: Set[str] = set()
    for line in (host.read_text("/etc/os-release") or "").splitlines():
        key, _sep, value = line.partition("=")
        if key in ("ID", "ID_LIKE"):
            words.update(value.strip().strip("\"'").split())
    return words


# scripts/capture-host writes an archive whose top holds CAPTURE.json, commands/ and root/ (the host's files);
# the modules read root/, so a root option pointing at the top is one level too high.
CAPTURE_SUMMARY = "CAPTURE.json"
CAPTURE_ROOT = "root"


def capture_inner_root(root: str, needed: str) -> Optional[str]:
    """``root/root`` when ``root`` is the top of a capture made by scripts/capture-host (CAPTURE.json beside a
    root/ directory) and ``needed`` (a host path such as /sys/bus/pci) is missing below ``root`` but present
    below its root/ directory; ``None`` otherwise."""
    if not root or root == "/" or os.path.exists(root + needed):
        return None
    inner = os.path.join(root, CAPTURE_ROOT)
    if os.path.isfile(os.path.join(root, CAPTURE_SUMMARY)) and os.path.exists(inner + needed):
        return inner
    return None


def open_host_root(root: str, needed: str) -> HostRoot:
    """The ``HostRoot`` an info module reads for its ``root`` option: the top of a capture reads its root/ directory
    (``capture_inner_root``), with a warning that says so. Raises ``HostRootError`` as ``HostRoot`` does."""
    inner = capture_inner_root(root, needed)
    host = HostRoot(inner or root)
    if inner:
        host.warn("root %s is the top of a capture made by scripts/capture-host (CAPTURE.json, root/), not a host "
                  "root: read %s instead; pass that as root to silence this" % (root, inner))
    return host
