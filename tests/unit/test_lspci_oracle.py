"""Oracle: the module's decoding of real config spaces equals lspci's.

For every ``lspci -xxxx`` dump of ../shared/fixtures (real machines, from the
pciutils regression corpus) a sysfs tree is built, ``pci_topology_info`` runs
on it as a module process, and ``lspci -vvv`` reads the same tree.  Port type,
link speed and width, ACS, ATS, SR-IOV, PRI, PASID, ARI, IOMMU group, driver
and NUMA node must agree for every function.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path
from typing import Any, Dict, Tuple

import pytest

from conftest import FIXTURES, REPO, run_module_process

sys.path.insert(0, str(REPO / "tests" / "lib"))
from fake_sysfs import build_tree, functions_from_dump  # noqa: E402
from lspci_oracle import mismatches, parse_lspci, run_lspci  # noqa: E402

DUMP_DIRS = ("lspci-dumps", "lspci-dumps-extra")
DUMPS = sorted(str(path.relative_to(FIXTURES)) for name in DUMP_DIRS for path in (FIXTURES / name).glob("*.txt")) \
    if FIXTURES.is_dir() else []

pytestmark = pytest.mark.skipif(
    not FIXTURES.is_dir(), reason="../shared/fixtures is absent: the lspci dumps live beside the checkout")
needs_lspci = pytest.mark.skipif(shutil.which("lspci") is None, reason="lspci missing: run ./scripts/setup")


def decoded_tree(dump: str, tmp_path_factory: pytest.TempPathFactory) -> Tuple[Dict[str, Any], Dict[str, Any]]:
    """(module devices by address, lspci records by address) for one dump."""
    root = tmp_path_factory.mktemp(Path(dump).stem)
    functions = functions_from_dump((FIXTURES / dump).read_text())
    for index, function in enumerate(functions):
        function.driver = "pcieport" if function.is_bridge else None
        function.numa_node = str(index % 2)
    build_tree(root / "host", functions)
    result = run_module_process("pci_topology_info", {"root": str(root / "host")}, root)
    assert result["rc"] == 0, result
    ours = {dev["address"]: dev for dev in result["devices"]}
    theirs = parse_lspci(run_lspci(str(root / "host" / "sys" / "bus" / "pci")))
    return ours, theirs


@pytest.fixture(scope="module", params=DUMPS)
def decoded(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory):
    if shutil.which("lspci") is None:
        pytest.skip("lspci missing: run ./scripts/setup (Debian package pciutils)")
    return decoded_tree(request.param, tmp_path_factory)


@needs_lspci
def test_module_decodes_every_function_as_lspci_does(decoded) -> None:
    ours, theirs = decoded
    assert theirs, "lspci read no function from the tree"
    assert mismatches(ours, theirs) == []


@needs_lspci
def test_oracle_notices_a_difference(decoded) -> None:
    """The comparison itself must catch a wrong value (guards against a blind oracle)."""
    ours, theirs = decoded
    address = sorted(theirs)[0]
    tampered = dict(ours)
    tampered[address] = dict(ours[address], iommu_group=-5)
    assert any(address in line and "iommu group" in line for line in mismatches(tampered, theirs))


def test_corpus_covers_the_capabilities_the_issue_names() -> None:
    """The dumps exercise ACS, ATS, SR-IOV, PRI and PASID, so the oracle is not vacuous."""
    text = "".join((FIXTURES / dump).read_text() for dump in DUMPS)
    for name in ("Access Control Services", "Address Translation Service", "Single Root I/O Virtualization",
                 "Page Request Interface", "Process Address Space ID", "Root Port", "Downstream Port"):
        assert name in text, name
