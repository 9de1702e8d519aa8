"""Guards that keep the collection's declarations consistent (tests/lib/collection_guards.py).

Each rule holds on the repository, and each is shown to fail on a copy of the
part of the repository it reads, broken the way a later change could break it.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable

import pytest
import yaml
from conftest import REPO

sys.path.insert(0, str(REPO / "tests" / "lib"))
from collection_guards import (  # noqa: E402
    ansible_version_disagreements,
    changelog_lint,
    cross_test_imports,
    layer_violations,
    plugin_doc_errors,
    role_default_mismatches,
    version_disagreements,
)


def copy_paths(target: Path, *relative: str) -> Path:
    """A checkout in ``target`` that holds only the given paths of the repository."""
    for name in relative:
        source = REPO / name
        if source.is_dir():
            shutil.copytree(source, target / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / name)
    return target


def edit_yaml(path: Path, change: Callable[[Any], None]) -> None:
    data = yaml.safe_load(path.read_text())
    change(data)
    path.write_text(yaml.safe_dump(data, sort_keys=False))


def roles_copy(tmp_path: Path) -> Path:
    return copy_paths(tmp_path, "meta/runtime.yml",
                      *("roles/%s/%s" % (role.name, part) for role in (REPO / "roles").iterdir()
                        for part in ("meta", "defaults") if (role / part).is_dir()))


def main_options(data: Any) -> Any:
    return data["argument_specs"]["main"]["options"]


# --- role argument_specs and defaults ------------------------------------------------------------------------------

def test_every_role_documents_the_defaults_it_sets() -> None:
    assert role_default_mismatches(REPO) == []


BROKEN_DEFAULTS = {
    "a default changed in defaults/main.yml only":
        ("reboot", "defaults/main.yml", lambda data: data.update(reboot_timeout=600), "reboot_timeout"),
    "a default changed in argument_specs only":
        ("vfio", "meta/argument_specs.yml",
         lambda data: main_options(data)["vfio_root"].update(default="/host"), "vfio_root"),
    "a variable in defaults/main.yml that is no option":
        ("hugepages", "defaults/main.yml", lambda data: data.update(hugepages_extra=1), "hugepages_extra"),
    "an option whose default is missing from defaults/main.yml":
        ("sriov", "meta/argument_specs.yml",
         lambda data: main_options(data).update(sriov_new={"type": "str", "default": "x", "description": "d"}),
         "sriov_new"),
    "a default that argument_specs leaves out":
        ("reboot", "meta/argument_specs.yml",
         lambda data: main_options(data)["reboot_timeout"].pop("default"), "reboot_timeout"),
    "a templated default whose text differs":
        ("pcie_acs", "defaults/main.yml",
         lambda data: data.update(pcie_acs_pci_ids="{{ vfio_pci_ids | default(['10de:*']) }}"), "pcie_acs_pci_ids"),
    "a second entry point that documents another default than defaults/main.yml":
        ("cc_host", "meta/argument_specs.yml",
         lambda data: data["argument_specs"]["verify"]["options"]["cc_host_technology"].update(default="snp"),
         "cc_host_technology"),
}


@pytest.mark.parametrize("role, relative, breakage, option", BROKEN_DEFAULTS.values(), ids=list(BROKEN_DEFAULTS))
def test_a_role_whose_specs_and_defaults_differ_is_reported(
        tmp_path: Path, role: str, relative: str, breakage: Callable[[Any], None], option: str) -> None:
    root = roles_copy(tmp_path)
    assert role_default_mismatches(root) == [], "the copy must start consistent"
    edit_yaml(root / "roles" / role / relative, breakage)
    problems = role_default_mismatches(root)
    assert len(problems) == 1 and "roles/%s " % role in problems[0] and option in problems[0], problems


# --- min_ansible_version and requires_ansible ---------------------------------------------------------------------

def test_roles_require_the_ansible_core_the_collection_requires() -> None:
    assert ansible_version_disagreements(REPO) == []


def test_a_role_with_an_older_min_ansible_version_is_reported(tmp_path: Path) -> None:
    root = roles_copy(tmp_path)
    edit_yaml(root / "roles" / "vfio" / "meta" / "main.yml",
              lambda data: data["galaxy_info"].update(min_ansible_version="2.16"))
    problems = ansible_version_disagreements(root)
    assert len(problems) == 1 and "roles/vfio/meta/main.yml" in problems[0] and "'2.16'" in problems[0], problems


def test_raising_requires_ansible_alone_is_reported_for_every_role(tmp_path: Path) -> None:
    root = roles_copy(tmp_path)
    edit_yaml(root / "meta" / "runtime.yml", lambda data: data.update(requires_ansible=">=2.20.0"))
    problems = ansible_version_disagreements(root)
    assert len(problems) == len([role for role in (REPO / "roles").iterdir() if (role / "meta").is_dir()]), problems


# --- antsibull-changelog lint -------------------------------------------------------------------------------------

def test_changelog_fragments_and_config_pass_antsibull_changelog_lint() -> None:
    assert changelog_lint(REPO) == []


BROKEN_FRAGMENTS = {
    "unknown section": "misc:\n  - Something changed.\n",
    "entry that is not a list": "bugfixes: Something changed.\n",
    "not YAML": "bugfixes:\n  - [unclosed\n",
}


@pytest.mark.parametrize("text", BROKEN_FRAGMENTS.values(), ids=list(BROKEN_FRAGMENTS))
def test_a_broken_changelog_fragment_is_reported(tmp_path: Path, text: str) -> None:
    root = copy_paths(tmp_path, "galaxy.yml", "changelogs")
    (root / "changelogs" / "fragments" / "broken.yml").write_text(text)
    problems = changelog_lint(root)
    assert problems and all("broken.yml" in line for line in problems), problems


# --- the collection's version --------------------------------------------------------------------------------------

def test_galaxy_version_is_unreleased_and_not_before_any_version_added() -> None:
    assert version_disagreements(REPO) == []


def test_a_released_version_with_unreleased_fragments_is_reported(tmp_path: Path) -> None:
    root = copy_paths(tmp_path, "galaxy.yml", "changelogs")
    released = max(yaml.safe_load((root / "changelogs" / "changelog.yaml").read_text())["releases"])
    edit_yaml(root / "galaxy.yml", lambda data: data.update(version=released))
    (root / "changelogs" / "fragments" / "unreleased.yml").write_text("bugfixes:\n  - Something changed.\n")
    problems = version_disagreements(root)
    assert len(problems) == 1 and problems[0].startswith("galaxy.yml: version %s is already released" % released)


def test_a_version_added_after_the_galaxy_version_is_reported(tmp_path: Path) -> None:
    root = copy_paths(tmp_path, "galaxy.yml", "changelogs", "plugins/modules/pci_topology_info.py")
    module = root / "plugins" / "modules" / "pci_topology_info.py"
    module.write_text(module.read_text().replace('version_added: "0.1.0"', 'version_added: "9.0.0"', 1))
    assert version_disagreements(root) == [
        "plugins/modules/pci_topology_info.py: version_added 9.0.0 is later than galaxy.yml's version %s"
        % yaml.safe_load((root / "galaxy.yml").read_text())["version"]]


# --- shared test helpers in tests/lib -----------------------------------------------------------------------------

def test_no_test_file_imports_another_test_file() -> None:
    assert cross_test_imports(REPO) == []


@pytest.mark.parametrize("statement", [
    "from test_lspci_oracle import parse_lspci\n",
    "import test_fake_sysfs\n",
    "from modules.test_captured_hosts import CAPTURES\n",
])
def test_a_test_file_importing_another_is_reported(tmp_path: Path, statement: str) -> None:
    root = copy_paths(tmp_path, "tests/unit")
    (root / "tests" / "unit" / "roles" / "test_borrowing.py").write_text(
        '"""Borrows from another test file."""\n\n' + statement)
    problems = cross_test_imports(root)
    assert len(problems) == 1 and problems[0].startswith("tests/unit/roles/test_borrowing.py imports"), problems


def test_plugins_import_only_the_layers_below_them() -> None:
    assert layer_violations(REPO) == []


@pytest.mark.parametrize(("where", "statement", "expected"), [
    ("module_utils/pci_device.py",
     "from ansible_collections.confidential_gpu.host.plugins.plugin_utils import toml_file\n",
     "may import module_utils"),
    ("modules/hugepages.py", "import tomlkit\n", "not in the standard library"),
    ("module_utils/sysfs.py", "from ansible.plugins.action import ActionBase\n", "ansible.module_utils only"),
    ("plugin_utils/toml_file.py", "from ansible_collections.confidential_gpu.host.plugins.action import hugepages\n",
     "may import plugin_utils, module_utils"),
])
def test_an_import_against_the_layers_is_reported(tmp_path: Path, where: str, statement: str, expected: str) -> None:
    root = copy_paths(tmp_path, "plugins")
    target = root / "plugins" / where
    target.write_text(target.read_text() + "\n" + statement)
    problems = layer_violations(root)
    assert len(problems) == 1 and problems[0].startswith("plugins/" + where) and expected in problems[0], problems


def test_every_plugin_documentation_block_is_yaml() -> None:
    assert plugin_doc_errors(REPO) == []


def test_a_documentation_block_that_is_not_yaml_is_reported(tmp_path: Path) -> None:
    module = tmp_path / "plugins" / "modules" / "broken.py"
    module.parent.mkdir(parents=True)
    module.write_text('DOCUMENTATION = r"""\nmodule: broken\noptions:\n  ids:\n    description:\n'
                      '      - checked as vfio-pci reads it (Linux\n'
                      '        C(vfio_pci_fill_ids())): comma-separated\n"""\n')
    errors = plugin_doc_errors(tmp_path)
    assert len(errors) == 1 and errors[0].startswith("plugins/modules/broken.py DOCUMENTATION: mapping values")


def test_a_filter_documentation_file_that_is_not_yaml_is_reported(tmp_path: Path) -> None:
    sidecar = tmp_path / "plugins" / "filter" / "broken.yml"
    sidecar.parent.mkdir(parents=True)
    sidecar.write_text("DOCUMENTATION:\n  name: broken\n  description:\n"
                       "    - the ratio of medians per metric\n      (sandbox: native), with its spread\n")
    errors = plugin_doc_errors(tmp_path)
    assert len(errors) == 1 and errors[0].startswith("plugins/filter/broken.yml: mapping values"), errors


def test_filter_files_import_no_collection_code_when_they_load() -> None:
    """ansible-core loads every plugins/filter file whenever any collection filter is used (docs/design.md,
    "Controller code"): loading them all in a fresh interpreter imports no plugin_utils or module_utils."""
    script = ("import glob, importlib, os, sys\n"
              "for path in sorted(glob.glob('plugins/filter/*.py')):\n"
              "    importlib.import_module('ansible_collections.confidential_gpu.host.plugins.filter.'\n"
              "                            + os.path.basename(path)[:-3])\n"
              "print(' '.join(sorted(name for name in sys.modules if '.plugin_utils' in name\n"
              "                      or '.module_utils' in name and 'confidential_gpu' in name)))\n")
    proc = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, check=False,
                          env={"PYTHONPATH": str(REPO / ".collections"), "PATH": "/usr/bin:/bin"})
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "", "imported when the filter files load: %s" % proc.stdout
