"""The fake-sysfs builder lays out trees that lspci reads like the real thing."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import FIXTURES, REPO

sys.path.insert(0, str(REPO / "tests" / "lib"))
from fake_sysfs import (  # noqa: E402
    ConfigBuilder,
    FakeFunction,
    ServerShape,
    build_tree,
    functions_from_dump,
    gpu_server,
    infer_parents,
    parse_lspci_dump,
)

needs_lspci = pytest.mark.skipif(shutil.which("lspci") is None, reason="lspci missing: run ./scripts/setup")


def lspci_tree(*args: str) -> str:
    return subprocess.run(["lspci", "-t", *args], capture_output=True, text=True, check=True).stdout


@needs_lspci
def test_tree_from_dump_has_the_dump_topology(shared_fixtures: Path, tmp_path: Path) -> None:
    """lspci -t of the built tree equals lspci -t of the dump itself (-F)."""
    dump = shared_fixtures / "lspci-dumps" / "tree-asus-p6t6.txt"
    build_tree(tmp_path, functions_from_dump(dump.read_text()))
    from_tree = lspci_tree("-A", "linux-sysfs", "-O", "sysfs.path=%s/sys/bus/pci" % tmp_path)
    assert from_tree == lspci_tree("-F", str(dump))
    assert "[0000:00]-+-00.0" in from_tree


def test_dump_parser_reads_full_and_short_config_spaces(shared_fixtures: Path) -> None:
    full = parse_lspci_dump((shared_fixtures / "lspci-dumps" / "cap-pcie-2.txt").read_text())
    assert [(address, len(config)) for address, config in full] == [("0000:01:00.0", 4096)]
    assert full[0][1][:4] == bytes.fromhex("8680c910")  # 8086:10c9, little endian
    domains = parse_lspci_dump((shared_fixtures / "lspci-dumps-extra" / "PCI-X-bridges-and-domains.txt").read_text())
    assert {len(config) for _address, config in domains} == {256}
    assert all(address.count(":") == 2 for address, _config in domains)


def test_tree_has_kernel_layout(tmp_path: Path) -> None:
    functions = gpu_server(ServerShape(gpus=2, vfs_per_pf=2, sockets=2))
    build_tree(tmp_path, functions)
    gpu = next(f for f in functions if f.config[:4] == bytes.fromhex("de103023"))
    link = tmp_path / "sys/bus/pci/devices" / gpu.address
    real = os.path.realpath(link)
    assert real.startswith(str(tmp_path / "sys/devices/pci0000:00/0000:00:01.0/0000:01:00.0/0000:02:00.0/"))
    assert os.path.basename(os.readlink(link / "driver")) == "nvidia"
    assert (tmp_path / "sys/kernel/iommu_groups" / str(gpu.iommu_group) / "devices" / gpu.address).exists()
    vf = next(f for f in functions if f.physfn)
    assert os.path.basename(os.readlink(tmp_path / "sys/bus/pci/devices" / vf.address / "physfn")) == vf.physfn
    assert (tmp_path / "sys/bus/pci/devices" / vf.physfn / "virtfn0").is_dir()


def test_parents_come_from_bridge_bus_ranges() -> None:
    bridge = ConfigBuilder(0x8086, 0x1234, 0x060400, header_type=1).bridge_buses(0, 5, 5).bytes()
    endpoint = ConfigBuilder(0x10DE, 0x2330, 0x030200).bytes()
    parents = infer_parents([FakeFunction("0000:00:01.0", bridge), FakeFunction("0000:05:00.0", endpoint),
                             FakeFunction("0000:06:00.0", endpoint)])
    assert parents == {"0000:00:01.0": None, "0000:05:00.0": "0000:00:01.0", "0000:06:00.0": None}


@pytest.mark.skipif(not FIXTURES.is_dir(), reason="../shared/fixtures is absent")
def test_every_dump_in_the_corpus_parses(shared_fixtures: Path) -> None:
    for dump in sorted(shared_fixtures.glob("lspci-dumps*/*.txt")):
        functions = parse_lspci_dump(dump.read_text())
        assert functions, dump
        assert all(len(config) in (64, 256, 4096) for _address, config in functions), dump
