"""The Galaxy artifact holds what users run and read, and nothing of the developers' (issue 19, point 6).

Builds the collection with ``ansible-galaxy collection build`` (galaxy.yml's
``build_ignore`` decides what goes in) and compares every member of the tarball
with an allow-list kept here, on purpose apart from galaxy.yml: a new top-level
file or directory fails this test until someone decides whether users need it.
"""

from __future__ import annotations

import fnmatch
import json
import sys
import tarfile
from pathlib import Path
from typing import Iterable, List

import pytest
import yaml
from conftest import REPO

sys.path.insert(0, str(REPO / "tests" / "lib"))
from galaxy_build import build_artifact  # noqa: E402

# What a collection user runs or reads. Directories are listed as "dir/" (tar members of their own).
ALLOWED = (
    "MANIFEST.json", "FILES.json", "LICENSE", "README.md", "CHANGELOG.rst",
    "changelogs/", "changelogs/changelog.yaml", "changelogs/config.yaml",
    # The docs, with the pictures the README and docs show (docs/images/validate-report.png)
    "docs/", "docs/*.md", "docs/images/", "docs/images/*.png",
    "meta/", "meta/runtime.yml", "meta/execution-environment.yml", "meta/ee-requirements.txt",
    "meta/ee-bindep.txt",
    "playbooks/", "playbooks/*.yml",
    "plugins/", "plugins/*",
    # The boot programs and systemd units that modules install (their action plugins read them here).
    "files/", "files/*",
    "roles/", "roles/*",
    # The execution environment definition and AWX job templates, when they exist.
    "extensions/", "extensions/ee/*", "extensions/ee/", "extensions/awx/*", "extensions/awx/",
)
# Inside the allowed trees, still never shipped: caches and byte code.
NEVER = ("*/__pycache__*", "*.pyc", "*/.*", ".*")
REQUIRED = ("LICENSE", "MANIFEST.json", "FILES.json", "README.md", "meta/runtime.yml",
            "playbooks/discover.yml", "playbooks/prepare.yml", "plugins/modules/pci_topology_info.py",
            "files/sriov-apply.sh", "files/confidential-gpu-hugepages.service",
            "extensions/ee/execution-environment.yml", "extensions/ee/requirements.yml",
            "extensions/awx/job_templates.json", "extensions/awx/inventory.example.yml")


def outside_allow_list(names: Iterable[str]) -> List[str]:
    """The member names that no ALLOWED pattern admits, or that a NEVER pattern refuses."""
    return sorted(name for name in names
                  if not any(fnmatch.fnmatchcase(name, pattern) for pattern in ALLOWED)
                  or any(fnmatch.fnmatchcase(name, pattern) for pattern in NEVER))


@pytest.fixture(scope="module")
def artifact(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_artifact(tmp_path_factory.mktemp("artifact"))


def member_names(tarball: Path) -> List[str]:
    with tarfile.open(tarball) as archive:
        return [member.name + ("/" if member.isdir() else "") for member in archive.getmembers()]


def test_the_artifact_holds_only_allowed_files(artifact: Path) -> None:
    leaked = outside_allow_list(member_names(artifact))
    assert not leaked, "developer files in the Galaxy artifact (add them to galaxy.yml build_ignore): %s" % leaked


def test_the_artifact_holds_what_users_need(artifact: Path) -> None:
    names = set(member_names(artifact))
    missing = [name for name in REQUIRED if name not in names]
    assert not missing, "missing from the Galaxy artifact: %s" % missing


def test_the_licence_text_is_the_gpl_3_that_galaxy_yml_declares(artifact: Path) -> None:
    with tarfile.open(artifact) as archive:
        licence = archive.extractfile("LICENSE").read().decode()  # type: ignore[union-attr]
        manifest = json.load(archive.extractfile("MANIFEST.json"))  # type: ignore[arg-type]
    assert licence.split()[:3] == ["GNU", "GENERAL", "PUBLIC"] and "Version 3, 29 June 2007" in licence, licence[:200]
    assert "How to Apply These Terms to Your New Programs" in licence, "LICENSE is not the full GPL-3.0 text"
    declared = yaml.safe_load((REPO / "galaxy.yml").read_text())["license"]
    assert manifest["collection_info"]["license"] == declared == ["GPL-3.0-or-later"]


def test_the_allow_list_refuses_developer_files() -> None:
    developer = ["tests/unit/conftest.py", "extensions/molecule/boot/molecule.yml", "benchmarks/run.yml",
                 "scripts/setup", ".ci/x.yml", "reports/discovery/h.json", "pyproject.toml", "requirements.txt",
                 "plugins/modules/__pycache__/x.cpython-311.pyc", "roles/vfio/.cache/x"]
    assert outside_allow_list(developer + ["roles/vfio/tasks/main.yml", "LICENSE"]) == sorted(developer)
