"""pcie_acs run as a process, the way a host runs it, and role pcie_acs handing its arguments to kernel_args.

Trees come from tests/lib/fake_sysfs.py; the boot configuration is the lab's
GRUB set-up with the stand-in boot tools of tests/lib/standins, so no real boot
tool of this machine runs.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, Dict

import pytest

from conftest import REPO

sys.path.insert(0, str(REPO / "tests" / "lib"))
from tree_state import tree_state as snapshot  # noqa: E402
from fake_sysfs import (  # noqa: E402
    ACS_ALL,
    ACS_CONFIDENTIAL,
    ConfigBuilder,
    FakeFunction,
    ServerShape,
    build_tree,
    gpu_server,
    lab_like_host,
)

MODULE = "pcie_acs"
DROPIN = "etc/default/grub.d/99-confidential-gpu.cfg"
GRUB = 'GRUB_DEFAULT=0\nGRUB_CMDLINE_LINUX_DEFAULT=""\nGRUB_CMDLINE_LINUX="console=ttyS0,115200n8 %s"\n'
CPUINFO = "processor\t: 0\nvendor_id\t: GenuineIntel\ncpu family\t: 6\nmodel name\t: test CPU\nflags\t\t: fpu\n\n"


def boot_files(root: Path, cmdline: str = "intel_iommu=on iommu=pt") -> Path:
    """A Debian host booted by GRUB with ``cmdline`` configured and active."""
    files = {"etc/os-release": 'ID=debian\nVERSION_ID="12"\n', "etc/default/grub": GRUB % cmdline,
             "proc/cmdline": "BOOT_IMAGE=/vmlinuz root=UUID=0a1b ro console=ttyS0,115200n8 %s\n" % cmdline,
             "proc/cpuinfo": CPUINFO, "boot/grub/grub.cfg": "# installed\n"}
    for path, content in files.items():
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_text(content)
    return root


def isolation(result: Dict[str, Any]) -> Dict[str, str]:
    return {bridge["address"]: bridge["isolation"] for bridge in result["bridges"]}


def test_report_is_read_only_and_check_mode_reports_the_same(run_module, tmp_path: Path) -> None:
    root = boot_files(build_tree(tmp_path / "root", lab_like_host()))
    before = snapshot(root)
    result = run_module(MODULE, {"root": str(root), "addresses": ["04:00.0"]})
    assert result["rc"] == 0 and result["changed"] is False and result["warnings"] == [], result
    assert isolation(result) == {"0000:00:10.1": "enabled", "0000:02:00.0": "not_needed",
                                 "0000:03:00.0": "no_acs"}
    assert result["violations"] == [] and result["kernel_args"] == [] and "diff" not in result
    checked = run_module(MODULE, {"root": str(root), "addresses": ["04:00.0"], "_ansible_check_mode": True})
    assert {key: checked[key] for key in ("bridges", "devices")} == {key: result[key] for key in ("bridges", "devices")}
    assert snapshot(root) == before


def test_confidential_fails_on_violation_when_asked_and_names_the_bridge(run_module, tmp_path: Path) -> None:
    root = boot_files(build_tree(tmp_path / "root", lab_like_host()))
    args = {"root": str(root), "addresses": ["04:00.0", "01:00.0"], "profile": "confidential"}
    reported = run_module(MODULE, args)
    assert reported["rc"] == 0 and [v["bridge"] for v in reported["violations"]] == ["0000:03:00.0"]
    failed = run_module(MODULE, dict(args, fail_on_violation=True))
    assert failed["rc"] == 1 and failed["failed"] is True
    assert failed["msg"].startswith("1 ACS violation(s) above the selected devices: 0000:03:00.0 (downstream_port "
                                    "104c:8233) above 0000:04:00.0 has no ACS capability")
    assert "; fix: move the device" in failed["msg"]
    assert failed["violations"] == reported["violations"]


def test_p2p_arguments_go_through_kernel_cmdline_and_settle(run_module, tmp_path: Path, bin_dir: Path) -> None:
    root = boot_files(build_tree(tmp_path / "root", gpu_server(ServerShape(gpus=2, sockets=1))),
                      "intel_iommu=on pci=noaer")
    planned = run_module(MODULE, {"root": str(root), "profile": "p2p"})
    # The default, Direct Translated P2P: the switch ports implement SV TB RR CR UF DT (fake_sysfs.ACS_ALL).
    arg = "pci=noaer,config_acs=" + ";".join("1x111x1@" + port for port in (
        "0000:02:00.0", "0000:02:01.0", "0000:06:00.0", "0000:06:01.0"))
    assert planned["rc"] == 0 and planned["kernel_args"] == [arg], planned
    assert planned["changed"] is False, "planning boot arguments changes nothing by itself"
    assert any("IOMMU groups stay as they are" in warning for warning in planned["warnings"])

    written = run_module("kernel_cmdline", {"root": str(root), "command_path": [str(bin_dir)],
                                            "present": planned["kernel_args"],
                                            "absent": planned["kernel_args_absent"]})
    assert written["rc"] == 0 and written["changed"] is True, written
    assert written["pending"] == [{"key": "pci", "configured": [arg[4:]], "active": ["noaer"]}]
    assert "'console=ttyS0,115200n8 intel_iommu=on pci=\"%s\"'" % arg[4:] in (root / DROPIN).read_text()

    # The host reboots with the configured line; planning again gives the same argument and no change.
    (root / "proc/cmdline").write_text("BOOT_IMAGE=/vmlinuz root=UUID=0a1b ro %s\n" % " ".join(written["configured"]))
    again = run_module(MODULE, {"root": str(root), "profile": "p2p"})
    assert again["kernel_args"] == [arg] and again["pci_options"]["acs"] == [arg.split(",", 1)[1]]
    settled = run_module("kernel_cmdline", {"root": str(root), "command_path": [str(bin_dir)],
                                            "present": again["kernel_args"]})
    assert settled["changed"] is False and settled["reboot_required"] is False


def test_runtime_write_check_diff_then_apply_then_idempotent(run_module, tmp_path: Path) -> None:
    root = boot_files(build_tree(tmp_path / "root", gpu_server(ServerShape(gpus=1, sockets=1))))
    config = root / "sys/bus/pci/devices/0000:02:00.0/config"
    args = {"root": str(root), "profile": "p2p", "roles": ["gpu", "nic"], "runtime_write": True}
    before = config.read_bytes()
    checked = run_module(MODULE, dict(args, _ansible_check_mode=True, _ansible_diff=True))
    assert checked["rc"] == 0 and checked["changed"] is True, checked
    assert config.read_bytes() == before
    assert checked["diff"]["before"] == "0000:02:00.0 acs_control=0x001d\n0000:02:01.0 acs_control=0x001d\n"
    # The default p2p_mode, direct_translated, adds Direct Translated P2P (0x40) and keeps SV RR CR UF.
    assert checked["diff"]["after"] == "0000:02:00.0 acs_control=0x005d\n0000:02:01.0 acs_control=0x005d\n"

    applied = run_module(MODULE, args)
    assert applied["changed"] is True and "diff" not in applied
    assert any("do not regroup devices" in warning for warning in applied["warnings"])
    assert config.read_bytes()[0x106:0x108] == bytes((0x5D, 0x00))
    again = run_module(MODULE, args)
    assert again["changed"] is False and again["runtime_changes"] == []


def test_bad_input_fails_before_reading_and_names_the_values(run_module, tmp_path: Path) -> None:
    root = boot_files(build_tree(tmp_path / "root", lab_like_host()))
    before = snapshot(root)
    result = run_module(MODULE, {"root": str(root), "addresses": ["4:0.0"], "config_acs_flags": "0x1d",
                                 "runtime_write": True})
    assert result["rc"] == 1
    assert "address '4:0.0'" in result["msg"] and "config_acs_flags '0x1d'" in result["msg"]
    assert "runtime_write needs profile confidential" in result["msg"]
    bad_profile = run_module(MODULE, {"root": str(root), "profile": "secure"})
    assert bad_profile["rc"] == 1 and "profile" in bad_profile["msg"] and "secure" in bad_profile["msg"]
    assert snapshot(root) == before


def test_missing_root_fails_clearly(run_module, tmp_path: Path) -> None:
    result = run_module(MODULE, {"root": str(tmp_path / "nope")})
    assert result["rc"] == 1 and "does not exist or is not a directory" in result["msg"]


def test_real_host_agrees_with_pci_topology_info(run_module) -> None:
    everything = ["gpu", "nvswitch", "nic", "bridge", "storage", "other"]
    result = run_module(MODULE, {"roles": everything})
    topology = run_module("pci_topology_info", {})
    assert result["rc"] == 0 and result["changed"] is False, result
    assert [dev["address"] for dev in result["devices"]] == [dev["address"] for dev in topology["devices"]]
    above = sorted({address for dev in topology["devices"] for address in dev["path"][:-1]})
    assert [bridge["address"] for bridge in result["bridges"]] == above
    acs = {dev["address"]: dev.get("acs") for dev in topology["devices"]}  # absent when none
    for bridge in result["bridges"]:
        assert bridge["acs"] == (None if acs[bridge["address"]] is None else {
            key: acs[bridge["address"]][key] for key in bridge["acs"]}), bridge["address"]


def lab_vm_functions() -> list:
    """The lab VM's PCI layout as docs/lab.md gives it (root ports with ACS 0x5f/0x1d, an XIO3130 switch without)."""
    def bridge(address: str, ids: tuple, kind: str, secondary: int, subordinate: int, acs: bool) -> FakeFunction:
        config = ConfigBuilder(ids[0], ids[1], 0x060400, header_type=1).bridge_buses(
            int(address.split(":")[1], 16), secondary, subordinate).express(kind, 2.5, 1)
        if acs:
            config.acs(ACS_ALL, ACS_CONFIDENTIAL)
        return FakeFunction(address, config.bytes(), driver="pcieport")

    def leaf(address: str, ids: tuple, class_code: int, multifunction: bool = False) -> FakeFunction:
        config = ConfigBuilder(ids[0], ids[1], class_code, multifunction=multifunction).express("endpoint", 2.5, 1)
        return FakeFunction(address, config.bytes())

    rp = (0x1B36, 0x000C)
    functions = [
        bridge("0000:00:10.0", rp, "root_port", 1, 1, True), bridge("0000:00:10.1", rp, "root_port", 2, 2, True),
        bridge("0000:00:10.2", rp, "root_port", 3, 6, True), bridge("0000:00:10.3", rp, "root_port", 7, 7, True),
        leaf("0000:02:00.0", (0x1234, 0x1111), 0x038000, multifunction=True),
        leaf("0000:02:00.1", (0x8086, 0x293E), 0x040300),
        bridge("0000:03:00.0", (0x104C, 0x8232), "upstream_port", 4, 6, False),
        bridge("0000:04:00.0", (0x104C, 0x8233), "downstream_port", 5, 5, False),
        bridge("0000:04:01.0", (0x104C, 0x8233), "downstream_port", 6, 6, False),
        leaf("0000:05:00.0", (0x1234, 0x11E8), 0x00FF00), leaf("0000:06:00.0", (0x1AF4, 0x1050), 0x038000),
    ]
    groups = [2, 3, 4, 5, 6, 6, 7, 8, 9, 8, 9]
    for function, group in zip(functions, groups):
        function.iommu_group = group
    return functions


def test_the_lab_vm_layout_gives_what_docs_pcie_acs_md_promises(run_module, tmp_path: Path) -> None:
    root = boot_files(build_tree(tmp_path / "root", lab_vm_functions()))
    behind_switch = {"root": str(root), "addresses": ["05:00.0", "06:00.0"]}
    report = run_module(MODULE, behind_switch)
    assert isolation(report) == {"0000:00:10.2": "enabled", "0000:03:00.0": "not_needed",
                                 "0000:04:00.0": "no_acs", "0000:04:01.0": "no_acs"}
    confidential = run_module(MODULE, dict(behind_switch, profile="confidential"))
    assert [(v["bridge"], v["kind"]) for v in confidential["violations"]] == [
        ("0000:04:00.0", "no_acs"), ("0000:04:01.0", "no_acs")]
    assert "its IOMMU group 8 holds 0000:04:00.0, 0000:05:00.0" in confidential["violations"][0]["msg"]
    display = run_module(MODULE, {"root": str(root), "addresses": ["02:00.0"], "profile": "confidential"})
    assert display["violations"] == [] and isolation(display) == {"0000:00:10.1": "enabled"}
    p2p = run_module(MODULE, dict(behind_switch, profile="p2p"))
    assert p2p["p2p_ports"] == [] and p2p["kernel_args"] == [] and p2p["kernel_args_absent"] == []
    assert [note.split(" has no ACS")[0] for note in p2p["notes"]] == ["0000:04:00.0", "0000:04:01.0"]


# --------------------------------------------------------------------------
# Role pcie_acs, then role kernel_args
# --------------------------------------------------------------------------

PLAY = """---
- name: ACS, then the one writer of boot arguments
  hosts: localhost
  gather_facts: false
  roles:
    - role: confidential_gpu.host.pcie_acs
    - role: confidential_gpu.host.kernel_args
      when: pcie_acs_profile == 'p2p'
"""


def playbook(play: Path, *extra: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, ANSIBLE_CONFIG=str(REPO / "ansible.cfg"), ANSIBLE_NOCOLOR="1")
    command = [str(Path(sys.executable).with_name("ansible-playbook")), str(play), *extra]
    return subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=300, check=False)


def test_role_p2p_hands_the_argument_to_kernel_args(tmp_path: Path, bin_dir: Path) -> None:
    root = boot_files(build_tree(tmp_path / "root", gpu_server(ServerShape(gpus=1, sockets=1))))
    play = tmp_path / "play.yml"
    play.write_text(PLAY)
    proc = playbook(play, "-e", json.dumps({"pcie_acs_root": str(root), "pcie_acs_profile": "p2p",
                                            "pcie_acs_roles": ["gpu", "nic"], "kernel_args_root": str(root),
                                            "kernel_args_command_path": [str(bin_dir)],
                                            "kernel_args_blacklist_nouveau": False}))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    # pcie_acs_kernel_args, the role's contributor variable, carries config_acs= to kernel_args.
    assert "0000:02:00.0 downstream_port" in proc.stdout and "boot arguments for kernel_args: " \
        "pci=config_acs=1x111x1@0000:02:00.0;1x111x1@0000:02:01.0" in proc.stdout
    assert "pci=\"config_acs=1x111x1@0000:02:00.0;1x111x1@0000:02:01.0\"'" in (root / DROPIN).read_text()


def test_role_confidential_fails_with_every_bridge_and_its_fix(tmp_path: Path) -> None:
    root = boot_files(build_tree(tmp_path / "root", lab_like_host()))
    play = tmp_path / "play.yml"
    play.write_text(PLAY)
    proc = playbook(play, "-e", json.dumps({"pcie_acs_root": str(root), "pcie_acs_addresses": ["04:00.0"]}))
    assert proc.returncode != 0
    assert "localhost: 1 ACS violation(s) above 0000:04:00.0: [1] 0000:03:00.0 (downstream_port 104c:8233) above " \
           "0000:04:00.0 has no ACS capability" in proc.stdout
    assert "VIOLATION 0000:03:00.0" in proc.stdout
    passed = playbook(play, "-e", json.dumps({"pcie_acs_root": str(root), "pcie_acs_addresses": ["01:00.0"]}))
    assert passed.returncode == 0, passed.stdout
    assert "every bridge above the selected devices isolates them" in passed.stdout


@pytest.mark.parametrize("selection", ["pcie_acs_addresses", "pcie_acs_default_selection"])
def test_role_checks_what_vfio_passes_through_by_default(tmp_path: Path, selection: str) -> None:
    """Without a selection of its own, the role checks above the devices of pcie_acs_default_selection (where
    prepare.yml passes vfio's), not above every NIC."""
    root = boot_files(build_tree(tmp_path / "root", lab_like_host()))
    play = tmp_path / "play.yml"
    play.write_text(PLAY)
    for address, fails in (("04:00.0", True), ("01:00.0", False)):
        given = {"addresses": [address]} if selection == "pcie_acs_default_selection" else [address]
        proc = playbook(play, "-e", json.dumps({"pcie_acs_root": str(root), selection: given}))
        assert (proc.returncode != 0) is fails, proc.stdout
        assert ("1 ACS violation(s) above 0000:%s:" % address in proc.stdout) is fails


def test_role_reads_no_variable_of_role_vfio(tmp_path: Path) -> None:
    """Issue 16 point 5: the role's defaults once read vfio_addresses; a device only vfio names is not checked."""
    root = boot_files(build_tree(tmp_path / "root", lab_like_host()))
    play = tmp_path / "play.yml"
    play.write_text(PLAY)
    proc = playbook(play, "-e", json.dumps({"pcie_acs_root": str(root), "vfio_addresses": ["04:00.0"]}))
    assert "above 0000:04:00.0" not in proc.stdout, proc.stdout
