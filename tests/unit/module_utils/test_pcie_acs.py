"""ACS planning on fake sysfs trees: verdicts per bridge, confidential violations, P2P boot arguments, runtime writes.

Trees come from tests/lib/fake_sysfs.py (synthetic switches, the lab's shape)
and from real ``lspci -xxxx`` dumps in ../shared/fixtures; where lspci is
installed it reads the same trees as an independent decoder.
"""

from __future__ import annotations

import resource
import shutil
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import pytest

from conftest import REPO

from ansible_collections.confidential_gpu.host.plugins.module_utils.kernel_args_model import parse_item, render
from ansible_collections.confidential_gpu.host.plugins.module_utils.pci_topology import read_topology
from ansible_collections.confidential_gpu.host.plugins.module_utils.pcie_acs import (
    NOT_REGROUPED,
    PcieAcsError,
    build_request,
    flag_bits,
    plan,
)
from ansible_collections.confidential_gpu.host.plugins.module_utils.sysfs import HostRoot

sys.path.insert(0, str(REPO / "tests" / "lib"))
from fake_sysfs import (  # noqa: E402
    ACS_ALL,
    ACS_CONFIDENTIAL,
    ConfigBuilder,
    FakeFunction,
    ServerShape,
    build_tree,
    functions_from_dump,
    gpu_server,
    lab_like_host,
)
from lspci_oracle import parse_lspci, run_lspci  # noqa: E402

needs_lspci = pytest.mark.skipif(shutil.which("lspci") is None, reason="lspci missing: run ./scripts/setup")
# ConfigBuilder puts the first extended capability (here always ACS) at 0x100: capability +4, control +6.
ACS_AT = 0x100


def port(address: str, kind: str, secondary: int, subordinate: int, acs: Optional[Tuple[int, int]] = None,
         ids: Tuple[int, int] = (0x10B5, 0x9797), dword: bool = False, group: Optional[int] = None) -> FakeFunction:
    primary = int(address.split(":")[1], 16)
    config = ConfigBuilder(ids[0], ids[1], 0x060400, header_type=1).bridge_buses(primary, secondary, subordinate)
    config.express(kind, 16.0, 16)
    if acs is not None:
        config.acs(acs[0], acs[1], dword_registers=dword)
    return FakeFunction(address, config.bytes(), driver="pcieport", iommu_group=group)


def endpoint(address: str, ids: Tuple[int, int] = (0x10DE, 0x2330), class_code: int = 0x030200,
             group: Optional[int] = None, ats: Optional[bool] = None) -> FakeFunction:
    config = ConfigBuilder(ids[0], ids[1], class_code).express("endpoint", 16.0, 16)
    if ats is not None:
        config.ats(ats)
    return FakeFunction(address, config.bytes(), iommu_group=group)


def switch_host(dsp_acs: Optional[Tuple[int, int]] = (ACS_ALL, ACS_CONFIDENTIAL),
                root_acs: Tuple[int, int] = (ACS_ALL, ACS_CONFIDENTIAL)) -> List[FakeFunction]:
    """Root port 00:01.0 > switch 01:00.0 > ports 02:00.0 (GPU 03:00.0), 02:01.0 (NIC 04:00.0),
    02:02.0 (GPU 05:00.0); a fourth GPU 06:00.0 alone below root port 00:02.0."""
    functions = [
        port("0000:00:01.0", "root_port", 1, 5, root_acs),
        port("0000:01:00.0", "upstream_port", 2, 5),
        port("0000:02:00.0", "downstream_port", 3, 3, dsp_acs),
        port("0000:02:01.0", "downstream_port", 4, 4, dsp_acs),
        port("0000:02:02.0", "downstream_port", 5, 5, dsp_acs),
        endpoint("0000:03:00.0", ats=False),
        endpoint("0000:04:00.0", ids=(0x15B3, 0x1021), class_code=0x020000, ats=True),
        endpoint("0000:05:00.0"),
        port("0000:00:02.0", "root_port", 6, 6, root_acs),
        endpoint("0000:06:00.0"),
    ]
    for number, function in enumerate(functions):
        function.iommu_group = number
    return functions


def tree(tmp_path: Path, functions: List[FakeFunction], cmdline: Optional[str] = None) -> HostRoot:
    build_tree(tmp_path, functions)
    if cmdline is not None:
        (tmp_path / "proc").mkdir(exist_ok=True)
        (tmp_path / "proc" / "cmdline").write_text(cmdline + "\n")
    return HostRoot(str(tmp_path))


def run(host: HostRoot, profile: str = "report", addresses: Tuple[str, ...] = (), check_mode: bool = False,
        **options: Any) -> Dict[str, Any]:
    return plan(host, build_request(profile, list(addresses), options.pop("pci_ids", []), options.pop("roles", []),
                                    **options), check_mode)


def bridges_by_address(result: Dict[str, Any]) -> Dict[str, Dict[str, Any]]:
    return {bridge["address"]: bridge for bridge in result["bridges"]}


def config_bytes(root: Path, address: str) -> bytes:
    return (root / "sys" / "bus" / "pci" / "devices" / address / "config").read_bytes()


def changed_offsets(before: bytes, after: bytes) -> List[int]:
    return [offset for offset, (old, new) in enumerate(zip(before, after)) if old != new]


# --------------------------------------------------------------------------
# Report: bridges and their verdicts
# --------------------------------------------------------------------------

def test_report_lists_every_bridge_above_the_selection_with_its_verdict(tmp_path: Path) -> None:
    host = tree(tmp_path, lab_like_host(), "ro intel_iommu=on")
    result = run(host, addresses=("04:00.0", "0000:01:00.0"))
    assert [dev["address"] for dev in result["devices"]] == ["0000:01:00.0", "0000:04:00.0"]
    assert result["devices"][1]["bridges"] == ["0000:00:10.1", "0000:02:00.0", "0000:03:00.0"]
    bridges = bridges_by_address(result)
    assert sorted(bridges) == ["0000:00:10.0", "0000:00:10.1", "0000:02:00.0", "0000:03:00.0"]
    assert {address: bridge["isolation"] for address, bridge in bridges.items()} == {
        "0000:00:10.0": "enabled", "0000:00:10.1": "enabled", "0000:02:00.0": "not_needed",
        "0000:03:00.0": "no_acs"}
    assert bridges["0000:00:10.1"]["acs"]["control"] == ACS_CONFIDENTIAL
    assert bridges["0000:00:10.1"]["devices_below"] == ["0000:04:00.0"]
    assert bridges["0000:03:00.0"]["acs"] is None and bridges["0000:03:00.0"]["port_type"] == "downstream_port"
    assert result["violations"] == [] and result["kernel_args"] == [] and result["changed"] is False
    assert result["warnings"] == [] and host.warnings == []


def test_default_selection_is_gpus_nvswitches_and_nics_and_reports_ats(tmp_path: Path) -> None:
    result = run(tree(tmp_path, switch_host(), ""))
    assert [(dev["address"], dev["role"]) for dev in result["devices"]] == [
        ("0000:03:00.0", "gpu"), ("0000:04:00.0", "nic"), ("0000:05:00.0", "gpu"), ("0000:06:00.0", "gpu")]
    ats = {dev["address"]: dev["ats"] for dev in result["devices"]}
    assert ats["0000:03:00.0"]["enabled"] is False and ats["0000:04:00.0"]["enabled"] is True
    assert ats["0000:05:00.0"] is None


@pytest.mark.parametrize("capability, control, verdict, missing", [
    (ACS_ALL, ACS_CONFIDENTIAL, "enabled", []),
    (ACS_ALL, 0x1D | 0x02, "enabled", []),
    (ACS_ALL, 0x05, "partial", ["completion_redirect", "upstream_forwarding"]),
    (ACS_ALL, 0x00, "disabled", ["source_validation", "request_redirect", "completion_redirect",
                                 "upstream_forwarding"]),
    # A flag the port does not implement counts as hard-wired on, as in the kernel's pci_acs_flags_enabled.
    (0x0F, 0x0D, "enabled", []),
    (0x0F, 0x00, "disabled", ["source_validation", "request_redirect", "completion_redirect"]),
])
def test_isolation_verdict_follows_the_kernel(tmp_path: Path, capability: int, control: int, verdict: str,
                                              missing: List[str]) -> None:
    host = tree(tmp_path, switch_host(dsp_acs=(capability, control)), "")
    bridge = bridges_by_address(run(host, addresses=("03:00.0",)))["0000:02:00.0"]
    assert (bridge["isolation"], bridge["missing"]) == (verdict, missing)
    assert (bridge["acs"]["capability"], bridge["acs"]["control"]) == (capability, control)


def test_pci_bridge_and_unreadable_bridges(tmp_path: Path) -> None:
    legacy = port("0000:00:03.0", "pcie_to_pci_bridge", 7, 7, group=10)
    behind = endpoint("0000:07:00.0", group=10)
    short = port("0000:00:04.0", "root_port", 8, 8, (ACS_ALL, ACS_CONFIDENTIAL), group=11)
    short.config = short.config[:64]  # what a reader without root gets
    below_short = endpoint("0000:08:00.0", group=12)
    host = tree(tmp_path, [legacy, behind, short, below_short], "")
    result = run(host, "confidential", ("07:00.0", "08:00.0"))
    bridges = bridges_by_address(result)
    assert bridges["0000:00:03.0"]["isolation"] == "pci_bridge"
    assert bridges["0000:00:04.0"]["isolation"] == "unknown"
    kinds = {violation["bridge"]: violation["kind"] for violation in result["violations"]}
    assert kinds == {"0000:00:03.0": "pci_bridge", "0000:00:04.0": "unknown"}
    unknown = next(v for v in result["violations"] if v["kind"] == "unknown")
    assert "0000:00:04.0" in unknown["msg"] and "0000:08:00.0" in unknown["msg"] and "root" in unknown["fix"]


# --------------------------------------------------------------------------
# Profile confidential
# --------------------------------------------------------------------------

def test_confidential_names_the_bridges_without_acs_and_their_group(tmp_path: Path) -> None:
    host = tree(tmp_path, lab_like_host(), "")
    result = run(host, "confidential", ("04:00.0", "01:00.0"))
    assert [(v["bridge"], v["kind"], v["devices"]) for v in result["violations"]] == [
        ("0000:03:00.0", "no_acs", ["0000:04:00.0"])]
    violation = result["violations"][0]
    assert violation["msg"].startswith("0000:03:00.0 (downstream_port 104c:8233) above 0000:04:00.0 has no ACS")
    assert "its IOMMU group 6 holds 0000:03:00.0, 0000:04:00.0" in violation["msg"]
    assert "slot" in violation["fix"]


def test_confidential_names_flags_that_are_off(tmp_path: Path) -> None:
    host = tree(tmp_path, switch_host(dsp_acs=(ACS_ALL, 0x05)), "")
    result = run(host, "confidential", ("03:00.0", "04:00.0"))
    assert [(v["bridge"], v["kind"], v["missing"]) for v in result["violations"]] == [
        ("0000:02:00.0", "partial", ["completion_redirect", "upstream_forwarding"]),
        ("0000:02:01.0", "partial", ["completion_redirect", "upstream_forwarding"])]
    first = result["violations"][0]
    assert first["msg"] == ("0000:02:00.0 (downstream_port 10b5:9797) above 0000:03:00.0: ACS completion_redirect, "
                            "upstream_forwarding not enabled (capability 0x005f, control 0x0005)")
    assert "IOMMU on" in first["fix"] and "pci=disable_acs_redir=" in first["fix"]
    assert result["kernel_args"] == [] and result["kernel_args_absent"] == []


@pytest.mark.parametrize("cmdline, args, absent", [
    ("ro pci=noaer,disable_acs_redir=0000:02:00.0", ["pci=noaer"], []),
    ("ro pci=config_acs=x0x00xx@0000:02:00.0 pcie_acs_override=downstream,multifunction", [],
     ["pcie_acs_override", "pci"]),
    ("ro pci=realloc=off pci=disable_acs_redir=0000:02:00.0;0000:02:01.0", ["pci=realloc=off"], []),
])
def test_confidential_takes_acs_weakening_arguments_off_the_command_line(tmp_path: Path, cmdline: str,
                                                                         args: List[str], absent: List[str]) -> None:
    result = run(tree(tmp_path, switch_host(), cmdline), "confidential", ("03:00.0",))
    assert (result["kernel_args"], result["kernel_args_absent"]) == (args, absent)
    assert [v["kind"] for v in result["violations"]] == ["cmdline"]
    assert result["violations"][0]["msg"].startswith("the kernel command line (/proc/cmdline) weakens ACS at boot:")
    assert result["pci_options"]["source"] == "/proc/cmdline"


def test_confidential_with_a_clean_command_line_leaves_pci_alone(tmp_path: Path) -> None:
    # As on the H200 host this was tried on: a pci= option, none of them about ACS.
    result = run(tree(tmp_path, switch_host(), "ro pci=realloc=off"), "confidential", ("03:00.0",))
    assert result["violations"] == [] and result["kernel_args"] == [] and result["kernel_args_absent"] == []
    assert result["pci_options"]["kept"] == ["realloc=off"] and result["notes"] == []


# --------------------------------------------------------------------------
# Profile p2p
# --------------------------------------------------------------------------

def test_p2p_names_the_downstream_ports_where_two_selected_devices_meet(tmp_path: Path) -> None:
    host = tree(tmp_path, switch_host(), "BOOT_IMAGE=/vmlinuz ro")
    result = run(host, "p2p", ("03:00.0", "04:00.0", "06:00.0"), p2p_mode="disable_acs_redir")
    assert result["p2p_ports"] == ["0000:02:00.0", "0000:02:01.0"]
    assert result["kernel_args"] == ["pci=disable_acs_redir=0000:02:00.0;0000:02:01.0"]
    assert result["kernel_args_absent"] == []
    assert any("2 pair(s) of selected devices meet only in the root complex" in note for note in result["notes"])
    assert any("lose their isolation" in warning for warning in result["warnings"])


def test_p2p_on_a_synthetic_hgx_pairs_each_gpu_with_its_nic(tmp_path: Path) -> None:
    host = tree(tmp_path, gpu_server(ServerShape(gpus=4, nic_pfs_per_gpu=1)), "ro")
    topology = read_topology(host)
    result = run(host, "p2p", roles=["gpu", "nic"], p2p_mode="disable_acs_redir")
    expected = sorted(dev["path"][-2] for dev in topology["devices"] if dev["role"] in ("gpu", "nic"))
    assert result["p2p_ports"] == expected and len(expected) == 8
    assert result["kernel_args"] == ["pci=disable_acs_redir=" + ";".join(expected)]


def resolve_kernel_path(spec: str, devices: List[Dict[str, Any]]) -> str:
    """The function a <pci_dev> path names, read top-down (the kernel matches it bottom-up, same result)."""
    first, *steps = spec.split("/")
    current = first
    for step in steps:
        children = [dev["address"] for dev in devices if dev["parent"] == current and dev["address"].endswith(
            ":" + step)]
        assert len(children) == 1, (spec, step, children)
        current = children[0]
    return current


def test_p2p_config_acs_with_path_form(tmp_path: Path) -> None:
    host = tree(tmp_path, switch_host(), "ro")
    result = run(host, "p2p", ("03:00.0", "05:00.0"), p2p_mode="config_acs", config_acs_flags="0x00xx",
                 device_format="path")
    (arg,) = result["kernel_args"]
    assert arg == "pci=config_acs=x0x00xx@0000:00:01.0/00.0/00.0;x0x00xx@0000:00:01.0/00.0/02.0"
    devices = read_topology(host)["devices"]
    named = [resolve_kernel_path(item.split("@")[1], devices) for item in arg.split("=", 2)[2].split(";")]
    assert named == result["p2p_ports"] == ["0000:02:00.0", "0000:02:02.0"]


@pytest.mark.parametrize("flags, mask, value", [
    ("x0x00xx", 0x2C, 0x00),  # clear egress control, completion and request redirect
    ("1xx11xx", 0x4C, 0x4C),  # Direct Translated P2P with redirect kept
    # The kernel documentation's example: "10x" enables Request Redirect, disables Translation Blocking,
    # leaves Source Validation unchanged.
    ("10x", 0x06, 0x04),
    ("1111011", 0x7F, 0x7B),  # the 0x7b of the kernel thread that fixed multi-device config_acs
])
def test_config_acs_flag_strings_read_from_the_right(flags: str, mask: int, value: int) -> None:
    assert flag_bits(flags) == (mask, value)


def test_p2p_keeps_other_pci_options_and_is_stable_on_its_own_output(tmp_path: Path) -> None:
    cmdline = "ro pci=noaer pci=realloc=off,disable_acs_redir=0000:09:00.0 quiet"
    result = run(tree(tmp_path / "a", switch_host(), cmdline), "p2p", ("03:00.0", "04:00.0"),
                 p2p_mode="disable_acs_redir")
    arg = "pci=noaer,realloc=off,disable_acs_redir=0000:02:00.0;0000:02:01.0"
    assert result["kernel_args"] == [arg]
    assert result["pci_options"]["acs"] == ["disable_acs_redir=0000:09:00.0"]
    assert any("replacing the ACS option(s)" in note for note in result["notes"])
    # After the reboot the running kernel has the argument as GRUB wrote it (quoted for its ';').
    booted = "ro %s quiet" % render("pci", arg[4:])
    assert booted == 'ro pci="noaer,realloc=off,disable_acs_redir=0000:02:00.0;0000:02:01.0" quiet'
    again = run(tree(tmp_path / "b", switch_host(), booted), "p2p", ("03:00.0", "04:00.0"),
                p2p_mode="disable_acs_redir")
    assert again["kernel_args"] == [arg]
    assert not any("replacing" in note for note in again["notes"])
    assert parse_item(arg, "present").text == render("pci", arg[4:]), "kernel_cmdline takes it as one argument"


def test_p2p_skips_ports_without_anything_to_turn_off(tmp_path: Path) -> None:
    host = tree(tmp_path, switch_host(dsp_acs=None), "ro pci=disable_acs_redir=0000:02:00.0")
    result = run(host, "p2p", ("03:00.0", "04:00.0"), p2p_mode="disable_acs_redir")
    assert result["p2p_ports"] == []
    assert result["kernel_args"] == [] and result["kernel_args_absent"] == ["pci"]
    assert any(note.startswith("0000:02:00.0 has no ACS") for note in result["notes"])
    assert not any("lose their isolation" in warning for warning in result["warnings"])


def test_p2p_direct_translated_warns_about_ports_and_endpoints_that_cannot_use_it(tmp_path: Path) -> None:
    host = tree(tmp_path, switch_host(dsp_acs=(0x1F, ACS_CONFIDENTIAL)), "ro")
    result = run(host, "p2p", ("03:00.0", "04:00.0"), p2p_mode="config_acs", config_acs_flags="1xx11xx")
    assert result["kernel_args"] == ["pci=config_acs=1xx11xx@0000:02:00.0;1xx11xx@0000:02:01.0"]
    assert "config_acs_flags 1xx11xx enables direct_translated_p2p, which 0000:02:00.0 does not implement" \
        in result["warnings"]
    assert "ATS is absent or off on 0000:03:00.0" in " ".join(result["warnings"])
    assert "0000:04:00.0" not in next(w for w in result["warnings"] if "ATS is absent" in w)


def test_unreadable_proc_cmdline_is_said(tmp_path: Path) -> None:
    result = run(tree(tmp_path, switch_host()), "p2p", ("03:00.0", "04:00.0"))
    assert result["pci_options"]["source"] is None
    assert any(w.startswith("/proc/cmdline could not be read") for w in result["warnings"])
    given = run(HostRoot(str(tmp_path)), "p2p", ("03:00.0", "04:00.0"), current_cmdline="ro pci=nommconf",
                p2p_mode="disable_acs_redir")
    assert given["kernel_args"] == ["pci=nommconf,disable_acs_redir=0000:02:00.0;0000:02:01.0"]
    assert given["pci_options"]["source"] == "current_cmdline"


# --------------------------------------------------------------------------
# Input
# --------------------------------------------------------------------------

def test_bad_input_is_refused_with_every_problem_named() -> None:
    with pytest.raises(PcieAcsError) as error:
        build_request("report", ["3b:00", "0000:03:00.0"], ["10de"], ["gpu", "fpga"], config_acs_flags="x0x0y",
                      runtime_write=True)
    text = str(error.value)
    for part in ("address '3b:00'", "pci_id '10de'", "role 'fpga'", "config_acs_flags 'x0x0y'",
                 "runtime_write needs profile confidential"):
        assert part in text
    assert "0000:03:00.0" not in text


def test_unknown_address_fails_and_names_it(tmp_path: Path) -> None:
    with pytest.raises(PcieAcsError, match=r"0000:42:00\.0 not found in /sys/bus/pci/devices"):
        run(tree(tmp_path, switch_host(), ""), addresses=("42:00.0", "03:00.0"))


# --------------------------------------------------------------------------
# Runtime write (labs)
# --------------------------------------------------------------------------

def test_runtime_write_confidential_sets_the_isolation_bits_once(tmp_path: Path) -> None:
    root = tmp_path / "root"
    host = tree(root, switch_host(root_acs=(ACS_ALL, 0x00)), "")
    before = config_bytes(root, "0000:00:01.0")
    planned = run(host, "confidential", ("03:00.0",), check_mode=True, runtime_write=True)
    assert config_bytes(root, "0000:00:01.0") == before, "check mode writes nothing"
    assert planned["runtime_changes"] == [
        {"address": "0000:00:01.0", "offset": ACS_AT + 6, "width": 2, "before": 0x00, "after": ACS_CONFIDENTIAL}]
    assert planned["changed"] is True and planned["violations"] == []

    done = run(HostRoot(str(root)), "confidential", ("03:00.0",), runtime_write=True)
    after = config_bytes(root, "0000:00:01.0")
    assert changed_offsets(before, after) == [ACS_AT + 6]
    assert after[ACS_AT + 6:ACS_AT + 8] == bytes((ACS_CONFIDENTIAL, 0x00))
    assert done["runtime_changes"] == planned["runtime_changes"] and done["changed"] is True
    assert NOT_REGROUPED in done["warnings"]
    assert bridges_by_address(done)["0000:00:01.0"]["isolation"] == "enabled"
    assert done["diff"]["before"] == "0000:00:01.0 acs_control=0x0000\n"
    assert done["diff"]["after"] == "0000:00:01.0 acs_control=0x001d\n"

    again = run(HostRoot(str(root)), "confidential", ("03:00.0",), runtime_write=True)
    assert again["changed"] is False and again["runtime_changes"] == [] and again["warnings"] == []
    assert config_bytes(root, "0000:00:01.0") == after


def test_runtime_write_uses_the_intel_pch_dword_register(tmp_path: Path) -> None:
    root = tmp_path / "root"
    pch = port("0000:00:1c.0", "root_port", 1, 1, (0x0F, 0x00), ids=(0x8086, 0xA110), dword=True, group=0)
    host = tree(root, [pch, endpoint("0000:01:00.0", group=1)], "")
    before = config_bytes(root, "0000:00:1c.0")
    result = run(host, "confidential", ("01:00.0",), runtime_write=True)
    after = config_bytes(root, "0000:00:1c.0")
    assert result["runtime_changes"] == [
        {"address": "0000:00:1c.0", "offset": ACS_AT + 8, "width": 4, "before": 0x00, "after": 0x0D}]
    assert changed_offsets(before, after) == [ACS_AT + 8]
    assert after[ACS_AT + 4:ACS_AT + 12] == bytes((0x0F, 0, 0, 0, 0x0D, 0, 0, 0))
    assert bridges_by_address(result)["0000:00:1c.0"]["acs"]["register_layout"] == "intel_pch_dword"


@pytest.mark.parametrize("mode, flags, control", [
    ("disable_acs_redir", "x0x00xx", ACS_CONFIDENTIAL & ~0x0C),
    ("config_acs", "1xx11xx", ACS_CONFIDENTIAL | 0x40),
])
def test_runtime_write_p2p_changes_only_the_named_ports(tmp_path: Path, mode: str, flags: str, control: int) -> None:
    root = tmp_path / "root"
    host = tree(root, switch_host(), "")
    untouched = config_bytes(root, "0000:02:02.0")
    result = run(host, "p2p", ("03:00.0", "04:00.0"), runtime_write=True, p2p_mode=mode, config_acs_flags=flags)
    assert [change["address"] for change in result["runtime_changes"]] == ["0000:02:00.0", "0000:02:01.0"]
    for address in ("0000:02:00.0", "0000:02:01.0"):
        assert config_bytes(root, address)[ACS_AT + 6] == control
    assert config_bytes(root, "0000:02:02.0") == untouched
    assert run(HostRoot(str(root)), "p2p", ("03:00.0", "04:00.0"), runtime_write=True, p2p_mode=mode,
               config_acs_flags=flags)["changed"] is False


@needs_lspci
def test_lspci_reads_what_the_runtime_write_wrote(tmp_path: Path) -> None:
    root = tmp_path / "root"
    host = tree(root, switch_host(dsp_acs=(ACS_ALL, 0x00)), "")
    run(host, "confidential", ("03:00.0",), runtime_write=True)
    records = parse_lspci(run_lspci(str(root / "sys" / "bus" / "pci")))
    assert records["0000:02:00.0"]["ACSCtl"] == {
        "source_validation": True, "translation_blocking": False, "request_redirect": True,
        "completion_redirect": True, "upstream_forwarding": True, "egress_control": False,
        "direct_translated_p2p": False}
    assert not any(records["0000:02:01.0"]["ACSCtl"].values()), "ports above unselected devices stay as they were"


def test_runtime_write_failure_names_the_port_and_the_fix(tmp_path: Path) -> None:
    """A real refused write: the file-size limit (RLIMIT_FSIZE, inherited by the writer) ends below the register,
    so the kernel answers the pwrite with EFBIG, as sysfs answers a user without CAP_SYS_ADMIN with EPERM."""
    root = tmp_path / "root"
    host = tree(root, switch_host(root_acs=(ACS_ALL, 0x00)), "")
    before = config_bytes(root, "0000:00:01.0")
    limits = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (0x100, limits[1]))
    try:
        with pytest.raises(PcieAcsError, match=r"cannot write the ACS control register of 0000:00:01\.0 "
                                               r"\(/sys/bus/pci/devices/0000:00:01\.0/config at offset 0x106\): "
                                               r"File too large; runtime_write needs root"):
            run(host, "confidential", ("03:00.0",), runtime_write=True)
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, limits)
    assert config_bytes(root, "0000:00:01.0") == before


# --------------------------------------------------------------------------
# Real machines: lspci -xxxx dumps of ../shared/fixtures
# --------------------------------------------------------------------------

def expected_isolation(record: Dict[str, Any]) -> str:
    """The kernel's verdict from lspci's decoding (port type, ACSCap, ACSCtl)."""
    kind = record.get("port_type")
    if kind in (None, "pcie_to_pci_bridge", "pci_to_pcie_bridge"):
        return "pci_bridge"
    if kind not in ("root_port", "downstream_port"):
        return "not_needed"
    if "ACSCap" not in record:
        return "no_acs"
    names = ("source_validation", "request_redirect", "completion_redirect", "upstream_forwarding")
    needed = [name for name in names if record["ACSCap"][name]]
    off = [name for name in needed if not record["ACSCtl"][name]]
    return "enabled" if not off else ("disabled" if off == needed else "partial")


@needs_lspci
def test_asus_x58_dump_agrees_with_lspci(shared_fixtures: Path, tmp_path: Path) -> None:
    root = tmp_path / "root"
    functions = functions_from_dump((shared_fixtures / "lspci-dumps" / "tree-asus-p6t6.txt").read_text())
    host = tree(root, functions, "")
    result = run(host, "confidential", roles=["gpu", "storage", "nic"])
    records = parse_lspci(run_lspci(str(root / "sys" / "bus" / "pci")))
    bridges = bridges_by_address(result)
    # The GeForce below root port 00:07.0, the SAS HBA below the NF200 switch, the NICs below ICH10 ports.
    assert {"0000:00:07.0", "0000:00:03.0", "0000:02:00.0", "0000:03:00.0"} <= set(bridges)
    for address, bridge in bridges.items():
        assert bridge["isolation"] == expected_isolation(records[address]), address
    assert bridges["0000:03:00.0"]["isolation"] == "no_acs"
    assert bridges["0000:00:07.0"]["missing"] == ["source_validation", "request_redirect", "completion_redirect",
                                                  "upstream_forwarding"]
    flagged = {violation["bridge"] for violation in result["violations"]}
    assert flagged == {address for address, bridge in bridges.items()
                       if bridge["isolation"] not in ("enabled", "not_needed")}


def test_laptop_gpu_below_a_sunrise_point_root_port_without_upstream_forwarding(shared_fixtures: Path,
                                                                                tmp_path: Path) -> None:
    """cap-exp-lnkcap2: a GeForce (10de:1d10) below root port 8086:9d10, whose ACS lacks upstream forwarding."""
    functions = functions_from_dump((shared_fixtures / "lspci-dumps" / "cap-exp-lnkcap2.txt").read_text())
    result = run(tree(tmp_path, functions, ""), "confidential")
    assert [(dev["address"], dev["role"], dev["bridges"]) for dev in result["devices"]] == [
        ("0000:02:00.0", "gpu", ["0000:00:1c.0"])]
    bridge = result["bridges"][0]
    assert bridge["acs"]["capabilities"]["upstream_forwarding"] is False
    assert (bridge["isolation"], bridge["missing"]) == (
        "disabled", ["source_validation", "request_redirect", "completion_redirect"])
    assert [(v["bridge"], v["kind"]) for v in result["violations"]] == [("0000:00:1c.0", "disabled")]


@pytest.mark.parametrize("osrelease, warned", [
    ("6.8.0-45-generic\n", True),  # /proc/sys/kernel/osrelease as the kernel gives it (uname -r and a newline)
    ("5.14.0-427.13.1.el9_4.x86_64\n", True),
    ("6.11.0-9-generic\n", False),
    ("not a release\n", False),
])
def test_config_acs_warns_on_a_running_kernel_before_6_11(tmp_path: Path, osrelease: str, warned: bool) -> None:
    host = tree(tmp_path, switch_host(), "ro")
    (tmp_path / "proc/sys/kernel").mkdir(parents=True)
    (tmp_path / "proc/sys/kernel/osrelease").write_text(osrelease)
    result = run(host, "p2p", ("03:00.0", "04:00.0"), p2p_mode="config_acs")
    found = [w for w in result["warnings"] if "pci=config_acs= exists from Linux 6.11 on" in w]
    assert bool(found) == warned, result["warnings"]
    if warned:
        assert found[0].startswith("the running kernel is %s:" % ".".join(osrelease.split(".")[:2]))
