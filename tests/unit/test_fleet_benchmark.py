"""benchmarks/fleet.py's host builder (issue 20, point 3): the simulated fleet has the varied layouts the benchmark
claims (1-8 GPUs, with and without NVSwitches, the IOMMU on and off, both CPU vendors), and what pci_topology_info
and cc_host_info read on the built trees says so, and its settings reach ansible-playbook. Not a timed test: the
benchmark itself runs by hand."""

from __future__ import annotations

import sys
from pathlib import Path

from conftest import REPO, run_module_process

sys.path.insert(0, str(REPO / "benchmarks"))
from fleet import build_host, fleet_layouts, main  # noqa: E402


def test_500_layouts_cover_gpu_counts_nvswitches_iommu_and_vendors() -> None:
    layouts = fleet_layouts(500, with_fixture=True)
    assert len(layouts) == 500
    assert {layout.gpus for layout in layouts if not layout.fixture} == set(range(1, 9))
    assert {layout.nvswitches > 0 for layout in layouts} == {True, False}
    assert {layout.iommu for layout in layouts} == {True, False}
    assert {layout.vendor for layout in layouts} == {"amd", "intel"}
    assert sum(1 for layout in layouts if layout.fixture) == 50
    assert len(set(layouts)) >= 24, "a fleet of a few shapes repeated would not show per-layout costs"


def test_built_hosts_read_as_their_layouts(tmp_path: Path, shared_fixtures: Path) -> None:
    """Four hosts of the fleet, read by the info modules: GPU and NVSwitch counts, IOMMU and CPU vendor (8 GPUs
    with NVSwitches on Intel, the SD665-N V3 fixture, 6 GPUs on AMD, 5 GPUs with NVSwitches and no IOMMU)."""
    layouts = fleet_layouts(60, with_fixture=True)
    assert [(layouts[i].gpus, layouts[i].nvswitches, layouts[i].iommu, layouts[i].vendor) for i in (7, 13, 52)] == [
        (8, 4, True, "intel"), (6, 0, True, "amd"), (5, 4, False, "amd")]
    for index in (7, 9, 13, 52):
        layout = layouts[index]
        root = tmp_path / str(index)
        build_host(root, layout, shared_fixtures)
        pci = run_module_process("pci_topology_info", {"root": str(root)}, tmp_path)
        cc = run_module_process("cc_host_info", {"root": str(root)}, tmp_path)
        assert pci["rc"] == 0 and cc["rc"] == 0, (pci, cc)
        roles = [device["role"] for device in pci["devices"]]
        assert roles.count("gpu") == layout.gpus, (index, layout)
        assert roles.count("nvswitch") == layout.nvswitches, (index, layout)
        assert bool(pci["iommu_groups"]) is layout.iommu and cc["iommu"]["enabled"] is layout.iommu, (index, layout)
        assert cc["cpu"]["vendor"] == layout.vendor, cc["cpu"]


def test_a_two_host_run_takes_its_settings(tmp_path: Path, shared_fixtures: Path) -> None:
    """The benchmark end to end on two hosts, with the ok lines off and vars plugins at the start: discovery passes
    on both hosts, the output has the recap but no host's ok or skipped line (the default callback honours
    ANSIBLE_DISPLAY_OK_HOSTS), and every module run was timed."""
    main(["--hosts", "2", "--playbooks", "discover", "--forks", "2", "--pipelining", "off", "--display-ok", "off",
          "--vars-plugins", "start", "--keep", str(tmp_path)])
    output = (tmp_path / "discover.out").read_text()
    recap = [line for line in output.splitlines() if " : ok=" in line]
    assert len(recap) == 2 and all("failed=0" in line and "unreachable=0" in line for line in recap), output
    assert "ok: [gpu-" not in output and "skipping: [gpu-" not in output, output
    timed = (tmp_path / "module-cpu.log").read_text().splitlines()
    assert len(timed) >= 2 and all(len(line.split()) == 2 for line in timed), timed
