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
from typing import Dict, Optional


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


def text_diff(host_path: str, before: Optional[str], after: Optional[str]) -> Dict[str, str]:
    """Ansible's diff of one file; an absent side is shown as empty with "(absent)" in its header."""
    return {"before": before or "", "after": after or "",
            "before_header": host_path + ("" if before is not None else " (absent)"),
            "after_header": host_path + ("" if after is not None else " (absent)")}
