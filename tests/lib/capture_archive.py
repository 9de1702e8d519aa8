"""Unpack a host capture (scripts/capture_host.py, tests/fixtures/hosts/*/capture.tar.xz) for a replay."""

from __future__ import annotations

import tarfile
from pathlib import Path


def extract(archive: Path, target: Path) -> Path:
    with tarfile.open(archive) as tar:
        if hasattr(tarfile, "tar_filter"):
            tar.extractall(target, filter="tar")
        else:  # Python without extraction filters (before 3.11.4 and its backports)
            tar.extractall(target)  # noqa: S202 - our own fixture
    return target
