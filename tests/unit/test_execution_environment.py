"""What an execution environment (AWX, Ansible Automation Platform) gets from this collection.

ansible-builder reads meta/execution-environment.yml of each collection it puts into an execution
environment; ``ansible-builder introspect`` prints what it would install, the same code path as a build.
"""

from __future__ import annotations

import ast
import importlib.metadata
import subprocess
import sys
from pathlib import Path
from typing import Dict, Set

import yaml
from conftest import COLLECTIONS, REPO, requirement_lines
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

EE_REQUIREMENTS = REPO / "meta" / "ee-requirements.txt"
# Plugins that run on the controller; modules and module_utils run on the hosts (standard library only).
CONTROLLER_PLUGIN_DIRS = ("action", "filter", "plugin_utils")


def introspect() -> Dict[str, list]:
    builder = Path(sys.executable).with_name("ansible-builder")
    proc = subprocess.run([str(builder), "introspect", "--sanitize", str(COLLECTIONS)], capture_output=True,
                          text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    return yaml.safe_load(proc.stdout)


def test_ansible_builder_takes_the_controller_libraries_and_no_test_tool() -> None:
    data = introspect()
    python = {canonicalize_name(Requirement(line.split("#", 1)[0].strip()).name) for line in data["python"]}
    assert python == set(requirement_lines(EE_REQUIREMENTS)) == {"tomlkit", "sev-snp-measure", "graphviz"}
    assert all(line.endswith("# from collection confidential_gpu.host") for line in data["python"])
    # the one system package: Graphviz's dot, which the fleet report's binding runs (meta/ee-bindep.txt)
    assert data.get("system") == ["graphviz [platform:dpkg platform:rpm]  # from collection confidential_gpu.host"]


def test_the_versions_ci_tests_are_inside_the_execution_environment_ranges() -> None:
    pinned = requirement_lines(REPO / "requirements.txt")
    for name, wanted in requirement_lines(EE_REQUIREMENTS).items():
        assert name in pinned, "%s is not pinned in requirements.txt, so CI does not test it" % name
        version = next(iter(pinned[name].specifier)).version
        assert wanted.specifier.contains(version), "%s %s is outside %s" % (name, version, wanted.specifier)


def third_party_imports(path: Path) -> Set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return {name for name in names
            if name not in sys.stdlib_module_names and name not in ("ansible", "ansible_collections", "__future__")}


def test_every_library_the_controller_plugins_import_is_declared() -> None:
    distributions = importlib.metadata.packages_distributions()
    declared = set(requirement_lines(EE_REQUIREMENTS))
    files = [path for folder in CONTROLLER_PLUGIN_DIRS for path in sorted((REPO / "plugins" / folder).glob("*.py"))]
    imported = {name: path for path in files for name in third_party_imports(path)}
    assert "tomlkit" in imported, "the scan found the TOML plugins' import"
    for name, path in imported.items():
        owners = {canonicalize_name(dist) for dist in distributions.get(name, [name])}
        assert owners & declared, "%s imports %s, which meta/ee-requirements.txt does not name" % (
            path.relative_to(REPO), name)


def test_host_side_code_imports_the_standard_library_only() -> None:
    files = sorted((REPO / "plugins" / "modules").glob("*.py")) + sorted(
        (REPO / "plugins" / "module_utils").glob("*.py"))
    assert files
    assert {str(path.relative_to(REPO)): sorted(third_party_imports(path)) for path in files
            if third_party_imports(path)} == {}
