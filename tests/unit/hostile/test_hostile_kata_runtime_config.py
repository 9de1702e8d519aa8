"""Hostile shim names for kata_runtime_config: the name becomes a file name below the Kata prefix, so each is
refused with the rule and an example before any path is built (plugin_utils/kata_model.kata_paths, which
the action plugin calls first; no tree is read, so there is none to compare)."""

from __future__ import annotations

from typing import List

import pytest

from ansible_collections.confidential_gpu.host.plugins.plugin_utils.kata_model import KataConfigError, kata_paths

FIX = "is not a Kata shim name (lower-case letters, digits, '-', e.g. qemu-nvidia-gpu-snp)"

SHIMS: List[str] = [
    "qemu-nvidia-gpu-snp\n",  # before: '^...$' with re.match let the trailing newline through
    "../../etc/passwd",
    "qemu;id",
    "qemu nvidia",
    "$(id)",
    "-qemu",
    "",
]


@pytest.mark.parametrize("shim", SHIMS, ids=["trailing-newline", "traversal", "shell", "space", "subshell",
                                             "leading-dash", "empty"])
def test_kata_shim_name_refused(shim: str) -> None:
    with pytest.raises(KataConfigError, match=r"shim .* " + FIX.replace("(", r"\(").replace(")", r"\)")):
        kata_paths("/opt/kata", shim)
