"""Hostile input through the action plugins: an entry of a list-of-mappings option (pci_driver's bindings,
sriov_vfs's pfs, hugepages' pools) that is not a mapping is refused before the module runs, naming the option,
the entry and the options an entry takes. Run as a task (ansible-playbook), since the check is the action's: a
module run alone gets ansible-core's message, which names neither (test_hostile_pci_driver.py,
"bindings-item-not-a-dict"). All cases run in one ansible-playbook process; the lab VM tree stays byte-identical.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any, Dict, Iterator, List, Tuple

import pytest
from host_critical_tree import lab_vm
from role_play import run_tasks_batched
from tree_state import changed_entries, tree_state

# (case id, module, arguments, fragments the refusal must hold)
CASES: List[Tuple[str, str, Dict[str, Any], List[str]]] = [
    ("bindings-address-text", "pci_driver", {"bindings": ["05:00.0"]},
     ["bindings[0]: '05:00.0' is not a mapping", "give each entry of bindings as a mapping of its options",
      "(ansible-doc confidential_gpu.host.pci_driver lists them)"]),
    ("bindings-second-entry-number", "pci_driver", {"bindings": [{"addresses": ["05:00.0"]}, 5]},
     ["bindings[1]: 5 is not a mapping"]),
    ("pfs-address-text", "sriov_vfs", {"pfs": ["01:00.0"]},
     ["pfs[0]: '01:00.0' is not a mapping", "(ansible-doc confidential_gpu.host.sriov_vfs lists them)"]),
    ("pools-list", "hugepages", {"pools": [["2M", 512]]},
     ["pools[0]: ['2M', 512] is not a mapping", "give each entry of pools as a mapping of its options"]),
]
# the lab tree, its state before the play, each case's result
Played = Tuple[Path, Dict[str, Any], List[Dict[str, Any]]]


@pytest.fixture(scope="module")
def played(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Played]:
    work = tmp_path_factory.mktemp("entry_mappings")
    root = lab_vm(work / "root")
    before = tree_state(root)
    tasks = [{"name": case_id, "confidential_gpu.host." + module: dict(args, root=str(root))}
             for case_id, module, args, _fragments in CASES]
    batch = run_tasks_batched(work, tasks, diff=True)
    assert batch.rc == 0 and len(batch.results) == len(CASES), batch.output[-9000:]
    yield root, before, batch.results
    shutil.rmtree(work, ignore_errors=True)


@pytest.mark.parametrize("number", range(len(CASES)), ids=[case[0] for case in CASES])
def test_an_entry_that_is_not_a_mapping_is_refused(played: Played, number: int) -> None:
    root, before, results = played
    result = results[number]
    assert "Traceback" not in json.dumps(result), result
    assert result.get("failed") and not result.get("changed"), result
    for fragment in CASES[number][3]:
        assert fragment in result["msg"], (fragment, result["msg"])
    after = tree_state(root)
    assert after == before, changed_entries(before, after)
