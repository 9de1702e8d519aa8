"""Every module's DOCUMENTATION, EXAMPLES and RETURN parse as ansible-doc reads them.

A ``: `` inside a plain YAML scalar turns a sentence into a mapping: ansible-doc
then shows no documentation at all, and ``antsibull-changelog release`` (which
loads every plugin's docs) stops with an error.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO

MODULES = sorted(path.stem for path in (REPO / "plugins" / "modules").glob("*.py") if path.stem != "__init__")


@pytest.mark.parametrize("name", MODULES)
def test_ansible_doc_reads_the_module(name: str) -> None:
    env = dict(os.environ, ANSIBLE_CONFIG=str(REPO / "ansible.cfg"), ANSIBLE_NOCOLOR="1")
    proc = subprocess.run([str(Path(sys.executable).with_name("ansible-doc")), "--json",
                           "confidential_gpu.host." + name], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=120, check=False)
    assert proc.returncode == 0 and "ERROR" not in proc.stderr, proc.stderr[-2000:]
    doc = json.loads(proc.stdout)["confidential_gpu.host." + name]
    assert doc["doc"]["module"] == name and doc["examples"] and doc["return"], sorted(doc)
