"""The kernel's ACS rules, checked against the kernel's own source (tests/fixtures/linux-v6.12.118).

- acs_quirks.QUIRK_TABLE agrees, entry by entry and in order, with the
  ``pci_dev_acs_enabled[]`` table of drivers/pci/quirks.c; the device ID lists
  and ranges and the controls each quirk grants agree with the functions.
- A root port the kernel isolates through a quirk is no violation; one whose
  quirk says it does not isolate is.
- p2p_mode direct_translated writes config_acs flags that, applied the way
  drivers/pci/pci.c applies them, keep every REQ_ACS_FLAGS control on (so the
  IOMMU groups stay split) and add Direct Translated P2P; disable_acs_redir
  and the old default flags do not.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import pytest

from conftest import REPO

from ansible_collections.confidential_gpu.host.plugins.module_utils.acs_quirks import (
    GRANTED,
    ID_RANGES,
    INTEL_PCH_ACS_IDS,
    QUIRK_TABLE,
    REQ_ACS_FLAGS,
)
from ansible_collections.confidential_gpu.host.plugins.module_utils.pcie_acs import build_request, plan
from ansible_collections.confidential_gpu.host.plugins.module_utils.sysfs import HostRoot

sys.path.insert(0, str(REPO / "tests" / "lib"))
from fake_sysfs import ConfigBuilder, FakeFunction, build_tree  # noqa: E402

KERNEL = REPO / "tests" / "fixtures" / "linux-v6.12.118"
ENTRY_RE = re.compile(r"\{\s*(\w+),\s*(\w+),\s*(\w+)\s*\}")


def vendor_ids() -> Dict[str, int]:
    text = (KERNEL / "pci_ids_vendors.h").read_text()
    found = re.findall(r"#define\s+(PCI_VENDOR_ID_\w+)\s+(0x[0-9a-fA-F]+)", text)
    return {name: int(value, 16) for name, value in found}


def acs_bits() -> Dict[str, int]:
    text = (KERNEL / "pci_regs_acs.h").read_text()
    return {name: int(value, 16) for name, value in re.findall(r"#define\s+PCI_ACS_(\w\w)\s+(0x[0-9a-fA-F]+)", text)}


def flag_expression(text: str) -> int:
    """``PCI_ACS_SV | PCI_ACS_RR`` (or ``0``) as a number, from pci_regs.h's values."""
    bits = acs_bits()
    text = text.strip()
    if text == "0":
        return 0
    return sum(bits[name] for name in re.findall(r"PCI_ACS_(\w\w)", text))


def quirks_source() -> str:
    return (KERNEL / "quirks_acs.c").read_text()


def function_bodies() -> Dict[str, str]:
    """Each ``pci_quirk_*`` function of the excerpt: name -> body."""
    text = quirks_source()
    bodies = {}
    for found in re.finditer(r"^static\s+(?:int|bool)\s+(pci_quirk_\w+)\([^)]*\)\n\{\n(.*?)^\}", text, re.M | re.S):
        bodies[found.group(1)] = found.group(2)
    return bodies


def kernel_table() -> List[Tuple[int, Optional[int], str]]:
    text = quirks_source()
    table = text[text.index("pci_dev_acs_enabled[] = {"):]
    table = table[:table.index("{ 0 }")]
    vendors = vendor_ids()
    rows = []
    for vendor, device, function in ENTRY_RE.findall(table):
        vendor_id = vendors[vendor] if vendor in vendors else int(vendor, 16)
        rows.append((vendor_id, None if device == "PCI_ANY_ID" else int(device, 16), function))
    return rows


def test_quirk_table_agrees_with_the_kernel_entry_by_entry() -> None:
    upstream = kernel_table()
    assert len(upstream) > 100, "the excerpt's table was not parsed"
    assert len(QUIRK_TABLE) == len(upstream)
    for index, (ours, theirs) in enumerate(zip(QUIRK_TABLE, upstream)):
        assert ours == theirs, "entry %d: ours %r, kernel %r" % (index, ours, theirs)


def test_every_quirk_function_of_the_table_is_modelled_with_the_controls_it_grants() -> None:
    bodies = function_bodies()
    functions = {row[2] for row in kernel_table()}
    for function in functions - {"pci_quirk_intel_spt_pch_acs"}:
        body = bodies[function]
        calls = [flag_expression(arg) for arg in re.findall(r"pci_acs_ctrl_enabled\(acs_flags,\s*([^;]*?)\);", body,
                                                            re.S)]
        if not calls:  # pci_quirk_al_acs masks the controls out of the request instead
            calls = [flag_expression(re.search(r"acs_flags &= ~\(([^)]*)\)", body, re.S).group(1))]
        assert GRANTED[function] == tuple(calls), function
    # pci_quirk_intel_spt_pch_acs reads the port's own registers: no fixed grant to model.
    assert "pci_acs_ctrl_enabled(acs_flags, ctrl)" in bodies["pci_quirk_intel_spt_pch_acs"]


def case_ranges(body: str) -> Tuple[Tuple[int, int], ...]:
    found = []
    for low, high in re.findall(r"case (0x[0-9a-fA-F]+)(?: \.\.\. (0x[0-9a-fA-F]+))?:", body):
        found.append((int(low, 16), int(high or low, 16)))
    return tuple(found)


@pytest.mark.parametrize("function", sorted(ID_RANGES))
def test_device_id_ranges_agree_with_the_kernel_functions(function: str) -> None:
    bodies = function_bodies()
    body = bodies.get(function + "_match", bodies[function])
    assert sorted(ID_RANGES[function]) == sorted(case_ranges(body))


def test_intel_pch_root_port_ids_agree_with_the_kernel_list() -> None:
    text = quirks_source()
    array = text[text.index("pci_quirk_intel_pch_acs_ids[] = {"):]
    array = array[:array.index("};")]
    assert tuple(int(value, 16) for value in re.findall(r"0x[0-9a-fA-F]+", array)) == INTEL_PCH_ACS_IDS


# --------------------------------------------------------------------------
# Quirked ports on a fake host
# --------------------------------------------------------------------------

def root_port_without_acs(address: str, ids: Tuple[int, int], secondary: int, group: Optional[int]) -> FakeFunction:
    config = ConfigBuilder(ids[0], ids[1], 0x060400, header_type=1).bridge_buses(0, secondary, secondary)
    config.express("root_port", 8.0, 16)
    return FakeFunction(address, config.bytes(), driver="pcieport", iommu_group=group)


def gpu(address: str, group: Optional[int]) -> FakeFunction:
    config = ConfigBuilder(0x10DE, 0x2330, 0x030200).express("endpoint", 16.0, 16)
    return FakeFunction(address, config.bytes(), driver="vfio-pci", iommu_group=group)


def quirk_host(tmp_path: Path, port_ids: Tuple[int, int], iommu: bool = True) -> HostRoot:
    """Two root ports without an ACS capability, one GPU below each (own groups, as the kernel made them)."""
    functions = [root_port_without_acs("0000:00:1c.0", port_ids, 1, 1 if iommu else None),
                 gpu("0000:01:00.0", 2 if iommu else None),
                 root_port_without_acs("0000:00:1c.1", port_ids, 2, 3 if iommu else None),
                 gpu("0000:02:00.0", 4 if iommu else None)]
    build_tree(tmp_path, functions)
    (tmp_path / "proc").mkdir(exist_ok=True)
    (tmp_path / "proc" / "cmdline").write_text("ro intel_iommu=on\n")
    return HostRoot(str(tmp_path))


def confidential(host: HostRoot) -> dict:
    return plan(host, build_request("confidential", [], [], ["gpu"]), False)


@pytest.mark.parametrize("ids, function", [
    ((0x8086, 0x1C10), "pci_quirk_intel_pch_acs"),  # Cougarpoint PCH root port
    ((0x1DEF, 0xE005), "pci_quirk_xgene_acs"),  # Ampere Altra root port
    ((0x177D, 0xAF84), "pci_quirk_cavium_acs"),  # ThunderX2 root port
])
def test_a_root_port_isolated_by_a_kernel_quirk_is_no_violation(
        tmp_path: Path, ids: Tuple[int, int], function: str) -> None:
    result = confidential(quirk_host(tmp_path, ids))
    verdicts = {bridge["address"]: (bridge["isolation"], bridge["quirk"]) for bridge in result["bridges"]}
    assert verdicts == {"0000:00:1c.0": ("quirk", function), "0000:00:1c.1": ("quirk", function)}
    assert result["violations"] == []


def test_the_intel_pch_quirk_waits_for_the_iommu(tmp_path: Path) -> None:
    result = confidential(quirk_host(tmp_path, (0x8086, 0x1C10), iommu=False))
    assert [bridge["isolation"] for bridge in result["bridges"]] == ["quirk_inactive", "quirk_inactive"]
    assert [(v["kind"], v["clears_at_boot"]) for v in result["violations"]] == [("quirk_inactive", True)] * 2


def test_ports_without_a_quirk_or_outside_its_ids_are_still_violations(tmp_path: Path) -> None:
    # 8086:1c20 is no PCH root port of the kernel's list; Zhaoxin 1d17:0722 is left out of its ranges on purpose.
    plain = confidential(quirk_host(tmp_path / "intel", (0x8086, 0x1C20)))
    assert [v["kind"] for v in plain["violations"]] == ["no_acs", "no_acs"]
    zhaoxin = confidential(quirk_host(tmp_path / "zhaoxin", (0x1D17, 0x0722)))
    assert [v["kind"] for v in zhaoxin["violations"]] == ["quirk_not_isolating"] * 2
    assert "pci_quirk_zhaoxin_pcie_ports_acs" in zhaoxin["violations"][0]["msg"]


# --------------------------------------------------------------------------
# config_acs flags, from kernel-parameters.txt and pci_regs.h
# --------------------------------------------------------------------------

def documented_bits() -> Dict[int, str]:
    """bit number -> PCI_ACS_* name, from the config_acs text (``bit-6 : ACS Direct Translated P2P``)."""
    text = (KERNEL / "kernel_parameters_acs.txt").read_text()
    words = {"Source Validation": "SV", "Translation Blocking": "TB", "P2P Request Redirect": "RR",
             "P2P Completion Redirect": "CR", "Upstream Forwarding": "UF", "P2P Egress Control": "EC",
             "Direct Translated P2P": "DT"}
    return {int(bit): words[name.strip()] for bit, name in re.findall(r"bit-(\d) : ACS ([\w ]+)", text)}


def kernel_mask_flags(flags: str) -> Tuple[int, int]:
    """The kernel's reading of a flag string as the text says: rightmost is bit-0; 0 off, 1 on, x unchanged."""
    mask = value = 0
    for bit, char in enumerate(reversed(flags)):
        if char in "01":
            mask |= 1 << bit
        if char == "1":
            value |= 1 << bit
    return mask, value


def required_flags() -> int:
    text = (KERNEL / "pci_acs_rules.c").read_text()
    return flag_expression(re.search(r"#define REQ_ACS_FLAGS\s+\(([^)]*)\)", text).group(1))


def kernel_groups_split(capability: int, control: int) -> bool:
    """pci_acs_flags_enabled(REQ_ACS_FLAGS) as pci_acs_rules.c has it: flags &= cap | EC; (ctrl & flags) == flags."""
    rules = (KERNEL / "pci_acs_rules.c").read_text()
    assert "acs_flags &= (cap | PCI_ACS_EC);" in rules and "return (ctrl & acs_flags) == acs_flags;" in rules
    wanted = required_flags() & (capability | acs_bits()["EC"])
    return control & wanted == wanted


def booted_control(firmware: int, mask: int, flags: int) -> int:
    rules = (KERNEL / "pci_acs_rules.c").read_text()
    assert "caps->ctrl = (caps->fw_ctrl & ~mask) | (flags & mask);" in rules
    return (firmware & ~mask) | (flags & mask)


def test_the_kernel_text_and_header_agree_on_the_bits() -> None:
    bits = acs_bits()
    assert {bit: bits[name] for bit, name in documented_bits().items()} == {bit: 1 << bit for bit in range(7)}
    assert required_flags() == REQ_ACS_FLAGS


SWITCH_CAPABILITY = 0x5F  # SV TB RR CR UF DT, as a Broadcom/PLX switch downstream port reports it


def p2p_host(tmp_path: Path, release: str) -> HostRoot:
    """Root port > switch > two downstream ports, a GPU (ATS) and a NIC (no ATS) below them."""
    def bridge(address: str, kind: str, secondary: int, subordinate: int, acs: bool) -> FakeFunction:
        primary = int(address.split(":")[1], 16)
        config = ConfigBuilder(0x1000, 0xC030, 0x060400, header_type=1).bridge_buses(primary, secondary, subordinate)
        config.express(kind, 32.0, 16)
        if acs:
            config.acs(SWITCH_CAPABILITY, 0x1D)
        return FakeFunction(address, config.bytes(), driver="pcieport")

    gpu_config = ConfigBuilder(0x10DE, 0x2330, 0x030200).express("endpoint", 32.0, 16).ats(False)
    nic_config = ConfigBuilder(0x15B3, 0x1021, 0x020000).express("endpoint", 32.0, 16)
    functions = [bridge("0000:00:01.0", "root_port", 1, 4, True), bridge("0000:01:00.0", "upstream_port", 2, 4, False),
                 bridge("0000:02:00.0", "downstream_port", 3, 3, True),
                 bridge("0000:02:01.0", "downstream_port", 4, 4, True),
                 FakeFunction("0000:03:00.0", gpu_config.bytes()), FakeFunction("0000:04:00.0", nic_config.bytes())]
    for number, function in enumerate(functions):
        function.iommu_group = number
    build_tree(tmp_path, functions)
    (tmp_path / "proc" / "sys" / "kernel").mkdir(parents=True)
    (tmp_path / "proc" / "cmdline").write_text("ro intel_iommu=on\n")
    (tmp_path / "proc" / "sys" / "kernel" / "osrelease").write_text(release + "\n")
    return HostRoot(str(tmp_path))


def test_p2p_defaults_to_direct_translated_p2p_that_keeps_the_groups_split(tmp_path: Path) -> None:
    result = plan(p2p_host(tmp_path, "6.12.48+deb13-amd64"), build_request("p2p", [], [], ["gpu", "nic"]), False)
    [arg] = result["kernel_args"]
    option = arg[len("pci=config_acs="):]
    assert arg.startswith("pci=config_acs=")
    specs = dict(reversed(entry.split("@")) for entry in option.split(";"))
    assert sorted(specs) == ["0000:02:00.0", "0000:02:01.0"]
    bits = acs_bits()
    for flags in specs.values():
        mask, value = kernel_mask_flags(flags)
        # Whatever firmware left in the control register, the boot ends with the groups split and DT on.
        for firmware in (0x00, 0x1D, 0x7F & ~bits["DT"]):
            control = booted_control(firmware, mask, value)
            assert kernel_groups_split(SWITCH_CAPABILITY, control), (flags, firmware)
            assert control & bits["DT"]
            assert control & (bits["RR"] | bits["CR"]) == bits["RR"] | bits["CR"], "redirect is kept"
    # The old ways merge the groups below those ports.
    redirect_off = booted_control(0x1D, bits["RR"] | bits["CR"] | bits["EC"], 0)
    assert not kernel_groups_split(SWITCH_CAPABILITY, redirect_off)
    assert not kernel_groups_split(SWITCH_CAPABILITY, booted_control(0x1D, *kernel_mask_flags("x0x00xx")))
    # ATS is checked on the endpoints below the ports: the NIC has none.
    assert any(w.startswith("0000:04:00.0: no ATS capability") for w in result["warnings"])
    assert not any("0000:03:00.0: no ATS" in w for w in result["warnings"])
    assert any("IOMMU groups stay as they are" in w for w in result["warnings"])


def test_direct_translated_on_a_kernel_before_config_acs_says_it_is_ignored(tmp_path: Path) -> None:
    result = plan(p2p_host(tmp_path, "6.1.0-40-amd64"), build_request("p2p", [], [], ["gpu", "nic"]), False)
    assert result["kernel_args"][0].startswith("pci=config_acs=")
    assert any(w.startswith("the running kernel is 6.1: pci=config_acs= exists from Linux 6.11 on")
               for w in result["warnings"])
