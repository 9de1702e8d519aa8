"""Run the collection's roles and modules with ansible-playbook on this machine (local connection).

``run_role`` applies one role with the given variables and then writes the facts the test asks for to a
JSON file (also in check mode), so that tests read results as data instead of scraping the log.

The batched helpers run many cases in ONE ansible-playbook process (its start-up costs seconds; a case
costs a fraction of that) and still give each case's own result:

- ``run_tasks_batched``: tasks (module calls) on localhost, each registered with ``ignore_errors`` so that a
  refused case does not stop the next one;
- ``run_role_cases``: one role per case, each case an inventory host of its own (local connection) whose
  host variables are the case's variables, so that no fact or variable of one case reaches another; the
  role runs in a block whose rescue records the failure, so that a refused case stops where the role stops
  and nothing after the refusal runs.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence

REPO = Path(__file__).resolve().parents[2]


@dataclass
class PlayResult:
    rc: int
    output: str
    facts: Dict[str, Any]

    @property
    def recap(self) -> Dict[str, int]:
        """ok/changed/failed/... counts of the PLAY RECAP line for localhost."""
        for line in self.output.splitlines():
            if line.startswith("localhost") and ":" in line and "ok=" in line:
                return {key: int(value) for key, value in
                        (field.split("=") for field in line.split(":", 1)[1].split())}
        return {}


def run_role(tmp_path: Path, role: str, variables: Dict[str, Any], report: Sequence[str] = (),
             check: bool = False, diff: bool = False, tasks_from: str = "main",
             env: Optional[Dict[str, str]] = None, name: str = "play") -> PlayResult:
    """``ansible-playbook`` a play that includes ``confidential_gpu.host.<role>``; ``report`` names facts to return."""
    out = tmp_path / (name + "-facts.json")
    if out.exists():
        out.unlink()
    play: List[Dict[str, Any]] = [{
        "name": "Run the role under test",
        "hosts": "localhost",
        "gather_facts": False,
        "tasks": [
            {"name": "The role", "ansible.builtin.include_role": {
                "name": "confidential_gpu.host." + role, "tasks_from": tasks_from}},
            {"name": "Report the facts", "check_mode": False, "changed_when": False, "ansible.builtin.copy": {
                "dest": str(out), "mode": "0644",
                "content": "{{ {%s} | to_json }}" % ", ".join(
                    "'%s': (%s | default(none))" % (fact, fact) for fact in report)}},
        ],
    }]
    extra = tmp_path / (name + "-vars.json")
    extra.write_text(json.dumps(variables))
    proc = ansible_playbook(tmp_path, play, name, ["-e", "@%s" % extra], check=check, diff=diff, env=env)
    facts = json.loads(out.read_text()) if out.exists() else {}
    return PlayResult(proc.returncode, proc.stdout + proc.stderr, facts)


def ansible_playbook(tmp_path: Path, plays: List[Dict[str, Any]], name: str, arguments: Sequence[str] = (),
                     check: bool = False, diff: bool = False,
                     env: Optional[Dict[str, str]] = None) -> subprocess.CompletedProcess[str]:
    """Write ``plays`` to ``<tmp_path>/<name>.yml`` and run ansible-playbook on it with this checkout's
    ansible.cfg (so the collection is the one under test), without colours."""
    playbook = tmp_path / (name + ".yml")
    playbook.write_text(json.dumps(plays))
    command = [str(Path(sys.executable).with_name("ansible-playbook")), str(playbook), *arguments]
    command += ["--check"] if check else []
    command += ["--diff"] if diff else []
    run_env = dict(os.environ, ANSIBLE_CONFIG=str(REPO / "ansible.cfg"), ANSIBLE_NOCOLOR="1",
                   ANSIBLE_FORCE_COLOR="0", **(env or {}))
    return subprocess.run(command, cwd=REPO, env=run_env, capture_output=True, text=True, timeout=600, check=False)


@dataclass
class BatchResult:
    rc: int
    output: str
    results: List[Dict[str, Any]]


def run_tasks_batched(tmp_path: Path, tasks: Sequence[Dict[str, Any]], check: bool = False, diff: bool = False,
                      name: str = "batch") -> BatchResult:
    """Run ``tasks`` (one per case) on localhost in one ansible-playbook process; each is registered and may
    fail without stopping the others. ``results[i]`` is what task ``i`` returned."""
    out = tmp_path / (name + "-results.json")
    if out.exists():
        out.unlink()
    cases = [dict(task, register="case%d" % number, ignore_errors=True) for number, task in enumerate(tasks)]
    cases.append({"name": "Report every case", "check_mode": False, "ansible.builtin.copy": {
        "dest": str(out), "mode": "0644",
        "content": "{{ [%s] | to_json }}" % ", ".join("case%d" % number for number in range(len(tasks)))}})
    proc = ansible_playbook(tmp_path, [{"hosts": "localhost", "connection": "local", "gather_facts": False,
                                        "tasks": cases}], name, check=check, diff=diff)
    results = json.loads(out.read_text()) if out.exists() else []
    return BatchResult(proc.returncode, proc.stdout + proc.stderr, results)


# The failed task's message, and for a loop each failed item's message after it.
FAILURE_MESSAGES = ("{{ ([ansible_failed_result.msg | default('')] + (ansible_failed_result.results | default([])"
                    " | selectattr('failed', 'defined') | selectattr('failed') | map(attribute='msg')"
                    " | map('string') | list)) | join(' | ') }}")


@dataclass
class RoleCases:
    rc: int
    output: str
    outcomes: Dict[str, Dict[str, Any]]

    def outcome(self, case: str) -> Dict[str, Any]:
        """``{"failed": bool, "task": name of the failed task, "msg": its message, "result": its result}``."""
        assert case in self.outcomes, "case %s left no outcome (rc=%d):\n%s" % (case, self.rc, self.output)
        return self.outcomes[case]


def run_role_cases(tmp_path: Path, role: str, cases: Mapping[str, Dict[str, Any]], check: bool = False,
                   diff: bool = False, tasks_from: str = "main", name: str = "cases") -> RoleCases:
    """Run role ``confidential_gpu.host.<role>`` once per case in one ansible-playbook process.

    Each case is an inventory host (local connection) with the case's variables as host variables, so that
    cases never see each other's variables or facts; the role runs in a block and its first failure is
    recorded by the rescue (the role stops there, as it would on a real host)."""
    report = tmp_path / (name + "-outcomes")
    report.mkdir(exist_ok=True)
    hosts = {"case%d" % number: dict(variables, ansible_connection="local",
                                     ansible_python_interpreter=sys.executable)
             for number, variables in enumerate(cases.values())}
    inventory = tmp_path / (name + "-inventory.json")
    inventory.write_text(json.dumps({"all": {"hosts": hosts}}))
    record = {"name": "Record the outcome", "check_mode": False,
              "ansible.builtin.copy": {"dest": "%s/{{ inventory_hostname }}.json" % report, "mode": "0644",
                                       "content": "{{ case_outcome | to_json }}"}}
    play = [{"name": "Hostile cases of role " + role, "hosts": "all", "gather_facts": False, "tasks": [
        {"name": "The role", "block": [
            {"name": "The role under test", "ansible.builtin.include_role": {
                "name": "confidential_gpu.host." + role, "tasks_from": tasks_from}},
            {"name": "It passed", "ansible.builtin.set_fact": {"case_outcome": {"failed": False}}}],
         "rescue": [{"name": "It failed", "ansible.builtin.set_fact": {"case_outcome": {
             "failed": True, "task": "{{ ansible_failed_task.name }}",
             "msg": FAILURE_MESSAGES, "result": "{{ ansible_failed_result }}"}}}]},
        record]}]
    proc = ansible_playbook(tmp_path, play, name, ["-i", str(inventory), "--forks", str(min(8, len(hosts)) or 1)],
                            check=check, diff=diff)
    names = list(cases)
    outcomes = {names[int(path.stem[len("case"):])]: json.loads(path.read_text())
                for path in report.glob("case*.json")}
    return RoleCases(proc.returncode, proc.stdout + proc.stderr, outcomes)
