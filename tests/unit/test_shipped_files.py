"""The boot programs and systemd units of files/, checked by the tools that own their languages: shellcheck for
the POSIX sh programs, ``systemd-analyze verify`` for each unit as its module renders it on a fake host, and
``systemctl --root enable`` for the links the modules make when they enable a unit.  In CI a missing tool fails
these tests (tests/lib/required_tools.py)."""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
from pathlib import Path
from typing import Callable, Dict, List, Tuple

import pytest
from ansible_collections.confidential_gpu.host.plugins.module_utils.systemd_units import daemon_reload
from conftest import REPO

sys.path.insert(0, str(REPO / "tests" / "lib"))
from fake_sriov import LAB_PF, lab_tree  # noqa: E402
from hugepages_tree import HugepagesTree  # noqa: E402
from required_tools import require_tool  # noqa: E402
from shipped_files import FILES, shipped_for  # noqa: E402

UNIT_DIR = "etc/systemd/system"
# Each unit of files/, its module, and the module's arguments on a fake host of tests/lib.
RENDERED_BY: Dict[str, Callable[[Path], Dict]] = {
    "confidential-gpu-sriov.service": lambda root: {
        "module": "sriov_vfs", "root": lab_tree(root, num_vfs=2),
        "args": {"pfs": [{"address": LAB_PF, "num_vfs": 2}], "timeout": 10}},
    "confidential-gpu-hugepages.service": lambda root: {
        "module": "hugepages", "root": HugepagesTree(root).root,
        "args": {"pools": [{"size": "2M", "count": 8, "node": 0}]}},
}


def shipped(suffix: str) -> List[str]:
    return sorted(path.name for path in FILES.iterdir() if path.name.endswith(suffix))


def test_every_shipped_file_reaches_a_module() -> None:
    handed = shipped_for("sriov_vfs").keys() | shipped_for("hugepages").keys() | shipped_for("pci_driver").keys()
    assert sorted(handed) == sorted(path.name for path in FILES.iterdir()), "a file of files/ no module installs"
    assert sorted(RENDERED_BY) == shipped(".service"), "every unit is verified below"


@pytest.mark.parametrize("program", shipped(".sh"))
def test_shellcheck_finds_nothing(program: str) -> None:
    shellcheck = require_tool("shellcheck", "the boot programs cannot be linted")
    proc = subprocess.run([shellcheck, "--shell=sh", "--severity=style", str(FILES / program)],
                          capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_shellcheck_can_fail(tmp_path: Path) -> None:
    shellcheck = require_tool("shellcheck", "the boot programs cannot be linted")
    broken = tmp_path / "broken.sh"
    broken.write_text("#!/bin/sh\nfor f in $(ls $1); do echo $f; done\n")
    proc = subprocess.run([shellcheck, "--shell=sh", str(broken)], capture_output=True, text=True, timeout=120,
                          check=False)
    assert proc.returncode != 0 and "SC2045" in proc.stdout, "the lint does run and reports"


@pytest.mark.parametrize("unit", sorted(RENDERED_BY))
def test_systemd_analyze_verify_passes_the_unit_as_installed(run_module, tmp_path: Path, unit: str) -> None:
    analyze = require_tool("systemd-analyze", "the units cannot be verified by systemd itself")
    case = RENDERED_BY[unit](tmp_path / "root")
    result = run_module(case["module"], dict(case["args"], root=str(case["root"])))
    assert result["rc"] == 0 and result["unit_changed"] is True, result
    verify = [analyze, "verify", "--root=%s" % case["root"], "/%s/%s" % (UNIT_DIR, unit)]
    proc = subprocess.run(verify, capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr
    unit_text = (case["root"] / UNIT_DIR / unit).read_text()
    program = next(line for line in unit_text.splitlines() if line.startswith("ExecStart=")).split()[0][10:]
    os.chmod(case["root"] / program.lstrip("/"), 0o644)
    broken = subprocess.run(verify, capture_output=True, text=True, timeout=120, check=False)
    assert "is not executable" in broken.stderr, "the verification can fail"


@pytest.mark.parametrize("unit", sorted(RENDERED_BY))
def test_the_module_enables_the_unit_as_systemctl_enable_does(run_module, tmp_path: Path, unit: str) -> None:
    systemctl = require_tool("systemctl", "systemd's own enable is the oracle for the links")
    case = RENDERED_BY[unit](tmp_path / "root")
    assert run_module(case["module"], dict(case["args"], root=str(case["root"])))["rc"] == 0
    ours = links_below(case["root"])
    oracle = tmp_path / "oracle"
    (oracle / UNIT_DIR).mkdir(parents=True)
    (oracle / UNIT_DIR / unit).write_text((case["root"] / UNIT_DIR / unit).read_text())
    proc = subprocess.run([systemctl, "--root=%s" % oracle, "enable", unit], capture_output=True, text=True,
                          timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    assert ours == links_below(oracle) and ours, ours
    removed = run_module(case["module"], dict(case["args"], root=str(case["root"]), persist=False))
    assert removed["rc"] == 0 and links_below(case["root"]) == {}, removed


def links_below(root: Path) -> Dict[str, str]:
    """Enablement links below ``root``/etc/systemd/system: link -> target."""
    return {str(path.relative_to(root)): os.readlink(path) for path in sorted((root / UNIT_DIR).glob("*/*"))
            if path.is_symlink()}


def test_a_bare_module_without_its_files_fails_and_changes_nothing(run_module, tmp_path: Path) -> None:
    case = RENDERED_BY["confidential-gpu-hugepages.service"](tmp_path / "root")
    result = run_module(case["module"], dict(case["args"], root=str(case["root"]), _shipped_files={}))
    assert result["rc"] == 1 and "confidential-gpu-hugepages.sh did not reach the module" in result["msg"], result
    assert not (case["root"] / UNIT_DIR).exists()


def test_daemon_reload_runs_only_on_a_running_systemd_host(tmp_path: Path) -> None:
    calls: List[List[str]] = []

    def record(argv) -> Tuple[int, str, str]:
        calls.append(list(argv))
        return 1, "", "Failed to connect to bus"

    assert daemon_reload(record, str(tmp_path)) is None and calls == [], "never below a tree"
    if os.path.isdir("/run/systemd/system"):  # sd_booted(3): this machine runs systemd
        assert daemon_reload(record, "/") == "systemctl daemon-reload failed (1): Failed to connect to bus"
        assert calls == [["systemctl", "daemon-reload"]]
    else:
        assert daemon_reload(record, "/") is None and calls == [], "no systemd running here: nothing to reload"


@pytest.mark.parametrize("module", ["pci_driver", "sriov_vfs", "hugepages"])
def test_each_action_checks_every_list_of_mappings_of_its_module(module: str) -> None:
    """MAPPING_LISTS names each option of the module's argument spec whose entries are mappings."""
    plugins = "ansible_collections.confidential_gpu.host.plugins."
    spec = importlib.import_module(plugins + "modules." + module).ARGUMENT_SPEC
    action = importlib.import_module(plugins + "action." + module).ActionModule
    assert set(action.MAPPING_LISTS) == {option for option, rules in spec.items() if rules.get("elements") == "dict"}
