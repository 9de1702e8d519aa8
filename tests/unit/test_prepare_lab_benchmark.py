"""benchmarks/prepare_lab.py (issue 16, point 7) runs prepare.yml with the fresh scenario's variables: the lab VM's
prepared state is that scenario's, and a re-run with other variables would change things instead of measuring a
re-run. Not a timed test: the benchmark itself runs by hand on a lab VM."""

from __future__ import annotations

import sys
from pathlib import Path

import yaml

from conftest import REPO

sys.path.insert(0, str(REPO / "benchmarks"))
from prepare_lab import converge_vars  # noqa: E402

FRESH = REPO / "extensions" / "molecule" / "fresh"


def included_vars_files(playbook: Path) -> list:
    """The files a scenario playbook reads with include_vars ({{ playbook_dir }} being its own directory)."""
    files = []
    for play in yaml.safe_load(playbook.read_text()):
        for task in play.get("tasks", []):
            include = task.get("ansible.builtin.include_vars")
            if include:
                files.append(Path(include["file"].replace("{{ playbook_dir }}", str(playbook.parent))).resolve())
    return files


def test_benchmark_prepares_with_the_variables_of_the_fresh_converge() -> None:
    """The vars the benchmark hands prepare.yml are exactly those the fresh scenario's converge gives the VM."""
    files = included_vars_files(FRESH / "converge.yml")
    assert len(files) == 1, files
    expected = yaml.safe_load(files[0].read_text())
    benchmark = converge_vars()
    assert benchmark == expected
    assert benchmark["reboot_consent"] is True and benchmark["sriov_pfs"], benchmark
