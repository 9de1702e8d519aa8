"""Role validate, readiness part (playbooks/validate.yml): what prepare promised, checked, changing nothing.

- On the lab VM's tree that playbooks/prepare.yml has converged (tests/lib/prepare_run.py ``prepared_lab``, then
  prepare once), every asked check passes, the run reports changed=0 and the tree stays byte-identical.
- On the same VM before prepare (IOMMU off, the GPU on its own driver, no VFs, no pools, no boot arguments), the same
  variables give failures, each with its fix.
- ``--check`` prints the same lines as a normal run.
- The report (roles/validate/tasks/report.yml) is written on the controller for both hosts, the fresh one that
  fails included, with the readiness lines the run printed; the HTML page loads nothing from the network.
Both trees are hosts of one inventory, so each of the two validate runs is one ansible-playbook process.

The pure function (plugins/plugin_utils/readiness.py) is tested on its own below: pass / fail / not asked per check.
"""

from __future__ import annotations

import dataclasses
import json
import re
import sys
from pathlib import Path
from typing import Any, Dict, List

import pytest
import yaml

LIB = Path(__file__).resolve().parents[2] / "lib"
if str(LIB) not in sys.path:
    sys.path.insert(0, str(LIB))

from fake_sriov import LAB_PF, KernelStandIn, sriov_pf  # noqa: E402
from host_critical_tree import lab_vm, lab_vm_functions  # noqa: E402
from hugepages_tree import HugepagesTree  # noqa: E402
from prepare_run import REPO, debian_grub_host, playbook, prepared_lab  # noqa: E402
from role_play import ansible_playbook  # noqa: E402
from tree_state import changed_entries, tree_state  # noqa: E402

from ansible_collections.confidential_gpu.host.plugins.plugin_utils import readiness  # noqa: E402

LAB_GPU = "0000:02:00.0"


def variables(bin_dir: Path) -> Dict[str, Any]:
    """prepare's variables, as tests/unit/converged/test_converged_host.py gives them for the lab VM's tree."""
    return {"cc_host_technology": "none", "cc_host_iommufd": False,
            "kernel_args_command_path": [str(bin_dir)], "kernel_args_iommu_passthrough": "on",
            "vfio_addresses": [LAB_GPU], "vfio_initramfs_command": "true",
            "hugepages_pools": [{"size": "2M", "node": 0, "count": 16}, {"size": "2M", "node": 1, "count": 16}],
            "sriov_pfs": [{"address": LAB_PF, "num_vfs": 2}], "sriov_timeout": 10, "pcie_acs_profile": "report"}


def fresh_lab(root: Path) -> Path:
    """The lab VM before prepare: booted without IOMMU arguments (no IOMMU groups), the GPU and its audio function
    on their own drivers, the NVMe PF without VFs, no hugepages."""
    functions = []
    for function in lab_vm_functions():
        if function.address == LAB_PF:
            function = sriov_pf(LAB_PF, num_vfs=0)
        elif function.address.startswith(LAB_PF[:-1]):
            continue  # a VF
        functions.append(dataclasses.replace(function, iommu_group=None))
    lab_vm(root, functions)
    HugepagesTree(root)
    return debian_grub_host(root)


LINE = re.compile(r'^\s+("(?:pass|FAIL|not asked) +[a-z_]+: .*"),?$')


def check_lines(output: str) -> Dict[str, List[str]]:
    """The lines of 'Show the readiness checks', per host."""
    section = output.split("Show the readiness checks]", 1)[1].split("\nTASK [", 1)[0]
    lines: Dict[str, List[str]] = {}
    host = ""
    for line in section.splitlines():
        match = re.match(r"^ok: \[(\w+)\]", line)
        if match:
            host = match.group(1)
            lines[host] = []
        elif LINE.match(line):
            lines[host].append(json.loads(LINE.match(line).group(1)))
    return lines


def recap(output: str, host: str) -> Dict[str, int]:
    line = next(li for li in output.splitlines() if li.startswith(host + " ") and "ok=" in li)
    return {key: int(value) for key, value in (field.split("=") for field in line.split(":", 1)[1].split())}


def states(lines: List[str]) -> Dict[str, str]:
    """check name -> pass / FAIL / not asked."""
    found = (re.match(r"^(pass|FAIL|not asked) +([a-z_]+):", line) for line in lines)
    return {match.group(2): match.group(1) for match in found if match}


@pytest.fixture(scope="module")
def validated(tmp_path_factory: pytest.TempPathFactory) -> Dict[str, Any]:
    top = tmp_path_factory.mktemp("validate")
    bin_dir = top / "bin"
    bin_dir.mkdir()
    for tool in (REPO / "tests/lib/standins").iterdir():
        (bin_dir / tool.name).write_bytes(tool.read_bytes())
        (bin_dir / tool.name).chmod(0o755)
    given = variables(bin_dir)
    prepared = prepared_lab(top / "prepared")
    with KernelStandIn(prepared):
        first = playbook(REPO / "playbooks/prepare.yml", "-e",
                         json.dumps(dict(given, confidential_gpu_root=str(prepared))))
    assert first.returncode == 0, first.stdout + first.stderr
    fresh = fresh_lab(top / "fresh")
    inventory = top / "inventory.yml"
    inventory.write_text(yaml.safe_dump({"all": {"hosts": {
        name: {"ansible_connection": "local", "ansible_python_interpreter": sys.executable,
               "confidential_gpu_root": str(root)}
        for name, root in (("prepared", prepared), ("fresh", fresh))}}}))
    extra = top / "vars.json"
    extra.write_text(json.dumps(given))
    before = {name: tree_state(root) for name, root in (("prepared", prepared), ("fresh", fresh))}
    plays = [{"import_playbook": str(REPO / "playbooks/validate.yml")}]
    report = {mode: ["-e", "validate_report_dir=%s/report-%s" % (top, mode), "-e", "validate_report_name=lab-" + mode]
              for mode in ("normal", "check")}
    runs = {mode: ansible_playbook(top, plays, "validate-" + mode,
                                   ["-i", str(inventory), "-e", "@%s" % extra] + report[mode], check=mode == "check")
            for mode in ("normal", "check")}
    after = {name: tree_state(root) for name, root in (("prepared", prepared), ("fresh", fresh))}
    reports = {mode: top / ("report-" + mode) for mode in runs}
    return {"runs": runs, "before": before, "after": after, "reports": reports}


def test_a_prepared_host_passes_every_asked_check_and_changes_nothing(validated: Dict[str, Any]) -> None:
    run = validated["runs"]["normal"]
    output = run.stdout + run.stderr
    lines = check_lines(output)["prepared"]
    assert states(lines) == {
        "iommu": "pass", "vfio_devices": "pass", "acs": "pass", "sriov_vfs": "pass", "hugepages": "pass",
        "boot_args_configured": "pass", "boot_args_active": "pass", "cc_state": "not asked",
        "gpu_cc_mode": "not asked", "kata_installed": "not asked", "kata_runtime_configs": "not asked",
        "containerd_handlers": "not asked"}, lines
    counts = recap(output, "prepared")
    assert counts["failed"] == 0 and counts["changed"] == 0, output
    assert validated["after"]["prepared"] == validated["before"]["prepared"], changed_entries(
        validated["before"]["prepared"], validated["after"]["prepared"])


def test_a_fresh_host_fails_with_the_fixes(validated: Dict[str, Any]) -> None:
    run = validated["runs"]["normal"]
    output = run.stdout + run.stderr
    lines = check_lines(output)["fresh"]
    failed = {name for name, state in states(lines).items() if state == "FAIL"}
    assert failed == {"iommu", "vfio_devices", "sriov_vfs", "hugepages", "boot_args_configured",
                      "boot_args_active"}, lines
    by_name = dict(zip([re.match(r"^(?:pass|FAIL|not asked) +([a-z_]+):", line).group(1) for line in lines], lines))
    assert "the IOMMU is off" in by_name["iommu"] and "-> fix: enable VT-d" in by_name["iommu"]
    assert "lacks intel_iommu=on iommu=pt modprobe.blacklist=nouveau" in by_name["boot_args_configured"]
    assert "-> fix: reboot the host" in by_name["boot_args_active"]
    assert "has 0 VFs, asked 2" in by_name["sriov_vfs"]
    assert "2M node 0: 0 of 16 pages" in by_name["hugepages"]
    assert all("-> fix: " in by_name[name] for name in failed)
    assert run.returncode != 0 and recap(output, "fresh")["failed"] == 1
    assert ("fresh is not ready: iommu, vfio_devices, sriov_vfs, hugepages, boot_args_configured, boot_args_active"
            in output)
    assert validated["after"]["fresh"] == validated["before"]["fresh"], changed_entries(
        validated["before"]["fresh"], validated["after"]["fresh"])


def test_check_mode_prints_the_same_lines(validated: Dict[str, Any]) -> None:
    normal, check = (validated["runs"][mode] for mode in ("normal", "check"))
    assert check_lines(check.stdout) == check_lines(normal.stdout)
    assert set(check_lines(normal.stdout)) == {"prepared", "fresh"}


def test_the_report_is_written_for_every_host_before_the_fresh_one_fails(validated: Dict[str, Any]) -> None:
    for mode, directory in validated["reports"].items():
        output = validated["runs"][mode].stdout
        assert sorted(path.name for path in directory.iterdir()) == [
            "fresh.json", "prepared.json", "validate.html", "validate.json"], mode
        run = json.loads((directory / "validate.json").read_text())
        assert (run["schema_version"], run["report"], run["name"]) == (1, "validate", "lab-" + mode)
        assert run["collection_version"] == yaml.safe_load((REPO / "galaxy.yml").read_text())["version"]
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", run["generated"])
        assert run["summary"] == {"hosts": 2, "readiness_pass": 1, "readiness_fail": 1, "performance_not_run": 2}
        for host in ("prepared", "fresh"):
            document = json.loads((directory / (host + ".json")).read_text())
            assert document == run["hosts"][host] and document["host"] == host
            printed = states(check_lines(output)[host])
            assert {c["name"]: {"pass": "pass", "fail": "FAIL", "not_asked": "not asked"}[c["state"]]
                    for c in document["readiness"]["checks"]} == printed, "the report holds the lines printed"
            # The lab VM's display function is QEMU's (1234:1111), no NVIDIA GPU: pci_topology_info counts none.
            assert document["host_facts"]["gpus"] == 0 and document["host_facts"]["iommu"] is (host == "prepared")
        fresh = run["hosts"]["fresh"]["readiness"]
        assert fresh["state"] == "fail" and fresh["failed"] == [
            "iommu", "vfio_devices", "sriov_vfs", "hugepages", "boot_args_configured", "boot_args_active"]
        page = (directory / "validate.html").read_text()
        assert "Validation report lab-%s" % mode in page and "<script" not in page and " src=" not in page
    assert validated["runs"]["normal"].returncode != 0, "the fresh host still fails after its report"


# --------------------------------------------------------------------------
# The pure function: pass / fail / not asked per check
# --------------------------------------------------------------------------

CC_ON = {"iommu": {"enabled": True, "type": "intel", "group_count": 9},
         "cpu": {"vendor": "amd", "cc_support": {"snp": True}},
         "verdicts": {"snp_ready": True, "snp_ready_reasons": [], "tdx_ready": False,
                      "tdx_ready_reasons": ["CPU is not Intel"], "vfio_ready_reasons": []}}
CC_OFF = {"iommu": {"enabled": False}, "cpu": {"vendor": "intel", "cc_support": {"tdx": False}},
          "verdicts": {"vfio_ready_reasons": ["IOMMU is off: add intel_iommu=on"], "tdx_ready": False,
                       "tdx_ready_reasons": ["kvm_intel tdx=N"]}}
BOUND = {"result": {"changed": False, "files": [], "devices": [{"address": LAB_GPU, "action": "none"}],
                    "groups": [{"id": 3, "viable": True, "reasons": []}]}, "driver": "vfio-pci"}
UNBOUND = {"result": {"changed": True, "files": [],
                      "devices": [{"address": LAB_GPU, "action": "bind", "driver_before": "nouveau"}],
                      "groups": [{"id": 3, "viable": False, "reasons": ["holds a NIC"]}]}}
BOOT_OK = {"result": {"changed": False, "backend": "grub", "configured": ["intel_iommu=on"],
                      "configured_before": ["intel_iommu=on"], "active": ["intel_iommu=on"], "pending": []}}
BOOT_PENDING = {"result": {"changed": False, "backend": "grub", "configured": ["intel_iommu=on"],
                           "configured_before": ["intel_iommu=on"], "active": [], "pending": [{"key": "intel_iommu"}]}}
KATA_OK = {"binaries": {"/opt/kata/bin/containerd-shim-kata-v2": True},
           "configs": {"qemu-nvidia-gpu":
                       "/opt/kata/share/defaults/kata-containers/configuration-qemu-nvidia-gpu.toml"},
           "containerd": {"source": "files", "error": "", "texts": {"/etc/containerd/config.toml": (
               'version = 3\n[plugins."io.containerd.cri.v1.runtime".containerd.runtimes.kata-qemu-nvidia-gpu]\n'
               'runtime_type = "io.containerd.kata-qemu-nvidia-gpu.v2"\n')}}}


def judged(**facts: Any) -> Dict[str, Dict[str, str]]:
    return {item["name"]: item for item in readiness.readiness_checks(dict({"cc_host": CC_ON}, **facts))}


def test_nothing_asked_is_not_asked_except_the_iommu_and_boot_steps() -> None:
    result = judged(cc_technology="none")
    assert result["iommu"]["state"] == "pass"
    assert {name for name, item in result.items() if item["state"] == "not_asked"} == {
        "vfio_devices", "acs", "sriov_vfs", "hugepages", "boot_args_configured", "boot_args_active", "cc_state",
        "gpu_cc_mode", "kata_installed", "kata_runtime_configs", "containerd_handlers"}
    assert all(item["fix"] == "" for item in result.values())


def test_each_check_passes_on_what_prepare_leaves() -> None:
    result = judged(cc_technology="auto", vfio=BOUND, kernel_args=BOOT_OK, kata=KATA_OK,
                    acs={"result": {"profile": "confidential", "violations": [],
                                    "bridges": [{"address": "0000:00:01.0"}]}},
                    sriov={"result": {"changed": False,
                                      "pfs": [{"address": LAB_PF, "num_vfs": 2, "recreated": False}]}},
                    hugepages={"result": {"changed": False,
                                          "pools": [{"size": "2M", "node": 0, "before": 8, "requested": 8}]}},
                    gpu_cc_mode={"plan": {"errors": [], "steps": [], "summary": ["0000:41:00.0 gpu cc=on"]}})
    assert {name: item["state"] for name, item in result.items()} == dict.fromkeys(result, "pass"), result
    assert result["containerd_handlers"]["detail"] \
        == "kata-qemu-nvidia-gpu in the files /etc/containerd/config.toml (the running daemon was not asked)"
    assert result["cc_state"]["detail"] == "snp_ready"


def test_each_check_fails_with_its_fix() -> None:
    result = readiness.readiness_checks({
        "cc_host": CC_OFF, "cc_technology": "tdx", "vfio": UNBOUND, "kernel_args": BOOT_PENDING,
        "acs": {"result": {"profile": "confidential", "bridges": [], "violations": [
            {"bridge": "0000:04:00.0", "kind": "no_acs", "msg": "0000:04:00.0 (downstream_port 104c:8233) has no ACS",
             "fix": "put the GPU in a slot below a port with ACS"}]}},
        "sriov": {"result": {"changed": True, "pfs": [{"address": LAB_PF, "num_vfs_before": 0, "num_vfs": 2,
                                                       "recreated": True}]}},
        "hugepages": {"failed": True, "msg": "node 0 has 4096 MiB"},
        "gpu_cc_mode": {"plan": {"errors": [], "steps": [{"address": "0000:41:00.0", "setting": "cc", "from": "off",
                                                          "mode": "on"}]}},
        "kata": dict(KATA_OK, binaries={"/opt/kata/bin/containerd-shim-kata-v2": False},
                     configs={"qemu-nvidia-gpu": ""},
                     containerd={"source": "dump", "error": "", "texts": {"containerd config dump": "version = 3\n"}})})
    by_name = {item["name"]: item for item in result}
    failed = {name for name, item in by_name.items() if item["state"] == "fail"}
    assert failed == set(by_name) - {"boot_args_configured"}
    assert by_name["iommu"]["detail"] == "the IOMMU is off: IOMMU is off: add intel_iommu=on"
    assert "0000:02:00.0 (nouveau)" in by_name["vfio_devices"]["detail"]
    assert "holds a NIC" in by_name["vfio_devices"]["detail"]
    assert by_name["boot_args_active"]["fix"] == readiness.REBOOT
    assert by_name["cc_state"]["detail"] == "not tdx_ready: kvm_intel tdx=N"
    assert by_name["gpu_cc_mode"]["detail"] == "0000:41:00.0 cc is off, asked on"
    assert by_name["hugepages"]["detail"] == "node 0 has 4096 MiB"
    assert by_name["acs"]["detail"] == "0000:04:00.0 (downstream_port 104c:8233) has no ACS"
    assert by_name["acs"]["fix"] == "put the GPU in a slot below a port with ACS"
    assert by_name["containerd_handlers"]["detail"] == "`containerd config dump` lacks kata-qemu-nvidia-gpu"
    assert all(item["fix"] for item in result if item["state"] == "fail")
    lines = readiness.check_line(by_name["boot_args_active"])
    assert lines.startswith("FAIL") and "-> fix: reboot the host" in lines


def test_auto_is_none_on_a_cpu_that_cannot() -> None:
    assert judged(cc_host=CC_OFF, cc_technology="auto")["cc_state"]["state"] == "not_asked"
    assert readiness.cc_technology("auto", CC_ON) == "snp"


def test_a_broken_containerd_file_fails_naming_it() -> None:
    kata = dict(KATA_OK, containerd={"source": "files", "error": "", "texts": {"/etc/containerd/config.toml": "[x"}})
    item = judged(kata=kata)["containerd_handlers"]
    assert item["state"] == "fail" and "/etc/containerd/config.toml is not valid TOML" in item["detail"]


# What the role reads directly of prepare's roles' variables defaults as each role does (roles/<role>/defaults).
DEFAULTS = {"validate_kernel_args_iommu": ("kernel_args", "kernel_args_iommu"),
            "validate_cc_host_technology": ("cc_host", "cc_host_technology"),
            "validate_cc_host_tdx_boot_args": ("cc_host", "cc_host_tdx_boot_args"),
            "validate_kata_prefix": ("kata", "kata_prefix"),
            "validate_kata_manage_containerd": ("kata", "kata_manage_containerd"),
            "validate_kata_containerd_config": ("kata", "kata_containerd_config"),
            "validate_kata_containerd_dropin": ("kata", "kata_containerd_dropin"),
            "validate_kata_containerd_binary": ("kata", "kata_containerd_binary")}


@pytest.mark.parametrize("ours", sorted(DEFAULTS))
def test_the_fallbacks_are_the_roles_defaults(ours: str) -> None:
    role, theirs = DEFAULTS[ours]
    text = yaml.safe_load((REPO / "roles/validate/vars/main.yml").read_text())[ours]
    fallback = re.search(r"%s \| default\((.*)\) ?\}\}" % theirs, text).group(1)
    assert yaml.safe_load(fallback) == yaml.safe_load((REPO / "roles" / role / "defaults/main.yml").read_text())[theirs]
