"""A tool a test needs: its path, or (outside CI) a skip that says why; in CI (CI=true) a missing tool fails."""

from __future__ import annotations

import os
import shutil

import pytest


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")


def require_tool(name: str, why: str) -> str:
    """The path of ``name``; a failure in CI, a skip elsewhere, naming the package that brings it."""
    path = shutil.which(name)
    if path is None:
        message = "%s is not installed (scripts/apt-packages.txt; run ./scripts/setup): %s" % (name, why)
        if in_ci():
            pytest.fail(message)
        pytest.skip(message)
    return path
