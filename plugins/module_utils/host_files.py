# Copyright: contributors to confidential_gpu.host
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Configuration files the modules own: read, replace atomically, show as a diff.

Paths are already mapped below the root (``HostRoot.path``); errors are
``OSError``/``UnicodeDecodeError`` for the caller to turn into its own
message, which names the host path.  Standard library only.
"""

from __future__ import annotations

import os
import tempfile
from typing import Callable, Dict, NamedTuple, Optional, Tuple

from ansible_collections.confidential_gpu.host.plugins.module_utils.sysfs import HostRoot


def read_text(path: str) -> Optional[str]:
    """A file's text, ``None`` when it does not exist."""
    try:
        with open(path, encoding="utf-8") as handle:
            return handle.read()
    except FileNotFoundError:
        return None


DIRECTORY_MODE = 0o755


def make_directories(directory: str, mode: int = DIRECTORY_MODE) -> None:
    """Create ``directory`` and its missing parents, each with exactly ``mode`` whatever the umask.

    ``os.makedirs`` masks ``mode`` with the umask and gives parents ``0o777 &
    ~umask``: under umask 000 a root-run helper's directory would be
    world-writable.  Directories that exist are left as they are.
    """
    missing = []
    while directory and not os.path.isdir(directory):
        missing.append(directory)
        parent = os.path.dirname(directory)
        if parent == directory:
            break
        directory = parent
    for path in reversed(missing):
        try:
            os.mkdir(path, mode)
        except FileExistsError:
            if not os.path.isdir(path):
                raise
            continue
        os.chmod(path, mode)


def replace_file(path: str, content: Optional[str], mode: Optional[int] = None) -> None:
    """Write ``content`` through a temporary file and a rename, or remove the file when it is None.

    ``mode`` None keeps the mode of the file there (0644 for a new one); the
    file and every directory created for it get their mode explicitly
    (directories 0755), never from the umask.
    """
    if content is None:
        if os.path.lexists(path):
            os.unlink(path)
        return
    directory = os.path.dirname(path)
    make_directories(directory)
    if mode is None:
        mode = os.stat(path).st_mode & 0o7777 if os.path.exists(path) else 0o644
    fd, temp = tempfile.mkstemp(prefix=".%s." % os.path.basename(path), dir=directory)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(content)
        os.chmod(temp, mode)
        os.replace(temp, path)
    except BaseException:
        if os.path.exists(temp):
            os.unlink(temp)
        raise


class FileChange(NamedTuple):
    """One managed file: content before and after (None: absent), the mode to give it (None: keep the file's,
    0644 for a new one) and the mode it had."""

    host_path: str
    before: Optional[str]
    after: Optional[str]
    mode: Optional[int] = None
    mode_before: Optional[int] = None

    def diff(self) -> Dict[str, str]:
        """Ansible's diff: "(absent)" marks a missing side, "(mode NNNN)" a mode that changes on a kept file."""
        moved = None not in (self.before, self.after, self.mode, self.mode_before) and self.mode != self.mode_before
        return {"before": self.before or "", "after": self.after or "",
                "before_header": self.host_path + _note(self.before, self.mode_before if moved else None),
                "after_header": self.host_path + _note(self.after, self.mode if moved else None)}


def _note(content: Optional[str], mode: Optional[int]) -> str:
    return " (absent)" if content is None else "" if mode is None else " (mode %04o)" % mode


ErrorType = Callable[[str], Exception]


def read_file(host: HostRoot, host_path: str, error: ErrorType) -> Tuple[Optional[str], Optional[int]]:
    """A file's text and mode, (None, None) when it does not exist; ``error`` naming it when it cannot be read."""
    path = host.path(host_path)
    try:
        return read_text(path), (os.stat(path).st_mode & 0o7777 if os.path.exists(path) else None)
    except (OSError, UnicodeDecodeError) as failure:
        raise error("cannot read %s: %s" % (host_path, failure)) from None


def plan_file(host: HostRoot, host_path: str, after: Optional[str], mode: Optional[int],
              error: ErrorType) -> Optional[FileChange]:
    """The change that gives the file ``after`` (None: removed) and ``mode``; None when it is so already."""
    before, mode_before = read_file(host, host_path, error)
    if before == after and (after is None or mode is None or mode == mode_before):
        return None
    return FileChange(host_path, before, after, mode, mode_before)


def write_file(host: HostRoot, change: FileChange, error: ErrorType) -> None:
    """Carry out a change (replace atomically, or remove); ``error`` naming the file when it fails."""
    try:
        replace_file(host.path(change.host_path), change.after, change.mode)
    except OSError as failure:
        raise error("cannot write %s: %s" % (change.host_path, failure)) from None
