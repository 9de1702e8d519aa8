"""scripts/capture_host.py on this machine: its capture must replay through the info modules as the machine does."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any, Dict, List

import pytest
from conftest import REPO

sys.path.insert(0, str(REPO / "scripts"))
sys.path.insert(0, str(REPO / "tests" / "lib"))
import capture_host  # noqa: E402
from capture_archive import extract  # noqa: E402

# What a capture holds in full; hugepages and numa move with free memory between two reads.
REPLAYED_KEYS = ("cpu", "kernel", "iommu", "sev", "tdx", "kvm", "gpu_drivers", "verdicts")


def without_host_critical(items: List[Dict[str, Any]]) -> List[Dict[str, Any]]:
    return [{key: value for key, value in item.items() if key != "host_critical"} for item in items]


@pytest.mark.skipif(os.geteuid() != 0, reason="capture-host reads config space past 64 bytes only as root")
def test_this_machine_replays_like_itself(tmp_path: Path, run_module) -> None:
    archive = tmp_path / "capture.tar.xz"
    capture_host.write_capture(str(archive), "this-machine", commands=[])
    root = extract(archive, tmp_path / "capture") / "root"

    live = run_module("cc_host_info", {"root": "/"})
    replay = run_module("cc_host_info", {"root": str(root)})

    assert replay["rc"] == 0, replay
    for key in REPLAYED_KEYS:
        assert replay[key] == live[key], key
    live_tables = Path("/sys/firmware/acpi/tables")
    table_files = sorted(path.name for path in live_tables.iterdir() if path.is_file()) if live_tables.is_dir() else []
    captured_tables = root / "sys/firmware/acpi/tables"
    assert (sorted(os.listdir(captured_tables)) if captured_tables.is_dir() else []) == table_files

    live_pci = run_module("pci_topology_info", {"root": "/", "gather_subset": ["all", "acs"]})
    replay_pci = run_module("pci_topology_info", {"root": str(root), "gather_subset": ["all", "acs"]})
    # what role pcie_acs plans from in prepare (config sizes and header types of bridges, IVRS, cmdline, release)
    assert replay_pci["acs"] == live_pci["acs"]
    # A capture holds no mounts, routes or consoles: host_critical is what only the live host can say.
    assert without_host_critical(replay_pci["devices"]) == without_host_critical(live_pci["devices"])
    assert without_host_critical(replay_pci["iommu_groups"]) == without_host_critical(live_pci["iommu_groups"])


def test_the_capture_keeps_what_the_info_modules_name() -> None:
    """host_capture.py repeats cc_host's and pci_topology's names on purpose (scripts/capture-host loads it alone, with
    the standard library only): the copies must stay equal to the originals."""
    from ansible_collections.confidential_gpu.host.plugins.module_utils import cc_host, host_capture, pci_topology
    assert host_capture.KERNEL_CONFIG_OPTIONS == cc_host.KERNEL_CONFIG_OPTIONS
    assert tuple(directory for _key, directory in cc_host.MODULE_CONFIG_DIRS) == host_capture.MODULE_CONFIG_DIRS
    assert {pci_topology.PROC_CMDLINE, pci_topology.PROC_OSRELEASE} <= {
        "/proc/" + name for name in host_capture.PROC_FILES}
    assert pci_topology.ACPI_IVRS.startswith(host_capture.ACPI_TABLES + "/")
