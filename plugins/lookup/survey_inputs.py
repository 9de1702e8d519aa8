# Copyright: contributors to confidential_gpu.host
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Lookup survey_inputs: a role's bool, int and list options as typed values, from the strings AWX sends."""

from __future__ import annotations

DOCUMENTATION = r"""
name: survey_inputs
version_added: "0.2.0"
author: confidential_gpu.host maintainers (@confidential-gpu)
short_description: The calling role's bool, int and list options as typed values
description:
  - Reads C(meta/argument_specs.yml) of the role that calls it (C(role_path)), takes the options of the entry point
    named by the term, and returns a dict with the value of every C(bool), C(int) and C(list) option (lists whose
    elements are not dicts) converted to its type.
  - Needed because AWX surveys and C(-e key=value) send strings, extra vars outrank every other variable, and a
    role's argument validation checks a value without changing the variable the role then reads.
  - "Booleans: true/false, yes/no, on/off, 1/0 (any case). Integers: whole numbers, also as text. Lists: a list, a
    comma-separated text (items trimmed, empty ones dropped; empty text is an empty list) or a JSON list text;
    items of an C(int) list are converted like integers."
  - Fails naming every variable it cannot convert, with its value and the forms it accepts.
options:
  _terms:
    description: The role's entry point (C(main), or the C(tasks_from) name).
    required: true
"""

EXAMPLES = r"""
- name: Normalise the inputs of this role once, at its entry point
  ansible.builtin.set_fact:
    discovery_input: "{{ lookup('confidential_gpu.host.survey_inputs', 'main') }}"
"""

RETURN = r"""
_raw:
  description: One dict, option name to its typed value.
  type: list
  elements: dict
"""

import json
import os
import re
from typing import Any, Dict, List, Optional, Tuple

import yaml
from ansible.errors import AnsibleError
from ansible.module_utils.parsing.convert_bool import BOOLEANS_FALSE, BOOLEANS_TRUE
from ansible.plugins.lookup import LookupBase

FORMS = {
    "bool": "true or false (also yes/no, on/off, 1/0)",
    "int": "a whole number such as 3 (also as text, \"3\")",
    "list": "a list, a comma-separated text such as \"a,b\", or a JSON list text such as '[\"a\", \"b\"]'",
}
WHOLE_NUMBER = re.compile(r"^\s*[-+]?\d+\s*$")


class SurveyInputError(ValueError):
    pass


def to_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    word = value.strip().lower() if isinstance(value, str) else value
    if word in BOOLEANS_TRUE:
        return True
    if word in BOOLEANS_FALSE:
        return False
    raise SurveyInputError(FORMS["bool"])


def to_int(value: Any) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and WHOLE_NUMBER.match(value):
        return int(value)
    raise SurveyInputError(FORMS["int"])


def to_list(value: Any, elements: str) -> List[Any]:
    if value is None:
        items: List[Any] = []
    elif isinstance(value, (list, tuple)):
        items = list(value)
    elif isinstance(value, str) and value.strip().startswith("["):
        try:
            items = json.loads(value)
        except ValueError as error:
            raise SurveyInputError("%s (not valid JSON: %s)" % (FORMS["list"], error)) from None
    elif isinstance(value, str):
        items = [item.strip() for item in value.split(",") if item.strip()]
    else:
        raise SurveyInputError(FORMS["list"])
    if elements == "int":
        return [to_int(item) for item in items]
    if elements == "bool":
        return [to_bool(item) for item in items]
    return items


def converter(option: Dict[str, Any]) -> Optional[Tuple[str, str]]:
    """``(type, elements)`` of an option this lookup converts, None for the others."""
    kind = option.get("type", "str")
    elements = option.get("elements", "str")
    if kind in ("bool", "int") or (kind == "list" and elements != "dict"):
        return kind, elements
    return None


def typed_value(name: str, value: Any, option: Dict[str, Any]) -> Any:
    kind, elements = converter(option) or ("raw", "")
    converted: Any = to_bool(value) if kind == "bool" else to_int(value) if kind == "int" else to_list(value, elements)
    choices = option.get("choices") or ()
    outside = [item for item in (converted if kind == "list" else [converted]) if choices and item not in choices]
    if outside:
        raise SurveyInputError("one or more of: %s" % ", ".join(str(choice) for choice in choices))
    return converted


class LookupModule(LookupBase):
    def run(self, terms: List[Any], variables: Optional[Dict[str, Any]] = None, **kwargs: Any) -> List[Any]:
        variables = variables or {}
        if len(terms) != 1 or "role_path" not in variables:
            raise AnsibleError("survey_inputs takes one entry point name and is called from a role's tasks")
        entry = str(terms[0])
        path = os.path.join(str(self._templar.template(variables["role_path"])), "meta", "argument_specs.yml")
        with open(path, encoding="utf-8") as stream:
            options = ((yaml.safe_load(stream) or {}).get("argument_specs", {}).get(entry) or {}).get("options") or {}
        typed: Dict[str, Any] = {}
        problems: List[str] = []
        for name, option in options.items():
            if converter(option) is None or name not in variables:
                continue
            value = self._templar.template(variables[name])
            try:
                typed[name] = typed_value(name, value, option)
            except SurveyInputError as error:
                problems.append("%s is %s: give %s" % (name, json.dumps(value, default=str), error))
        if problems:
            raise AnsibleError("Inputs of %s (%s): %s" % (os.path.basename(os.path.dirname(os.path.dirname(path))),
                                                          entry, "; ".join(problems)))
        return [typed]
