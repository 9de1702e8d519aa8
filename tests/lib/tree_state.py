"""The state of a directory tree, for "nothing changed" checks: the one implementation the tests share.

Every entry below ``top`` is keyed by its path relative to ``top`` and recorded as
``("file", mode, sha256)``, ``("link", target)`` or ``("dir", mode)``.  Links are never followed, so a
tree with symlink loops or links that point outside it is recorded as it is, and a write through a link
shows up wherever it lands below ``top``.  Two states compare equal only when every file's bytes, every
link's target and every mode (permissions and type) are the same.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Dict, Iterable, Tuple

# Not host state: the stand-in boot tools (tests/lib/standins) log the commands they ran here.
STANDIN_LOG = ".standin-calls"

Entry = Tuple[object, ...]


def tree_state(top: Path, ignore: Iterable[str] = (STANDIN_LOG,)) -> Dict[str, Entry]:
    """Every file, link and directory below ``top`` (names in ``ignore`` left out, at any depth)."""
    ignored = frozenset(ignore)
    state: Dict[str, Entry] = {}
    for dirpath, dirnames, filenames in os.walk(top):
        dirnames[:] = sorted(name for name in dirnames if name not in ignored)
        for name in dirnames + sorted(filenames):
            if name in ignored:
                continue
            path = Path(dirpath) / name
            info = path.lstat()
            key = str(path.relative_to(top))
            if path.is_symlink():
                state[key] = ("link", os.readlink(path))
            elif path.is_dir():
                state[key] = ("dir", info.st_mode)
            else:
                state[key] = ("file", info.st_mode, hashlib.sha256(path.read_bytes()).hexdigest())
    return state


def changed_entries(before: Dict[str, Entry], after: Dict[str, Entry]) -> Dict[str, Tuple[object, object]]:
    """What differs between two states, as ``{path: (before, after)}`` (``None`` for absent), for messages."""
    return {key: (before.get(key), after.get(key))
            for key in sorted(set(before) | set(after)) if before.get(key) != after.get(key)}
