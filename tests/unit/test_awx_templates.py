"""AWX job templates as code (issue 19, point 3): extensions/awx/.

The surveys are written by scripts/awx-surveys from the roles' argument specs; these tests fail when the
committed files drift from what it writes, when a survey asks for a variable no role has any more, when a
question breaks a rule AWX checks when it saves a survey, and when the example inventory names an option no
role has or gives it a value the role's spec refuses.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, Dict, List

import pytest
import yaml
from ansible.module_utils.common.arg_spec import ArgumentSpecValidator
from conftest import REPO

sys.path.insert(0, str(REPO / "scripts"))
sys.path.insert(0, str(REPO / "tests" / "lib"))
import awx_surveys  # noqa: E402
from fake_sysfs import build_tree, lab_like_host  # noqa: E402

AWX = REPO / "extensions" / "awx"
INVENTORY = AWX / "inventory.example.yml"
# Question types and the Python type of their default: SURVEY_TYPE_MAPPING in awx/main/models/mixins.py
# (AWX 24.6.1), which JobTemplateSurveySpec._validate_spec_data (awx/api/views/__init__.py) applies.
SURVEY_DEFAULT_TYPES = {"text": str, "textarea": str, "password": str, "multiplechoice": str,
                        "multiselect": str, "integer": int, "float": (float, int)}


def exported() -> Dict[str, Any]:
    return json.loads((AWX / "job_templates.json").read_text())


def all_role_options() -> Dict[str, Dict[str, Any]]:
    """Every option of every role's argument specs, read from disk (not through the generator)."""
    options: Dict[str, Dict[str, Any]] = {}
    for path in sorted(REPO.glob("roles/*/meta/argument_specs.yml")):
        for entry_point in yaml.safe_load(path.read_text())["argument_specs"].values():
            options.update(entry_point.get("options", {}))
    return options


def questions() -> List[Dict[str, Any]]:
    return [item for template in exported()["job_templates"] for item in template["related"]["survey_spec"]["spec"]]


def test_the_committed_templates_and_survey_doc_are_what_the_generator_writes() -> None:
    for path, text in awx_surveys.generated_files().items():
        assert path.read_text() == text, "%s is out of date: run scripts/awx-surveys" % path.relative_to(REPO)
    proc = subprocess.run([str(REPO / "scripts" / "awx-surveys"), "--check"], capture_output=True, text=True,
                          timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr


def test_a_changed_argument_spec_makes_the_check_fail(monkeypatch: pytest.MonkeyPatch) -> None:
    real = awx_surveys.load_specs

    def renamed_default(role: str) -> Dict[str, Dict[str, Any]]:
        specs = real(role)
        if role == "reboot":
            specs["main"]["options"]["reboot_timeout"] = dict(specs["main"]["options"]["reboot_timeout"], default=60)
        return specs

    monkeypatch.setattr(awx_surveys, "load_specs", renamed_default)
    assert awx_surveys.main(["--check"]) == 1


def test_every_survey_variable_is_an_option_of_some_role() -> None:
    options = all_role_options()
    asked = [item["variable"] for item in questions()]
    assert "reboot_consent" in asked
    unknown = sorted(set(asked) - set(options))
    assert not unknown, "survey variables no role's argument_specs has (renamed?): %s" % unknown


def test_survey_questions_follow_the_rules_awx_checks_when_it_saves_them() -> None:
    for template in exported()["job_templates"]:
        survey = template["related"]["survey_spec"]
        assert isinstance(survey["name"], str) and isinstance(survey["description"], str) and survey["spec"]
        variables = [item["variable"] for item in survey["spec"]]
        assert len(variables) == len(set(variables)), template["name"]
        for item in survey["spec"]:
            assert all(isinstance(item[key], str) for key in ("type", "question_name", "variable")), item
            assert isinstance(item["required"], bool), item
            assert item["type"] in SURVEY_DEFAULT_TYPES, item
            if item.get("default", "") != "":
                assert isinstance(item["default"], SURVEY_DEFAULT_TYPES[item["type"]]), item
            assert all(item.get(key) is None or isinstance(item[key], int) for key in ("min", "max")), item
            if item["type"] in ("multiplechoice", "multiselect"):
                defaults = item.get("default", "").splitlines()
                assert item["choices"] and all(value in item["choices"] for value in defaults), item
                assert item["type"] == "multiselect" or len(defaults) <= 1, item


def test_survey_types_follow_the_argument_specs() -> None:
    options = all_role_options()
    for item in questions():
        spec = options[item["variable"]]
        kind = spec.get("type", "str")
        if kind == "bool":
            assert item["type"] == "multiplechoice" and item["choices"] == ["true", "false"]
            assert item["default"] == str(spec["default"]).lower()
        elif kind == "int":
            assert item["type"] == "integer" and item["default"] == spec["default"]
        elif kind == "list":
            assert item["type"] == "multiselect" and item["choices"] == spec["choices"]
        else:
            assert item["type"] == "multiplechoice" and item["choices"] == spec["choices"]
            assert item["default"] == spec["default"]
        assert item["required"] == bool(spec.get("required", False))


def test_templates_run_the_shipped_playbooks_with_privilege_escalation() -> None:
    templates = {template["name"]: template for template in exported()["job_templates"]}
    playbooks = {template["playbook"] for template in templates.values()}
    users_run = {str(path.relative_to(REPO)) for path in (REPO / "playbooks").glob("*.yml")}
    assert playbooks == users_run, "a playbook without a job template (validate.yml? add it to scripts/awx_surveys.py)"
    assert {template["job_type"] for template in templates.values() if template["playbook"].endswith("prepare.yml")} \
        == {"check", "run"}
    for template in templates.values():
        assert template["become_enabled"] and template["survey_enabled"]
        assert template["natural_key"] == {"organization": {"name": "Default", "type": "organization"},
                                           "name": template["name"], "type": "job_template"}
        assert template["project"]["name"] == exported()["projects"][0]["name"]


def test_templates_that_run_discovery_store_its_facts() -> None:
    """Role discovery's discovery_summary is cacheable: AWX keeps it only with use_fact_cache on."""
    for template in exported()["job_templates"]:
        runs_discovery = "confidential_gpu.host.discovery" in (REPO / template["playbook"]).read_text()
        assert template["use_fact_cache"] is runs_discovery, template["name"]


def answers_awx_sends(survey: Dict[str, Any]) -> Dict[str, Any]:
    """The extra vars of a launch: the defaults AWX adds (mixins.py, _update_unified_job_kwargs, 24.6.1:
    every default that is not None and valid for its type), and an answer for each multiselect."""
    sent: Dict[str, Any] = {}
    for item in survey["spec"]:
        if item["type"] == "multiselect":
            sent[item["variable"]] = item["choices"][:1]
        elif item.get("default") is not None and not (item["type"] == "text" and item["default"] == ""):
            sent[item["variable"]] = item["default"]
    return sent


def test_discover_runs_with_the_extra_vars_its_survey_sends(tmp_path: Path) -> None:
    (discover,) = [template for template in exported()["job_templates"]
                   if template["playbook"] == "playbooks/discover.yml"]
    extra = dict(answers_awx_sends(discover["related"]["survey_spec"]), discovery_root=str(tmp_path / "host"))
    assert extra["discovery_require"] == ["vfio_ready"] and extra["discovery_roles"] == ["gpu"]
    build_tree(tmp_path / "host", lab_like_host())
    (tmp_path / "extra.json").write_text(json.dumps(extra))
    env = dict(os.environ, ANSIBLE_CONFIG=str(REPO / "ansible.cfg"), ANSIBLE_NOCOLOR="1")
    proc = subprocess.run([str(Path(sys.executable).with_name("ansible-playbook")), str(REPO / discover["playbook"]),
                           "-e", "@%s" % (tmp_path / "extra.json")],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode != 0, "the lab-like tree is not vfio_ready, so discovery_require fails the host"
    assert "vfio_ready is false on localhost" in proc.stdout, proc.stdout + proc.stderr


@pytest.fixture(scope="module")
def inventory() -> Dict[str, Any]:
    env = dict(os.environ, ANSIBLE_CONFIG=str(REPO / "ansible.cfg"))
    proc = subprocess.run([str(Path(sys.executable).with_name("ansible-inventory")), "-i", str(INVENTORY), "--list"],
                          capture_output=True, text=True, env=env, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    assert "Unable to parse" not in proc.stderr and "No inventory was parsed" not in proc.stderr, proc.stderr
    return json.loads(proc.stdout)


def test_example_inventory_has_a_group_per_gpu_platform(inventory: Dict[str, Any]) -> None:
    groups = set(inventory["all"]["children"])
    assert {"hgx_h100_snp", "hgx_h200_tdx", "pcie_h100_snp"} <= groups
    for group in ("hgx_h100_snp", "hgx_h200_tdx", "pcie_h100_snp"):
        assert inventory[group]["hosts"], group
    tdx_host = inventory["hgx_h200_tdx"]["hosts"][0]
    assert inventory["_meta"]["hostvars"][tdx_host]["cc_host_technology"] == "tdx"


def test_example_inventory_vars_are_valid_role_options(inventory: Dict[str, Any]) -> None:
    options = all_role_options()
    connection = {"ansible_host", "ansible_user"}
    for host, hostvars in inventory["_meta"]["hostvars"].items():
        role_vars = {name: value for name, value in hostvars.items() if name not in connection}
        unknown = sorted(set(role_vars) - set(options))
        assert not unknown, "%s: no role has %s" % (host, unknown)
        spec = {name: options[name] for name in role_vars}
        result = ArgumentSpecValidator(spec).validate(role_vars)
        assert not result.error_messages, "%s: %s" % (host, result.error_messages)


def test_example_inventory_sets_nothing_a_survey_asks(inventory: Dict[str, Any]) -> None:
    """A survey answer is an extra var and wins over group vars: the inventory would be ignored there."""
    asked = {item["variable"] for item in questions()}
    for host, hostvars in inventory["_meta"]["hostvars"].items():
        assert not asked & set(hostvars), "%s sets %s, which a survey asks" % (host, sorted(asked & set(hostvars)))
