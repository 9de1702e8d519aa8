"""The hostile-input cases of one role, run in one ansible-playbook process (``role_play.run_role_cases``).

Each case gets its own folder (``<top>/<case>``) with its own fake root built by the test, and its own
inventory host; the folder's state (every file, link and mode) is taken before the run and again after, so
that each case is checked on its own: refused with its fragments, nothing below its folder changed, and no
secret of the case anywhere in the run's output or in its recorded result.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Sequence

import pytest

from role_play import RoleCases, run_role_cases
from tree_state import Entry, changed_entries, tree_state


@dataclass(frozen=True)
class Case:
    """One hostile input: ``variables`` for the role (``{case}`` in a string value is replaced by the case's
    folder), the ``fragments`` its refusal must hold, and ``secrets`` that must be printed nowhere."""

    name: str
    variables: Dict[str, Any]
    fragments: Sequence[str]
    secrets: Sequence[str] = field(default_factory=tuple)


@dataclass
class RoleBatch:
    run: RoleCases
    before: Dict[str, Dict[str, Entry]]
    folders: Dict[str, Path]

    def assert_refused(self, case: Case) -> None:
        outcome = self.run.outcome(case.name)
        assert outcome["failed"], "case %s was not refused:\n%s" % (case.name, self.run.output)
        for fragment in case.fragments:
            assert fragment in outcome["msg"], (case.name, fragment, outcome["msg"])
        recorded = json.dumps(outcome)
        for secret in case.secrets:
            assert secret not in self.run.output, "%s: secret %r printed:\n%s" % (case.name, secret, self.run.output)
            assert secret not in recorded, "%s: secret %r in the result: %s" % (case.name, secret, recorded)
        after = tree_state(self.folders[case.name])
        assert after == self.before[case.name], changed_entries(self.before[case.name], after)


def with_folder(value: Any, folder: Path) -> Any:
    """``value`` with ``{case}`` in every string replaced by ``folder``."""
    if isinstance(value, str):
        return value.replace("{case}", str(folder))
    if isinstance(value, list):
        return [with_folder(item, folder) for item in value]
    if isinstance(value, dict):
        return {key: with_folder(item, folder) for key, item in value.items()}
    return value


def run_cases(top: Path, role: str, cases: Sequence[Case], build: Callable[[Path], Mapping[str, Any]],
              check: bool = False, tasks_from: str = "main") -> RoleBatch:
    """Build each case's folder with ``build(folder)`` (which returns the variables that point the role at it,
    such as its root), then run every case of ``role`` in one ansible-playbook process."""
    folders: Dict[str, Path] = {}
    variables: Dict[str, Dict[str, Any]] = {}
    for case in cases:
        folder = top / case.name
        folder.mkdir(parents=True)
        base = dict(build(folder))
        folders[case.name] = folder
        variables[case.name] = dict(base, **with_folder(case.variables, folder))
    before = {name: tree_state(folder) for name, folder in folders.items()}
    work = top / ".play"
    work.mkdir()
    return RoleBatch(run_role_cases(work, role, variables, check=check, tasks_from=tasks_from), before, folders)


def ids(cases: Sequence[Case]) -> List[str]:
    return [case.name for case in cases]


def role_refusal_test(role: str, cases: Sequence[Case], build: Callable[[Path], Mapping[str, Any]]
                      ) -> Callable[..., None]:
    """The test of a role's hostile-input file: one collected item per case (``test_<role>_role_refuses[<case>]``
    once assigned to that name), all cases run by the first item in one ansible-playbook process."""
    batches: Dict[str, RoleBatch] = {}

    @pytest.mark.parametrize("case", cases, ids=ids(cases))
    def test_role_refuses(tmp_path_factory: pytest.TempPathFactory, case: Case) -> None:
        if role not in batches:
            batches[role] = run_cases(tmp_path_factory.mktemp(role), role, cases, build)
        batches[role].assert_refused(case)

    return test_role_refuses
