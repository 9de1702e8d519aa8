"""Write the AWX job templates of extensions/awx/ with surveys generated from the roles' argument specs.

    scripts/awx-surveys            # rewrite extensions/awx/job_templates.json and extensions/awx/SURVEYS.md
    scripts/awx-surveys --check    # exit 1 when either file differs from what this script writes

One source: the type, choices, default, required flag and description of every survey question come from
``roles/<role>/meta/argument_specs.yml`` of a role the template's playbook runs; this file only chooses
WHICH options a template asks for (SURVEYED below) and says why the others stay out.

Why a chosen list and not every option: AWX sends each survey default as an extra var at every launch
(awx/main/models/mixins.py, SurveyJobTemplateMixin._update_unified_job_kwargs, AWX 24.6.1), and extra vars
outrank inventory group_vars. A survey of every option would silently replace the per-platform settings of
the inventory (extensions/awx/inventory.example.yml: cc_host_technology, vfio_roles, gpu_cc_mode_*) with
the role defaults. So surveys ask for what changes from run to run; what a host or platform is lives in the
inventory.

The file format is what ``awx export`` writes and ``awx import`` reads (awxkit, AWX 24.6.1:
awxkit/awxkit/api/pages/api.py, ApiV2._export / _import_list / _assign_related): one list per resource,
foreign keys as natural keys ({"organization": ..., "name": ..., "type": ...}), the survey as the
job template's ``related.survey_spec``. Survey questions follow the rules AWX checks when a survey is saved
(awx/api/views/__init__.py, JobTemplateSurveySpec._validate_spec_data, AWX 24.6.1).
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Tuple

import yaml

REPO = Path(__file__).resolve().parents[1]
AWX_DIR = REPO / "extensions" / "awx"
TEMPLATES_FILE = AWX_DIR / "job_templates.json"
SURVEYS_DOC = AWX_DIR / "SURVEYS.md"
COLLECTION = "confidential_gpu.host"
ORGANIZATION = {"name": "Default", "type": "organization"}
PROJECT_NAME = COLLECTION
EE_NAME = COLLECTION
# Placeholders the user replaces before `awx import` (docs/awx.md, "Import").
PROJECT_SCM_URL = "https://git.example.com/your-org/confidential_gpu.host.git"
EE_IMAGE = "registry.example.com/confidential-gpu-host-ee:latest"
INVENTORY_SETTING = "not a per-run choice: set it in the inventory (group_vars, host_vars)"
# Playbooks that run role discovery, whose cacheable fact discovery_summary AWX keeps per host when the
# template's "Enable Fact Storage" (use_fact_cache) is on (docs/awx.md, "Results for workflows").
FACT_STORING_PLAYBOOKS = ("playbooks/discover.yml", "playbooks/prepare.yml", "playbooks/report.yml")


@dataclass(frozen=True)
class Template:
    name: str
    playbook: str
    job_type: str  # "run" or "check"
    description: str
    surveyed: Tuple[str, ...]
    diff_mode: bool = False


TEMPLATES: Tuple[Template, ...] = (
    Template(
        name="%s discover" % COLLECTION,
        playbook="playbooks/discover.yml",
        job_type="run",
        description="What each GPU host has and is ready for; changes nothing (docs/discovery.md).",
        surveyed=("discovery_require", "discovery_roles"),
    ),
    Template(
        name="%s prepare (check)" % COLLECTION,
        playbook="playbooks/prepare.yml",
        job_type="check",
        diff_mode=True,
        description="What prepare would change on each host, in check mode with diffs; changes nothing.",
        surveyed=("discovery_require", "pcie_acs_fail_on_violation", "hugepages_on_shortfall"),
    ),
    Template(
        name="%s prepare" % COLLECTION,
        playbook="playbooks/prepare.yml",
        job_type="run",
        description="Prepare each GPU host for confidential Kata pods, at most one reboot per host (with consent).",
        surveyed=("reboot_consent", "reboot_fail_without_consent", "reboot_timeout", "discovery_require",
                  "pcie_acs_fail_on_violation", "hugepages_on_shortfall"),
    ),
    Template(
        name="%s validate" % COLLECTION,
        playbook="playbooks/validate.yml",
        job_type="run",
        description="Check each host is as prepare left it, one line per check; changes nothing (docs/validate.md).",
        surveyed=("validate_parts", "validate_fail_on_fail"),
    ),
    Template(
        name="%s capture" % COLLECTION,
        playbook="playbooks/capture.yml",
        job_type="run",
        description="A replayable capture of what the info modules read from each host, fetched to capture_dir "
                    "(an extra var; docs/capture.md).",
        surveyed=("capture_commands",),
    ),
    Template(
        name="%s report" % COLLECTION,
        playbook="playbooks/report.yml",
        job_type="run",
        description="The fleet report: one HTML page and one JSON file for all hosts, what changed since the last "
                    "one, written to report_dir (an extra var: a directory on a volume, or it goes with the job's "
                    "container); the summary is the job's artifacts (docs/awx.md). Changes nothing on hosts.",
        surveyed=("discovery_roles",),
    ),
)


@dataclass(frozen=True)
class Option:
    role: str
    entry_point: str
    name: str
    spec: Dict[str, Any]


def load_specs(role: str) -> Dict[str, Dict[str, Any]]:
    path = REPO / "roles" / role / "meta" / "argument_specs.yml"
    return yaml.safe_load(path.read_text())["argument_specs"]


def role_short_name(name: str) -> str:
    prefix = COLLECTION + "."
    if not name.startswith(prefix):
        raise ValueError("%s is not a role of %s" % (name, COLLECTION))
    return name[len(prefix):]


def playbook_roles(playbook: str) -> Iterator[Tuple[str, str, Dict[str, Any]]]:
    """(role, entry point, vars the playbook sets for it) for every role a playbook runs, in order."""
    for play in yaml.safe_load((REPO / playbook).read_text()):
        for entry in play.get("roles", []):
            name = entry["role"] if isinstance(entry, dict) else entry
            yield role_short_name(name), "main", dict(entry.get("vars", {})) if isinstance(entry, dict) else {}
        yield from task_roles(play.get("tasks", []), dict(play.get("vars", {})))


def task_roles(tasks: List[Dict[str, Any]], inherited: Dict[str, Any]) -> Iterator[Tuple[str, str, Dict[str, Any]]]:
    """The roles that tasks import or include, blocks included; a task's vars add to its play's and block's."""
    for task in tasks:
        scope = {**inherited, **task.get("vars", {})}
        yield from task_roles(task.get("block", []) + task.get("rescue", []) + task.get("always", []), scope)
        for action in ("ansible.builtin.import_role", "ansible.builtin.include_role"):
            if action in task:
                yield role_short_name(task[action]["name"]), task[action].get("tasks_from", "main"), scope


def playbook_options(playbook: str) -> Tuple[Dict[str, Option], Dict[str, str]]:
    """Every option of the roles a playbook runs, and the ones the playbook sets itself (name -> role)."""
    options: Dict[str, Option] = {}
    set_by_playbook: Dict[str, str] = {}
    for role, entry_point, play_vars in playbook_roles(playbook):
        for name, spec in load_specs(role)[entry_point].get("options", {}).items():
            options.setdefault(name, Option(role, entry_point, name, spec))
        for name in play_vars:
            set_by_playbook.setdefault(name, role)
    return options, set_by_playbook


def unsurveyable_reason(option: Option, set_by_playbook: Dict[str, str]) -> Optional[str]:
    """Why an option cannot be a survey question at all, or None when it can."""
    spec = option.spec
    kind = spec.get("type", "str")
    if option.name in set_by_playbook:
        return "set by the playbook (an extra var would override its wiring)"
    if kind == "dict" or spec.get("elements") == "dict":
        return "dict or list of dicts (no survey question type holds one)"
    if kind == "raw":
        return "raw (its meaning depends on the YAML type, which a survey answer loses)"
    if isinstance(spec.get("default"), str) and "{{" in spec["default"]:
        return "computed default (AWX refuses Jinja in survey answers by default)"
    if kind not in ("bool", "int", "float", "str", "path", "list"):
        return "type %s" % kind
    return None


def description_text(spec: Dict[str, Any]) -> str:
    text = spec.get("description", "")
    return " ".join(text) if isinstance(text, list) else str(text)


def question(option: Option) -> Dict[str, Any]:
    """One survey question from an argument spec option."""
    spec = option.spec
    kind = spec.get("type", "str")
    default = spec.get("default")
    choices = [str(choice) for choice in spec.get("choices", [])]
    item: Dict[str, Any] = {
        "question_name": option.name,
        "question_description": "%s (role %s)" % (description_text(spec), option.role),
        "variable": option.name,
        "required": bool(spec.get("required", False)),
    }
    if kind == "bool":
        item.update(type="multiplechoice", choices=["true", "false"])
        if default is not None:
            item["default"] = "true" if default else "false"
    elif kind in ("int", "float"):
        item.update(type="integer" if kind == "int" else "float", min=None, max=None)
        if default is not None:
            item["default"] = default
    elif kind == "list" and choices:
        # A list answer: AWX validates a multiselect value as a list of the choices (mixins.py).
        item.update(type="multiselect", choices=choices, default="\n".join(str(value) for value in default or []))
    elif kind == "list":
        item.update(type="text", min=0, max=1024, default=",".join(str(value) for value in default or []))
        item["question_description"] += " Comma-separated."
    elif choices:
        item.update(type="multiplechoice", choices=choices)
        if default is not None:
            item["default"] = str(default)
    else:
        item.update(type="text", min=0, max=1024, default="" if default is None else str(default))
    return item


def survey_spec(template: Template) -> Dict[str, Any]:
    options, set_by_playbook = playbook_options(template.playbook)
    spec = []
    for name in template.surveyed:
        if name not in options:
            raise ValueError("%s: %s is no option of a role that %s runs" % (template.name, name, template.playbook))
        reason = unsurveyable_reason(options[name], set_by_playbook)
        if reason:
            raise ValueError("%s: %s cannot be a survey question: %s" % (template.name, name, reason))
        spec.append(question(options[name]))
    return {"name": "", "description": "", "spec": spec}


def natural_key(kind: str, name: str) -> Dict[str, Any]:
    return {"organization": ORGANIZATION, "name": name, "type": kind}


def job_template(template: Template) -> Dict[str, Any]:
    return {
        "name": template.name,
        "description": template.description,
        "job_type": template.job_type,
        "inventory": natural_key("inventory", "GPU hosts"),
        "project": natural_key("project", PROJECT_NAME),
        "playbook": template.playbook,
        "scm_branch": "",
        "forks": 0,
        "limit": "",
        "verbosity": 0,
        "extra_vars": "---",
        "job_tags": "",
        "force_handlers": False,
        "skip_tags": "",
        "start_at_task": "",
        "timeout": 0,
        "use_fact_cache": template.playbook in FACT_STORING_PLAYBOOKS,
        "execution_environment": {"name": EE_NAME, "type": "execution_environment"},
        "host_config_key": "",
        "ask_scm_branch_on_launch": False,
        "ask_diff_mode_on_launch": True,
        "ask_variables_on_launch": True,
        "ask_limit_on_launch": True,
        "ask_tags_on_launch": False,
        "ask_skip_tags_on_launch": False,
        "ask_job_type_on_launch": False,
        "ask_verbosity_on_launch": True,
        "ask_inventory_on_launch": True,
        "ask_credential_on_launch": True,
        "ask_execution_environment_on_launch": False,
        "ask_labels_on_launch": False,
        "ask_forks_on_launch": False,
        "ask_job_slice_count_on_launch": True,
        "ask_timeout_on_launch": False,
        "ask_instance_groups_on_launch": False,
        "survey_enabled": True,
        # Privilege escalation: no play of the collection sets become (README, "Privileges").
        "become_enabled": True,
        "diff_mode": template.diff_mode,
        "allow_simultaneous": False,
        "job_slice_count": 1,
        "webhook_service": "",
        "prevent_instance_group_fallback": False,
        "related": {"survey_spec": survey_spec(template)},
        "natural_key": natural_key("job_template", template.name),
    }


def export_document() -> Dict[str, Any]:
    return {
        "projects": [{
            "name": PROJECT_NAME,
            "description": "The %s collection repository: the playbooks the job templates run." % COLLECTION,
            "scm_type": "git",
            "scm_url": PROJECT_SCM_URL,
            "scm_branch": "main",
            "scm_clean": False,
            "scm_delete_on_update": False,
            "scm_update_on_launch": False,
            "allow_override": False,
            "organization": ORGANIZATION,
            "default_environment": {"name": EE_NAME, "type": "execution_environment"},
            "natural_key": natural_key("project", PROJECT_NAME),
        }],
        "execution_environments": [{
            "name": EE_NAME,
            "description": "Built from extensions/ee/execution-environment.yml (docs/awx.md).",
            "image": EE_IMAGE,
            "pull": "missing",
            "organization": ORGANIZATION,
            "natural_key": {"name": EE_NAME, "type": "execution_environment"},
        }],
        "job_templates": [job_template(template) for template in TEMPLATES],
    }


def templates_json() -> str:
    return json.dumps(export_document(), indent=2, sort_keys=True) + "\n"


def surveys_markdown() -> str:
    lines = ["<!-- Written by scripts/awx-surveys from roles/*/meta/argument_specs.yml: do not edit. -->",
             "# Survey questions of the AWX job templates", "",
             "Each survey asks for the options below; every other option of the roles a playbook runs is",
             "left out, for the reason given. Leave host and platform settings to the inventory",
             "(inventory.example.yml): a survey answer is an extra var and outranks group_vars.", ""]
    for template in TEMPLATES:
        options, set_by_playbook = playbook_options(template.playbook)
        lines += ["## %s (`%s`, job type `%s`)" % (template.name, template.playbook, template.job_type), "",
                  "| question | type | default | role |", "|---|---|---|---|"]
        for item in survey_spec(template)["spec"]:
            default = str(item.get("default", "")).replace("\n", ",")
            role = options[item["variable"]].role
            lines.append("| `%s` | %s | `%s` | %s |" % (item["variable"], item["type"], default, role))
        left_out: Dict[str, List[str]] = {}
        for name in sorted(options):
            if name in template.surveyed:
                continue
            reason = unsurveyable_reason(options[name], set_by_playbook) or INVENTORY_SETTING
            left_out.setdefault(reason, []).append(name)
        lines += ["", "Not asked:", ""]
        for reason in sorted(left_out):
            lines.append("- %s: %s" % (reason, ", ".join("`%s`" % name for name in left_out[reason])))
        lines.append("")
    return "\n".join(lines)


def generated_files() -> Dict[Path, str]:
    return {TEMPLATES_FILE: templates_json(), SURVEYS_DOC: surveys_markdown()}


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", maxsplit=1)[0])
    parser.add_argument("--check", action="store_true", help="fail when a generated file differs")
    args = parser.parse_args(argv)
    stale = []
    for path, text in generated_files().items():
        if path.exists() and path.read_text() == text:
            continue
        if args.check:
            stale.append(str(path.relative_to(REPO)))
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
    if stale:
        print("out of date (run scripts/awx-surveys): %s" % ", ".join(stale), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
