"""Edits that turn a built host tree into a corrupt or hostile one (the hostile-input suite's cases)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path


def remove_entry(path: Path) -> None:
    """Remove whatever is at ``path`` (a file, a link, a directory tree); nothing when there is nothing."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


def replace_with_link(path: Path, target: str) -> None:
    """``path`` replaced by a symbolic link to ``target`` (its own name for a loop, a path beside the root to
    lead outside it)."""
    remove_entry(path)
    os.symlink(target, path)


def replace_with_bytes(path: Path, data: bytes) -> None:
    """``path`` replaced by a plain file holding ``data`` (a link is replaced, not written through)."""
    remove_entry(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
