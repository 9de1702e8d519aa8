"""Rules that keep the collection's declarations consistent, as functions over a checkout.

Each check takes the root of a checkout (the repository, or a test's broken copy
of part of it) and returns one message per place that breaks the rule, empty when
the rule holds.  tests/unit/test_guards.py runs them on the repository and on
deliberately broken copies, so that each guard is shown to fail.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path
from typing import Any, Dict, Iterator, List, Tuple

import yaml
from packaging.specifiers import SpecifierSet
from packaging.version import Version

_NO_DEFAULT = object()


def _load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def _role_dirs(root: Path) -> List[Path]:
    return sorted(path for path in (root / "roles").iterdir() if (path / "meta").is_dir())


def _defaults_mismatches(where: str, options: Dict[str, Any], defaults: Dict[str, Any], own_file: bool) -> List[str]:
    """Options against the defaults file the entry point loads.

    ``own_file``: the file is the entry point's own (defaults/<entry point>.yml), so
    every variable in it must be an option, and an option without a default
    must not have one there.  An entry point that has no defaults file of its own
    loads defaults/main.yml (include_role's defaults_from), so only the options
    that file sets are compared.
    """
    problems = []
    for name, option in sorted(options.items()):
        documented = (option or {}).get("default", _NO_DEFAULT)
        if name not in defaults:
            if documented is not _NO_DEFAULT and own_file:
                problems.append("%s: option %s documents default %r, the defaults file does not set it"
                                % (where, name, documented))
            continue
        if documented is _NO_DEFAULT:
            problems.append("%s: %s is %r in the defaults file, argument_specs documents no default"
                            % (where, name, defaults[name]))
        elif documented != defaults[name]:
            problems.append("%s: %s defaults to %r, argument_specs documents %r"
                            % (where, name, defaults[name], documented))
    if own_file:
        problems.extend("%s: %s is set in the defaults file but is no option in argument_specs" % (where, name)
                        for name in sorted(set(defaults) - set(options)))
    return problems


def role_default_mismatches(root: Path) -> List[str]:
    """Where a role's meta/argument_specs.yml and its defaults files say different things.

    Values compare as YAML data; a default that is a Jinja template is a string
    there, so the template text itself must match.
    """
    problems = []
    for role in _role_dirs(root):
        specs_path = role / "meta" / "argument_specs.yml"
        if not specs_path.is_file():
            continue
        entry_points = (_load_yaml(specs_path) or {}).get("argument_specs") or {}
        for entry_point, spec in sorted(entry_points.items()):
            own = role / "defaults" / ("%s.yml" % entry_point)
            path = own if own.is_file() else role / "defaults" / "main.yml"
            defaults = (_load_yaml(path) or {}) if path.is_file() else {}
            where = "roles/%s entry point %s (%s)" % (role.name, entry_point, path.relative_to(role))
            problems.extend(_defaults_mismatches(where, (spec or {}).get("options") or {}, defaults,
                                                 own_file=path == own))
    return problems


def requires_ansible_lower_bound(root: Path) -> Version:
    specifier = SpecifierSet(_load_yaml(root / "meta" / "runtime.yml")["requires_ansible"])
    (bound,) = [Version(spec.version) for spec in specifier if spec.operator == ">="]
    return bound


def ansible_version_disagreements(root: Path) -> List[str]:
    """Roles whose galaxy_info.min_ansible_version is not the lowest version meta/runtime.yml admits."""
    lowest = requires_ansible_lower_bound(root)
    problems = []
    for role in _role_dirs(root):
        meta = role / "meta" / "main.yml"
        if not meta.is_file():
            continue
        declared = ((_load_yaml(meta) or {}).get("galaxy_info") or {}).get("min_ansible_version")
        if declared is None or Version(str(declared)) != lowest:
            problems.append("roles/%s/meta/main.yml: min_ansible_version %r, meta/runtime.yml requires_ansible >=%s"
                            % (role.name, declared, lowest))
    return problems


def _versions_added(doc: Any) -> List[str]:
    """Every ``version_added`` in a plugin's documentation, options included."""
    if isinstance(doc, dict):
        found = [str(doc["version_added"])] if isinstance(doc.get("version_added"), (str, int, float)) else []
        return found + [version for value in doc.values() for version in _versions_added(value)]
    if isinstance(doc, list):
        return [version for value in doc for version in _versions_added(value)]
    return []


def _documentation_blocks(root: Path) -> Dict[str, Any]:
    """Each plugin's DOCUMENTATION (from its .py, or the .yml beside a filter or test) by path."""
    blocks: Dict[str, Any] = {str(path.relative_to(root)): yaml.safe_load(text)
                              for path, name, text in _doc_strings(root) if name == "DOCUMENTATION"}
    for path in sorted((root / "plugins").glob("*/*.yml")):
        blocks[str(path.relative_to(root))] = (_load_yaml(path) or {}).get("DOCUMENTATION")
    return blocks


def version_disagreements(root: Path) -> List[str]:
    """galaxy.yml's version against the changelog and the docs: with changelog fragments not yet released, it must
    be later than the last release in changelogs/changelog.yaml (the built artifact carries those changes); and no
    plugin may say it was added in a version later than the one being built."""
    version = Version(str(_load_yaml(root / "galaxy.yml")["version"]))
    released = [Version(str(name)) for name in (_load_yaml(root / "changelogs" / "changelog.yaml") or {})
                .get("releases", {})]
    unreleased = sorted(path.name for path in (root / "changelogs" / "fragments").glob("*.y*ml"))
    problems = []
    if released and unreleased and version <= max(released):
        problems.append("galaxy.yml: version %s is already released (changelogs/changelog.yaml), and %d changelog "
                        "fragments (%s, ...) are not: bump it" % (version, len(unreleased), unreleased[0]))
    for where, doc in _documentation_blocks(root).items():
        later = sorted({added for added in _versions_added(doc) if Version(added) > version})
        if later:
            problems.append("%s: version_added %s is later than galaxy.yml's version %s"
                            % (where, ", ".join(later), version))
    return problems


def changelog_lint(root: Path) -> List[str]:
    """What ``antsibull-changelog lint`` reports on the checkout's changelogs/ (one line per finding)."""
    tool = Path(sys.executable).with_name("antsibull-changelog")
    proc = subprocess.run([str(tool), "lint"], cwd=str(root), capture_output=True, text=True, timeout=120,
                          check=False)
    problems = [line for line in (proc.stdout + proc.stderr).splitlines() if line.strip()]
    if proc.returncode != 0 and not problems:
        problems.append("antsibull-changelog lint exited %d without a message" % proc.returncode)
    return problems


def _imported_modules(tree: ast.AST) -> List[str]:
    names = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.extend("%s.%s" % (node.module, alias.name) for alias in node.names)
    return names


def cross_test_imports(root: Path) -> List[str]:
    """Test files under tests/unit that import another test file; shared helpers belong in tests/lib."""
    unit = root / "tests" / "unit"
    test_modules = {path.stem for path in unit.rglob("test_*.py")}
    problems = []
    for path in sorted(unit.rglob("*.py")):
        for name in _imported_modules(ast.parse(path.read_text(), str(path))):
            if any(part in test_modules for part in name.split(".")):
                problems.append("%s imports test module %s: move what it needs to tests/lib"
                                % (path.relative_to(root), name))
    return problems


# Which layer of plugins/ may import which (docs/design.md, "Layers"): host code (modules, module_utils) runs on
# the target with the standard library and ansible.module_utils only; controller code may use both host helpers and
# plugin_utils; nothing imports upward.
LAYER_IMPORTS = {
    "module_utils": ("module_utils",),
    "modules": ("module_utils",),
    "doc_fragments": (),
    "plugin_utils": ("plugin_utils", "module_utils"),
    "action": ("plugin_utils", "module_utils"),
    "filter": ("plugin_utils", "module_utils"),
    "lookup": ("plugin_utils", "module_utils"),
}
HOST_LAYERS = ("module_utils", "modules")
COLLECTION_PREFIX = "ansible_collections.confidential_gpu.host.plugins."


def _import_problem(layer: str, name: str) -> str:
    if name.startswith(COLLECTION_PREFIX):
        target = name[len(COLLECTION_PREFIX):].split(".")[0]
        return "" if target in LAYER_IMPORTS[layer] else "imports %s (layer %s may import %s)" % (
            name, layer, ", ".join(LAYER_IMPORTS[layer]) or "nothing of the collection")
    top = name.split(".")[0]
    if layer in HOST_LAYERS and top not in sys.stdlib_module_names and top not in ("ansible", "__future__") \
            and not name.startswith("ansible_collections."):
        return "imports %s, which is not in the standard library (host code runs on the target)" % name
    if layer in HOST_LAYERS and top == "ansible" and not name.startswith("ansible.module_utils"):
        return "imports %s: host code may use ansible.module_utils only" % name
    return ""


def layer_violations(root: Path) -> List[str]:
    """Imports in plugins/ that break the layer rules of LAYER_IMPORTS."""
    problems = []
    for layer in LAYER_IMPORTS:
        for path in sorted((root / "plugins" / layer).glob("*.py")):
            for name in _imported_modules(ast.parse(path.read_text(), str(path))):
                problem = _import_problem(layer, name)
                if problem:
                    problems.append("%s %s" % (path.relative_to(root), problem))
    return problems


DOC_BLOCKS = ("DOCUMENTATION", "EXAMPLES", "RETURN")


def _doc_strings(root: Path) -> Iterator[Tuple[Path, str, str]]:
    """(path, name, text) of each DOCUMENTATION, EXAMPLES or RETURN string assigned in a plugin's .py."""
    for path in sorted((root / "plugins").glob("*/*.py")):
        for node in ast.parse(path.read_text()).body:
            if not (isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant)
                    and isinstance(node.value.value, str)):
                continue
            names = [target.id for target in node.targets if isinstance(target, ast.Name) and target.id in DOC_BLOCKS]
            if names:
                yield path, names[0], node.value.value


def plugin_doc_errors(root: Path) -> List[str]:
    """Plugins whose DOCUMENTATION, EXAMPLES or RETURN is not YAML (e.g. ``: `` in a plain scalar): the string in a
    plugin's .py, or the .yml beside it that documents a filter or test (one file per function): ansible-doc and
    ansible-test's validate-modules then see no documentation at all."""
    errors = []
    for path, name, text in _doc_strings(root):
        try:
            yaml.safe_load(text)
        except yaml.YAMLError as error:
            errors.append("%s %s: %s" % (path.relative_to(root), name, str(error).replace("\n", " ")))
    for path in sorted((root / "plugins").glob("*/*.yml")):
        try:
            yaml.safe_load(path.read_text())
        except yaml.YAMLError as error:
            errors.append("%s: %s" % (path.relative_to(root), str(error).replace("\n", " ")))
    return errors
