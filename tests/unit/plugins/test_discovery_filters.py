"""Filters discovery_summary and discovery_lines (plugins/filter/discovery.py) on what pci_topology_info returns
for a built GPU server, and on input that is not such a result. Their text and keys on real playbook runs are
checked by tests/unit/test_discover_playbook.py and tests/unit/roles/test_discovery_results.py."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Dict

import pytest
from ansible.errors import AnsibleFilterError

from conftest import REPO

sys.path.insert(0, str(REPO / "tests" / "lib"))
from fake_sysfs import ServerShape, build_tree, gpu_server  # noqa: E402

from ansible_collections.confidential_gpu.host.plugins.filter.discovery import (  # noqa: E402
    discovery_lines,
    discovery_summary,
)


@pytest.fixture
def result(tmp_path: Path, run_module) -> Dict[str, Any]:
    build_tree(tmp_path / "host", gpu_server(ServerShape(gpus=2, nic_pfs_per_gpu=1, vfs_per_pf=2, nvswitches=1)))
    return run_module("pci_topology_info", {"root": str(tmp_path / "host"), "gather_subset": ["all", "cc_host"]})


def test_the_summary_and_lines_of_a_gpu_server(result: Dict[str, Any]) -> None:
    summary = discovery_summary(result, "gpu-7")
    assert (summary["host"], summary["gpu_count"], summary["nvswitch_count"]) == ("gpu-7", 2, 1)
    assert [gpu["address"] for gpu in summary["gpus"]] == [dev["address"] for dev in result["devices"]
                                                           if dev["role"] == "gpu"]
    lines = discovery_lines(result, "gpu-7")
    assert lines[0].startswith("gpu-7: ") and lines[1].startswith("PCI: ")
    nics = [line for line in lines if line.startswith("  nic ")]
    assert len(nics) == 2 and all(" vfs=2/" in line for line in nics), "one line per PF, its VFs counted, not listed"
    assert [line.split()[0] for line in lines if line.endswith((" yes", " no")) and not line.startswith("IOMMU")] == [
        "vfio_ready", "snp_ready", "tdx_ready"]


def test_a_result_without_groups_or_affinity_still_summarises(result: Dict[str, Any]) -> None:
    """gather_subset [!all, cc_host]: no iommu_groups key, no closest_nics; each GPU's group reads as not viable."""
    reduced = dict(result, devices=[{key: value for key, value in dev.items() if key != "closest_nics"}
                                    for dev in result["devices"]])
    del reduced["iommu_groups"]
    lines = discovery_lines(reduced, "gpu-7")
    assert not any("closest NICs" in line or "is shared" in line for line in lines)
    assert all(gpu["viable"] is False for gpu in discovery_summary(reduced, "gpu-7")["gpus"])


@pytest.mark.parametrize("bad, message", [
    ("text", "give the result of confidential_gpu.host.pci_topology_info gathered with gather_subset [all, "
             "cc_host], not 'str'"),
    ({"devices": []}, "give the result of confidential_gpu.host.pci_topology_info gathered with gather_subset "
                      "[all, cc_host], not 'dict'"),
    ({"cc_host": {}, "summary": {}, "devices": []}, "the result lacks '"),
])
def test_input_that_is_not_such_a_result_is_a_clear_error(bad: Any, message: str) -> None:
    for name, function in (("discovery_summary", discovery_summary), ("discovery_lines", discovery_lines)):
        with pytest.raises(AnsibleFilterError) as raised:
            function(bad, "gpu-7")
        assert str(raised.value).startswith("%s: %s" % (name, message)), raised.value
