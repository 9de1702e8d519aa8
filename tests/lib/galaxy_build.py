"""Build this checkout's Galaxy artifact, and install it the way users do, with the venv's ansible-galaxy.

``ansible-galaxy collection build`` reads galaxy.yml (its ``build_ignore`` decides what goes in);
``ansible-galaxy collection install`` of the tarball into a collections path of its own gives a copy
that knows nothing of the checkout. Used by tests/unit/test_galaxy_artifact.py and test_ansible_runner.py.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
GALAXY = Path(sys.executable).with_name("ansible-galaxy")


def build_artifact(out: Path) -> Path:
    """``ansible-galaxy collection build`` of this checkout into ``out``; the tarball's path."""
    proc = subprocess.run([str(GALAXY), "collection", "build", "--output-path", str(out), str(REPO)],
                          capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (tarball,) = out.glob("confidential_gpu-host-*.tar.gz")
    return tarball


def install_artifact(tarball: Path, collections_path: Path) -> Path:
    """``ansible-galaxy collection install`` of ``tarball`` (no dependencies: it declares none) into
    ``collections_path``, which must not hold the collection yet; the installed collection's directory."""
    installed = collections_path / "ansible_collections" / "confidential_gpu" / "host"
    assert not installed.exists(), "%s is not an empty collections path" % collections_path
    # Away from the checkout: its ansible.cfg names .collections, where this collection is linked already
    env = {name: value for name, value in os.environ.items() if not name.startswith("ANSIBLE_")}
    env["ANSIBLE_COLLECTIONS_PATH"] = str(collections_path)
    proc = subprocess.run([str(GALAXY), "collection", "install", "--no-deps", "-p", str(collections_path),
                           str(tarball)], cwd=collections_path, env=env, capture_output=True, text=True,
                          timeout=300, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert (installed / "MANIFEST.json").is_file(), proc.stdout
    return installed
