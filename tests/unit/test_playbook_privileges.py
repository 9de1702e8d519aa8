"""Shipped playbooks leave privilege escalation to the user (issue 19, point 1).

A play keyword beats the command line: a play that sets ``become`` (even from
a variable) silently ignores ``--become``, ``ansible_become`` in the inventory
and AWX's privilege escalation checkbox. So no play under playbooks/ may set
``become`` or how to become (``become_user``, ``become_method``, ``become_flags``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, List

import pytest
import yaml
from conftest import REPO

PLAYBOOKS = sorted(path for path in (REPO / "playbooks").glob("*.yml"))
PLAY_LEVEL_ESCALATION = ("become", "become_user", "become_method", "become_flags", "become_exe")
# Where users read or run the collection: none may still tell them to pass the removed variable.
SHIPPED = ("playbooks", "roles", "plugins", "docs", "scripts", "extensions", "README.md", "meta")


def plays_of(path: Path) -> List[Any]:
    document = yaml.safe_load(path.read_text())
    assert isinstance(document, list), "%s is not a list of plays" % path
    return document


def test_there_are_playbooks_to_check() -> None:
    names = {path.name for path in PLAYBOOKS}
    assert {"discover.yml", "prepare.yml"} <= names, names


@pytest.mark.parametrize("playbook", PLAYBOOKS, ids=lambda path: path.name)
def test_no_play_sets_become(playbook: Path) -> None:
    offending = [
        "%s: play %r sets %s: %r" % (playbook.relative_to(REPO), play.get("name", index), key, play[key])
        for index, play in enumerate(plays_of(playbook))
        for key in PLAY_LEVEL_ESCALATION
        if isinstance(play, dict) and key in play
    ]
    assert not offending, "leave privilege escalation to --become / ansible_become / AWX: " + "; ".join(offending)


def test_nothing_shipped_names_the_removed_become_variable() -> None:
    users = []
    for top in SHIPPED:
        base = REPO / top
        files = [base] if base.is_file() else [path for path in base.rglob("*") if path.is_file()]
        for path in files:
            try:
                text = path.read_text()
            except (UnicodeDecodeError, OSError):
                continue
            if "confidential_gpu_become" in text:
                users.append(str(path.relative_to(REPO)))
    assert not users, "confidential_gpu_become was removed (use --become), still named in: %s" % users
