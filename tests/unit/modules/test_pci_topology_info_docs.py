"""pci_topology_info's documentation tells the truth (issue 19, point 8).

- The EXAMPLES task "Fail when a GPU's IOMMU group cannot be passed through" is
  run verbatim by ansible-playbook on the module's output for a 4x H100 host (the
  Lenovo SD665-N V3 ``lspci -tv`` capture in ../shared): it passes there, and fails
  when a GPU really shares its group with a host bridge. The old example judged
  every group, and groups of bridges alone are never viable, so it failed on
  every host.
- ``root`` at the top of a capture made by scripts/capture-host (CAPTURE.json,
  commands/, root/) reads its root/ directory, with a warning; a ``root`` with no
  sys/bus/pci fails and names it, instead of returning no functions.
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, Dict, List

import pytest
import yaml
from conftest import REPO, module_path, warning_text

sys.path.insert(0, str(REPO / "tests" / "lib"))
from capture_archive import extract  # noqa: E402
from fake_sysfs import FakeFunction, build_tree  # noqa: E402
from lspci_tree import functions_from_tree  # noqa: E402

MODULE = "pci_topology_info"
SD665 = "gpu-servers/lspci-tv_lenovo-sd665n-v3_4xH100_cx7.txt"
SD665_PLAIN = "gpu-servers/lspci_lenovo-sd665n-v3_4xH100_cx7.txt"
EXAMPLE = "Fail when a GPU's IOMMU group cannot be passed through"
CAPTURES = sorted((REPO / "tests" / "fixtures" / "hosts").glob("*/capture.tar.xz"))


def documented_task(name: str) -> Dict[str, Any]:
    """The task of that name from the module's EXAMPLES, as YAML (read from the file, not imported)."""
    source = module_path(MODULE).read_text()
    examples = source.split('EXAMPLES = r"""', 1)[1].split('"""', 1)[0]
    (task,) = [task for task in yaml.safe_load(examples) if task["name"] == name]
    return task


def sd665_functions(shared_fixtures: Path) -> List[FakeFunction]:
    return functions_from_tree((shared_fixtures / SD665).read_text(), (shared_fixtures / SD665_PLAIN).read_text())


def run_example(tmp_path: Path, root: Path) -> subprocess.CompletedProcess:
    """Read the topology below root, then the documented assert task, as a playbook on localhost."""
    read = {"name": "Read the whole PCI topology", "register": "topology",
            "confidential_gpu.host.pci_topology_info": {"root": str(root)}}
    play = [{"name": "EXAMPLES of pci_topology_info", "hosts": "localhost", "gather_facts": False,
             "tasks": [read, documented_task(EXAMPLE)]}]
    playbook = tmp_path / "example.yml"
    playbook.write_text(yaml.safe_dump(play, sort_keys=False))
    env = dict(os.environ, ANSIBLE_CONFIG=str(REPO / "ansible.cfg"), ANSIBLE_NOCOLOR="1")
    command = [str(Path(sys.executable).with_name("ansible-playbook")), str(playbook)]
    return subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=300, check=False)


def test_the_4xh100_tree_has_bridge_only_groups_the_example_must_ignore(run_module, shared_fixtures: Path,
                                                                        tmp_path: Path) -> None:
    build_tree(tmp_path / "sd665", sd665_functions(shared_fixtures))
    result = run_module(MODULE, {"root": str(tmp_path / "sd665")})
    roles = {dev["address"]: dev["role"] for dev in result["devices"]}
    assert sorted(role for role in roles.values() if role == "gpu") == ["gpu"] * 4
    bridge_only = [group for group in result["iommu_groups"]
                   if all(roles[address] == "bridge" for address in group["devices"])]
    assert bridge_only and not any(group["viable"] for group in bridge_only), bridge_only


def test_the_documented_gpu_group_check_passes_on_a_4xh100_host(shared_fixtures: Path, tmp_path: Path) -> None:
    build_tree(tmp_path / "sd665", sd665_functions(shared_fixtures))
    proc = run_example(tmp_path, tmp_path / "sd665")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert "All assertions passed" in proc.stdout, proc.stdout[-3000:]


def test_the_documented_gpu_group_check_fails_when_a_gpu_shares_a_group_with_a_host_bridge(
        run_module, shared_fixtures: Path, tmp_path: Path) -> None:
    functions = sd665_functions(shared_fixtures)
    build_tree(tmp_path / "probe", functions)
    gpus = list(run_module(MODULE, {"root": str(tmp_path / "probe"), "roles": ["gpu"]})["devices"])
    first_gpu = gpus[0]["address"]
    joined = [dataclasses.replace(function, iommu_group=900) if function.address in (first_gpu, "0000:00:00.0")
              else function for function in functions]
    build_tree(tmp_path / "shared-group", joined)
    proc = run_example(tmp_path, tmp_path / "shared-group")
    assert proc.returncode != 0, proc.stdout[-3000:]
    assert "0000:00:00.0 is a host bridge" in proc.stdout, proc.stdout[-3000:]


@pytest.mark.parametrize("archive", CAPTURES, ids=[path.parent.name for path in CAPTURES])
def test_root_at_the_top_of_a_capture_reads_its_root_directory(run_module, archive: Path, tmp_path: Path) -> None:
    top = extract(archive, tmp_path / "capture")
    assert (top / "CAPTURE.json").is_file() and (top / "root" / "sys" / "bus" / "pci").is_dir(), sorted(top.iterdir())
    inner = run_module(MODULE, {"root": str(top / "root")})
    from_top = run_module(MODULE, {"root": str(top)})
    assert inner["summary"]["functions"] > 0
    assert from_top["devices"] == inner["devices"] and from_top["iommu_groups"] == inner["iommu_groups"]
    notes = [warning_text(warning) for warning in from_top.get("warnings", [])]
    assert any("top of a capture made by scripts/capture-host" in note and str(top / "root") in note
               for note in notes), notes


def test_a_root_without_sys_bus_pci_is_named_in_a_warning(run_module, tmp_path: Path) -> None:
    (tmp_path / "elsewhere" / "proc").mkdir(parents=True)
    result = run_module(MODULE, {"root": str(tmp_path / "elsewhere")})
    assert not result.get("failed") and result["summary"]["functions"] == 0, result
    notes = [warning_text(warning) for warning in result.get("warnings", [])]
    assert any("%s has no sys/bus/pci/devices" % (tmp_path / "elsewhere") in note for note in notes), notes
