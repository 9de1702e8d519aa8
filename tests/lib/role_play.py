"""Run one of the collection's roles with ansible-playbook on this machine (local connection).

The play applies the role with the given variables and then writes the facts the
test asks for to a JSON file (also in check mode), so that tests read results as
data instead of scraping the log.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

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
    playbook = tmp_path / (name + ".yml")
    playbook.write_text(json.dumps(play))
    extra = tmp_path / (name + "-vars.json")
    extra.write_text(json.dumps(variables))
    command = [str(Path(sys.executable).with_name("ansible-playbook")), str(playbook), "-e", "@%s" % extra]
    command += ["--check"] if check else []
    command += ["--diff"] if diff else []
    run_env = dict(os.environ, ANSIBLE_CONFIG=str(REPO / "ansible.cfg"), ANSIBLE_NOCOLOR="1",
                   ANSIBLE_FORCE_COLOR="0", **(env or {}))
    proc = subprocess.run(command, cwd=REPO, env=run_env, capture_output=True, text=True, timeout=600, check=False)
    facts = json.loads(out.read_text()) if out.exists() else {}
    return PlayResult(proc.returncode, proc.stdout + proc.stderr, facts)
