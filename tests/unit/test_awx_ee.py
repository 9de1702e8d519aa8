"""The shipped execution environment definition (issue 19, point 7): extensions/ee/.

``ansible-builder create`` (the venv's, pinned in requirements.txt) turns the definition into a build
context without building an image (that needs podman or docker: docs/awx.md). The collection goes in as
the tarball ``ansible-galaxy collection build`` writes; its Python libraries come from its own
meta/execution-environment.yml through the introspection step of the Containerfile, so they are checked
inside the tarball that the build context carries.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
import yaml
from conftest import REPO, requirement_lines

EE = REPO / "extensions" / "ee"
# Any connection attempt fails fast: create must work offline.
OFFLINE = {"http_proxy": "http://127.0.0.1:9", "https_proxy": "http://127.0.0.1:9",
           "HTTP_PROXY": "http://127.0.0.1:9", "HTTPS_PROXY": "http://127.0.0.1:9", "no_proxy": "", "NO_PROXY": ""}


def venv_tool(name: str) -> str:
    return str(Path(sys.executable).with_name(name))


@pytest.fixture(scope="module")
def context(tmp_path_factory: pytest.TempPathFactory) -> Path:
    work = tmp_path_factory.mktemp("ee")
    shutil.copytree(EE, work / "ee")
    env = dict(os.environ, **OFFLINE)
    build = subprocess.run([venv_tool("ansible-galaxy"), "collection", "build", "--output-path",
                            str(work / "ee" / "collections"), str(REPO)],
                           capture_output=True, text=True, env=env, timeout=300, check=False)
    assert build.returncode == 0, build.stdout + build.stderr
    create = subprocess.run([venv_tool("ansible-builder"), "create", "--output-filename", "Containerfile",
                             "-f", str(work / "ee" / "execution-environment.yml"), "-c", str(work / "context")],
                            capture_output=True, text=True, env=env, timeout=120, check=False)
    assert create.returncode == 0, create.stdout + create.stderr
    return work / "context"


def definition() -> dict:
    return yaml.safe_load((EE / "execution-environment.yml").read_text())


def test_containerfile_names_the_base_image_and_introspects_the_collection(context: Path) -> None:
    containerfile = (context / "Containerfile").read_text()
    base = definition()["images"]["base_image"]["name"]
    assert base == "quay.io/fedora/python-311:latest"
    assert 'ARG EE_BASE_IMAGE="%s"' % base in containerfile
    assert 'ARG PYCMD="/usr/bin/python3.11"' in containerfile
    assert "ansible-galaxy collection install" in containerfile and "-r requirements.yml" in containerfile
    assert "introspect.py introspect" in containerfile, "the collection's Python requirements come from introspection"


def test_build_context_holds_the_collection_requirement_and_its_tarball(context: Path) -> None:
    requirements = yaml.safe_load((context / "_build" / "requirements.yml").read_text())
    (entry,) = requirements["collections"]
    assert entry["type"] == "file"
    tarball = context / "_build" / entry["name"]
    assert tarball.is_file(), "%s is not in the build context" % entry["name"]


def test_the_tarball_in_the_context_declares_the_controller_libraries(context: Path) -> None:
    (tarball,) = (context / "_build" / "collections").glob("confidential_gpu-host-*.tar.gz")
    with tarfile.open(tarball) as archive:
        ee_meta = yaml.safe_load(archive.extractfile("meta/execution-environment.yml"))  # type: ignore[arg-type]
        python = archive.extractfile(ee_meta["dependencies"]["python"]).read().decode()  # type: ignore[union-attr]
        system = archive.extractfile(ee_meta["dependencies"]["system"]).read().decode()  # type: ignore[union-attr]
    listed = context / "ee-requirements.txt"
    listed.write_text(python)
    assert set(requirement_lines(listed)) == {"tomlkit", "sev-snp-measure", "graphviz"}
    # the Graphviz binding runs dot: the system package comes with it (bindep)
    assert [line.split()[0] for line in system.splitlines() if line.strip() and not line.startswith("#")] == [
        "graphviz"]


def test_the_requirement_names_the_tarball_of_galaxy_yml_version() -> None:
    galaxy = yaml.safe_load((REPO / "galaxy.yml").read_text())
    requirements = yaml.safe_load((EE / "requirements.yml").read_text())
    expected = "collections/%s-%s-%s.tar.gz" % (galaxy["namespace"], galaxy["name"], galaxy["version"])
    assert [entry["name"] for entry in requirements["collections"]] == [expected]
