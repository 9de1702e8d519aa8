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
from typing import Any, Dict, List, Tuple

import pytest

from conftest import FIXTURES, REPO, run_module_process

sys.path.insert(0, str(REPO / "tests" / "lib"))
from fake_sysfs import build_tree, functions_from_dump  # noqa: E402
from lspci_oracle import has_capability, parse_lspci, run_lspci  # noqa: E402

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


def mismatches(ours: Dict[str, Any], theirs: Dict[str, Any]) -> List[str]:
    """Every field where the module and lspci disagree, as readable lines."""
    problems: List[str] = []

    def check(address: str, what: str, mine: Any, reference: Any) -> None:
        if mine != reference:
            problems.append("%s %s: module %r, lspci %r" % (address, what, mine, reference))

    for address, ref in theirs.items():
        dev = ours.get(address)
        if dev is None:
            problems.append("%s: lspci shows it, the module does not" % address)
            continue
        check_identity(address, dev, ref, check)
        check_express(address, dev, ref, check)
        check_acs_ats(address, dev, ref, check)
        check_sriov(address, dev, ref, check)
        check_pri_pasid_ari(address, dev, ref, check)
    problems += ["%s: the module shows it, lspci does not" % address for address in ours if address not in theirs]
    return problems


def check_identity(address: str, dev: Dict[str, Any], ref: Dict[str, Any], check) -> None:
    check(address, "iommu group", dev["iommu_group"], int(ref["IOMMU group"]) if "IOMMU group" in ref else None)
    check(address, "driver", dev["driver"], ref.get("Kernel driver in use"))
    check(address, "numa node", dev["numa_node"], int(ref["NUMA node"]) if "NUMA node" in ref else None)


def check_express(address: str, dev: Dict[str, Any], ref: Dict[str, Any], check) -> None:
    pcie = dev["pcie"]
    check(address, "port type", pcie and pcie["port_type"], ref.get("port_type"))
    if pcie is None:
        return
    for key in ("link_speed_gts", "link_width", "max_link_speed_gts", "max_link_width"):
        check(address, key, pcie[key], ref.get(key))


def check_acs_ats(address: str, dev: Dict[str, Any], ref: Dict[str, Any], check) -> None:
    acs = dev["acs"]
    check(address, "ACS present", acs is not None, has_capability(ref, "Access Control Services"))
    if acs is not None and "ACSCap" in ref:
        check(address, "ACSCap", acs["capabilities"], ref["ACSCap"])
        check(address, "ACSCtl", acs["enabled"], ref["ACSCtl"])
    ats = dev["ats"]
    check(address, "ATS present", ats is not None, has_capability(ref, "Address Translation Service"))
    if ats is not None and "ats_enabled" in ref:
        check(address, "ATS enabled", ats["enabled"], ref["ats_enabled"])
        check(address, "ATS queue depth", ats["invalidate_queue_depth"], ref["ats_queue_depth"])
        check(address, "ATS STU", ats["smallest_translation_unit"], ref["ats_stu"])


def check_sriov(address: str, dev: Dict[str, Any], ref: Dict[str, Any], check) -> None:
    sriov = dev["sriov"]
    check(address, "SR-IOV present", sriov is not None, has_capability(ref, "Single Root I/O Virtualization"))
    if sriov is None or "sriov_total_vfs" not in ref:
        return
    for key in ("initial_vfs", "total_vfs", "num_vfs", "vf_offset", "vf_stride", "vf_device_id"):
        check(address, "SR-IOV " + key, sriov[key], ref["sriov_" + key])
    check(address, "SR-IOV VF enable", sriov["vf_enabled"], ref["sriov_vf_enabled"])
    check(address, "SR-IOV ARI hierarchy", sriov["ari_capable_hierarchy"], ref["sriov_ari_hierarchy"])


def check_pri_pasid_ari(address: str, dev: Dict[str, Any], ref: Dict[str, Any], check) -> None:
    check(address, "PRI present", dev["pri"] is not None, has_capability(ref, "Page Request Interface"))
    if dev["pri"] is not None and "pri_enabled" in ref:
        check(address, "PRI enabled", dev["pri"]["enabled"], ref["pri_enabled"])
        check(address, "PRI capacity", dev["pri"]["outstanding_capacity"], ref["pri_capacity"])
    check(address, "PASID present", dev["pasid"] is not None, has_capability(ref, "Process Address Space ID"))
    if dev["pasid"] is not None and "pasid_enabled" in ref:
        check(address, "PASID enabled", dev["pasid"]["enabled"], ref["pasid_enabled"])
        check(address, "PASID width", dev["pasid"]["max_width"], ref["pasid_max_width"])
    check(address, "ARI present", dev["ari"] is not None,
          has_capability(ref, "Alternative Routing-ID Interpretation"))
    if dev["ari"] is not None and "ari_next_function" in ref:
        check(address, "ARI next function", dev["ari"]["next_function"], ref["ari_next_function"])


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
