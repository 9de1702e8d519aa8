"""Every role's entry point with its bool, int and list options as AWX sends them (strings), generated from
roles/*/meta/argument_specs.yml, so that a new option is covered without editing this file.

AWX surveys and ``-e key=value`` send strings; extra vars outrank every other variable, and a role's argument
validation (ansible-core 2.19) checks a value without changing what the role reads. Each role therefore reads
its options once at its entry through lookup ``confidential_gpu.host.survey_inputs`` into ``<role>_input``; this
test runs every entry point and asserts on that fact, which the role's tasks read.

Per entry point, one ansible-playbook process for all of them (each case an inventory host, tests/lib/role_play):
- ``accepted``: every option as text, the forms alternating over the options (``"true"``/``"yes"``, ``"3"``,
  ``"a,b"`` / ``'["a", "b"]'``); the role's ``<role>_input`` holds the typed values;
- ``spec-refused``: a word for each bool and int, a JSON list text for lists with choices or int items (which
  ansible-core's validation splits at commas and refuses before the role runs): the failure names each one;
- ``lookup-refused``: a broken JSON list text for every other list: the failure names each and the forms.
The roles run in check mode on their fake roots (tests/lib/role_roots.py, those of the hostile-input tests); bools
keep their default's value (so role ``reboot`` never reboots this machine), ints and lists differ from the defaults.
"""

from __future__ import annotations

import json
import sys
from typing import Any, Dict, List, Mapping, Tuple

import pytest
import yaml
from conftest import REPO

sys.path.insert(0, str(REPO / "tests" / "lib"))
from role_play import FAILURE_MESSAGES, ansible_playbook  # noqa: E402
from role_roots import ROLE_ROOTS  # noqa: E402

LIST_FORMS = "a comma-separated text"


def converted_options(options: Mapping[str, Dict[str, Any]]) -> Dict[str, Dict[str, Any]]:
    return {name: option for name, option in options.items()
            if option.get("type") in ("bool", "int")
            or (option.get("type") == "list" and option.get("elements", "str") != "dict")}


ENTRIES: List[Tuple[str, str, Dict[str, Dict[str, Any]]]] = [
    (spec.parts[-3], entry, converted_options(body.get("options") or {}))
    for spec in sorted((REPO / "roles").glob("*/meta/argument_specs.yml"))
    for entry, body in yaml.safe_load(spec.read_text())["argument_specs"].items()]


def accepted_form(number: int, option: Dict[str, Any]) -> Tuple[str, Any]:
    """(the text AWX would send, the typed value the role must read) for the option's ``number``-th place."""
    kind, default = option["type"], option.get("default")
    if kind == "bool":
        value = default if isinstance(default, bool) else False
        return (["false", "no"], ["true", "yes"])[value][number % 2], value
    if kind == "int":
        value = default + 1 if isinstance(default, int) else 3
        return str(value), value
    choices = option.get("choices")
    items: List[Any] = [3, 4] if option.get("elements") == "int" else list(choices[:2]) if choices else ["x1", "x2"]
    if choices or option.get("elements") == "int" or number % 2 == 0:
        return ",".join(str(item) for item in items), items
    return json.dumps(items), items


def spec_refused(option: Dict[str, Any]) -> bool:
    """ansible-core's validation refuses the wrong text of these before the role's first task."""
    return option["type"] != "list" or bool(option.get("choices")) or option.get("elements") == "int"


def wrong_form(option: Dict[str, Any]) -> str:
    if option["type"] == "bool":
        return "maybe"
    if option["type"] == "int":
        return "three"
    if spec_refused(option):  # JSON text, which the validation splits at commas and then refuses
        return '["%s", "x2"]' % (option["choices"][0] if option.get("choices") else 3)
    return '["x1", "x2"'  # JSON text without its end


def cases() -> Dict[str, Dict[str, Any]]:
    """Case name -> {role, entry, variables, expected | refused names}."""
    table: Dict[str, Dict[str, Any]] = {}
    for role, entry, options in ENTRIES:
        if not options:
            continue
        accepted = {name: accepted_form(number, option) for number, (name, option) in enumerate(options.items())}
        table["%s-%s-accepted" % (role, entry)] = {
            "role": role, "entry": entry, "variables": {name: form[0] for name, form in accepted.items()},
            "expected": {name: form[1] for name, form in accepted.items()}}
        for kind, names in (("spec", [name for name, option in options.items() if spec_refused(option)]),
                            ("lookup", [name for name, option in options.items() if not spec_refused(option)])):
            if names:
                table["%s-%s-%s-refused" % (role, entry, kind)] = {
                    "role": role, "entry": entry, "refused": names,
                    "variables": {name: wrong_form(options[name]) for name in names}}
    return table


CASES = cases()


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory: pytest.TempPathFactory) -> Dict[str, Dict[str, Any]]:
    """Run every case in one ansible-playbook process (check mode); each case's outcome by its name."""
    top = tmp_path_factory.mktemp("survey")
    report = top / "outcomes"
    report.mkdir()
    hosts: Dict[str, Dict[str, Any]] = {}
    for number, (name, case) in enumerate(CASES.items()):
        folder = top / name
        folder.mkdir()
        hosts["case%d" % number] = dict(ROLE_ROOTS[case["role"]](folder), **case["variables"],
                                        survey_role=case["role"], survey_entry=case["entry"],
                                        ansible_connection="local", ansible_python_interpreter=sys.executable)
    inventory = top / "inventory.json"
    inventory.write_text(json.dumps({"all": {"hosts": hosts}}))
    record = {"name": "Record", "check_mode": False, "ansible.builtin.copy": {
        "dest": "%s/{{ inventory_hostname }}.json" % report, "mode": "0644",
        "content": "{{ {'outcome': survey_outcome, 'input': lookup('ansible.builtin.vars', survey_role ~ '_input',"
                   " default='') or none} | to_json }}"}}
    play = [{"name": "Survey inputs", "hosts": "all", "gather_facts": False, "tasks": [
        {"name": "The role", "block": [
            {"name": "The role under test", "ansible.builtin.include_role": {
                "name": "confidential_gpu.host.{{ survey_role }}", "tasks_from": "{{ survey_entry }}"}},
            {"name": "It passed", "ansible.builtin.set_fact": {"survey_outcome": {"failed": False}}}],
         "rescue": [{"name": "It failed", "ansible.builtin.set_fact": {"survey_outcome": {
             "failed": True, "task": "{{ ansible_failed_task.name }}", "msg": FAILURE_MESSAGES}}}]},
        record]}]
    proc = ansible_playbook(top, play, "survey", ["-i", str(inventory), "--forks", "8"], check=True)
    names = list(CASES)
    found = {names[int(path.stem[len("case"):])]: json.loads(path.read_text()) for path in report.glob("case*.json")}
    assert set(found) == set(names), "cases left no outcome (rc=%d):\n%s" % (proc.returncode, proc.stdout[-4000:])
    return found


def test_every_option_is_covered() -> None:
    """Each bool, int and list option of every entry point is in an accepted case and in a refused one."""
    for role, entry, options in ENTRIES:
        for name in options:
            assert name in CASES["%s-%s-accepted" % (role, entry)]["expected"], (role, entry, name)
            assert any(name in case.get("refused", ()) for case in CASES.values()
                       if (case["role"], case["entry"]) == (role, entry)), (role, entry, name)


@pytest.mark.parametrize("name", [name for name in CASES if name.endswith("-accepted")])
def test_role_reads_typed_values(outcomes: Dict[str, Dict[str, Any]], name: str) -> None:
    result = outcomes[name]
    assert result["input"] is not None, "no %s_input after the entry: %s" % (CASES[name]["role"], result["outcome"])
    for option, expected in CASES[name]["expected"].items():
        got = result["input"].get(option)
        assert got == expected and type(got) is type(expected), (option, CASES[name]["variables"][option], got)
    outcome = result["outcome"]
    # The role may stop later on the fake root for its own reasons, never at its inputs.
    assert not outcome["failed"] or "Validat" not in outcome["task"] and "Read the inputs" not in outcome["task"], \
        outcome


@pytest.mark.parametrize("name", [name for name in CASES if name.endswith("-refused")])
def test_wrong_text_is_refused_naming_the_variable(outcomes: Dict[str, Dict[str, Any]], name: str) -> None:
    outcome = outcomes[name]["outcome"]
    assert outcome["failed"], "%s: not refused" % name
    for option in CASES[name]["refused"]:
        assert option in outcome["msg"], (option, outcome["msg"])
    if name.endswith("-lookup-refused"):
        assert LIST_FORMS in outcome["msg"], outcome["msg"]
        assert outcomes[name]["input"] is None, "the role went on with %s" % outcomes[name]["input"]
