"""The ansible-core versions the collection declares (meta/runtime.yml) are the ones it is tested with.

CI runs every test with the ansible-core pinned in requirements.txt; the
collection's roles and action plugins rely on that release line's behaviour
(native types from templates, the shape of module results), so the lowest
version ``requires_ansible`` admits must be that line, not an older one.
"""

from __future__ import annotations

import ansible.release
import yaml
from conftest import REPO, requirement_lines
from packaging.specifiers import SpecifierSet
from packaging.version import Version


def requires_ansible() -> SpecifierSet:
    runtime = yaml.safe_load((REPO / "meta" / "runtime.yml").read_text())
    return SpecifierSet(runtime["requires_ansible"])


def pinned_ansible_core() -> Version:
    pin = requirement_lines(REPO / "requirements.txt").get("ansible-core")
    assert pin is not None, "requirements.txt pins no ansible-core"
    (exact,) = [spec for spec in pin.specifier if spec.operator == "=="]
    return Version(exact.version)


def test_the_lowest_declared_release_line_is_the_tested_one() -> None:
    declared = requires_ansible()
    lower_bounds = [Version(spec.version) for spec in declared if spec.operator == ">="]
    assert len(lower_bounds) == 1, "requires_ansible %s needs exactly one >= bound" % declared
    pinned = pinned_ansible_core()
    assert lower_bounds[0].release[:2] == pinned.release[:2], (
        "meta/runtime.yml admits ansible-core %s while CI tests only %s: raise requires_ansible to >=%d.%d.0, "
        "or test the older releases too" % (lower_bounds[0], pinned, pinned.major, pinned.minor))


def test_the_installed_ansible_core_is_admitted() -> None:
    installed = Version(ansible.release.__version__)
    assert installed in requires_ansible(), "ansible-core %s is not admitted by %s" % (installed, requires_ansible())
    assert installed == pinned_ansible_core(), (
        "the virtual environment runs ansible-core %s, requirements.txt pins %s" % (installed, pinned_ansible_core()))


def test_an_older_release_line_is_refused() -> None:
    pinned = pinned_ansible_core()
    older = Version("%d.%d.99" % (pinned.major, pinned.minor - 1))
    assert older not in requires_ansible()
