"""Role gpu_cc_mode run with ansible-playbook (local connection) through the nvidia_gpu_tools.py stand-in.

The GPUs and NVSwitches come from a fake sysfs tree (pci_topology_info reads it through
gpu_cc_mode_root); the stand-in keeps their modes in a JSON state file and logs every call,
so the tests check which tool commands ran, in which order, and the modes they left.
"""

from __future__ import annotations

import hashlib
import io
import json
import sys
import tarfile
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any, Dict, Iterator, List, Tuple

import pytest
from conftest import REPO

sys.path.insert(0, str(REPO / "tests" / "lib"))
from gpu_cc_lab import STATE_ENV, calls, fake_host, read_state, write_state  # noqa: E402
from loopback_http import Server  # noqa: E402
from role_play import run_role  # noqa: E402

REPORT = ("gpu_cc_mode_plan",)
# Python takes an empty PYTHONDONTWRITEBYTECODE as unset (this environment may set it for the tests).
WRITES_BYTECODE = {"PYTHONDONTWRITEBYTECODE": ""}


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def setup(tmp_path: Path, bin_dir: Path, gpus: int, nvswitches: int = 0, gpu_driver: str = "vfio-pci",
          **modes: Any) -> Dict[str, Any]:
    """Fake host tree + stand-in state (every device in ``modes``) + the role variables that point at both."""
    state = fake_host(tmp_path / "host", gpus, nvswitches, gpu_driver=gpu_driver)
    for device in state["devices"].values():
        device.update({key: value for key, value in modes.items() if key != "cc" or device["kind"] == "gpu"})
    state_file = write_state(tmp_path / "gpus.json", state)
    tool = bin_dir / "nvidia_gpu_tools.py"
    return {
        "state_file": state_file,
        "vars": {"gpu_cc_mode_root": str(tmp_path / "host"), "gpu_cc_mode_tool": str(tool),
                 "gpu_cc_mode_tool_sha256": sha256(tool)},
        "env": {STATE_ENV: str(state_file)},
    }


def sets(argvs: List[List[str]]) -> List[List[str]]:
    """The calls that change a mode: [address, option, ...] without the query calls."""
    return [[argv[0].split("=", 1)[1]] + argv[1:] for argv in argvs if any(a.startswith("--set-") for a in argv)]


def test_single_gpu_cc_on_turns_ppcie_off_first_then_confirms_and_is_idempotent(tmp_path: Path, bin_dir: Path) -> None:
    lab = setup(tmp_path, bin_dir, gpus=1, cc="off", ppcie="on")

    first = run_role(tmp_path, "gpu_cc_mode", dict(lab["vars"], gpu_cc_mode_cc="on"), REPORT, env=lab["env"])

    assert first.rc == 0, first.output
    assert sets(calls(lab["state_file"])) == [
        ["0000:03:00.0", "--set-ppcie-mode=off", "--reset-after-ppcie-mode-switch"],
        ["0000:03:00.0", "--set-cc-mode=on", "--reset-after-cc-mode-switch"],
    ]
    queries = [argv for argv in calls(lab["state_file"]) if "--query-cc-mode" in argv]
    assert len(queries) == 2, "one query before the plan, one to confirm"
    device = read_state(lab["state_file"])["devices"]["0000:03:00.0"]
    assert (device["cc"], device["ppcie"]) == ("on", "off")
    assert first.facts["gpu_cc_mode_plan"]["changed"] is True
    assert "step 2: gpu 0000:03:00.0: CC off -> on (--set-cc-mode=on --reset-after-cc-mode-switch)" in first.output
    assert "gpu 0000:03:00.0: CC on, PPCIe off" in first.output, "the confirmation shows the new modes"

    # Again, running the stand-in as a command (like /sbin/nvidia_gpu_tools): only the query runs.
    wrapper = bin_dir / "nvidia_gpu_tools"
    again_vars = dict(lab["vars"], gpu_cc_mode_cc="on", gpu_cc_mode_python="", gpu_cc_mode_tool=str(wrapper),
                      gpu_cc_mode_tool_sha256=sha256(wrapper))
    write_state(lab["state_file"], read_state(lab["state_file"]))
    second = run_role(tmp_path, "gpu_cc_mode", again_vars, REPORT, env=lab["env"], name="again")

    assert second.rc == 0, second.output
    assert second.recap["changed"] == 0
    assert sets(calls(lab["state_file"])) == []
    assert second.facts["gpu_cc_mode_plan"]["summary"][-1] == "no change needed"


def test_hgx_ppcie_on_turns_cc_off_on_every_gpu_then_ppcie_on_for_gpus_and_switches(tmp_path: Path,
                                                                                    bin_dir: Path) -> None:
    lab = setup(tmp_path, bin_dir, gpus=4, nvswitches=2, cc="on", ppcie="off")
    devices = read_state(lab["state_file"])["devices"]
    gpus = sorted(address for address, device in devices.items() if device["kind"] == "gpu")
    switches = sorted(address for address, device in devices.items() if device["kind"] == "nvswitch")
    assert (len(gpus), len(switches)) == (4, 2)

    result = run_role(tmp_path, "gpu_cc_mode", dict(lab["vars"], gpu_cc_mode_ppcie="on"), REPORT, env=lab["env"])

    assert result.rc == 0, result.output
    done = sets(calls(lab["state_file"]))
    assert [(step[0], step[1]) for step in done[:4]] == [(gpu, "--set-cc-mode=off") for gpu in gpus]
    assert [(step[0], step[1]) for step in done[4:]] == [(device, "--set-ppcie-mode=on")
                                                         for device in sorted(gpus + switches)]
    assert all(step[2] == "--reset-after-ppcie-mode-switch" for step in done[4:])
    state = read_state(lab["state_file"])["devices"]
    assert sorted(state) == sorted(gpus + switches)
    assert {(d.get("cc"), d["ppcie"]) for d in state.values()} == {("off", "on"), (None, "on")}


def test_check_mode_runs_only_the_queries_and_shows_the_plan(tmp_path: Path, bin_dir: Path) -> None:
    lab = setup(tmp_path, bin_dir, gpus=2, cc="off", ppcie="off")
    before = read_state(lab["state_file"])

    result = run_role(tmp_path, "gpu_cc_mode", dict(lab["vars"], gpu_cc_mode_cc="devtools"), REPORT,
                      check=True, env=lab["env"])

    assert result.rc == 0, result.output
    assert read_state(lab["state_file"]) == before
    assert all(argv[1:] == ["--query-cc-mode", "--query-ppcie-mode"] for argv in calls(lab["state_file"]))
    assert len(calls(lab["state_file"])) == 2
    assert "step 1: gpu 0000:03:00.0: CC off -> devtools (--set-cc-mode=devtools --reset-after-cc-mode-switch)" \
        in result.output
    assert "would run: python3 %s --gpu-bdf=0000:83:00.0 --set-cc-mode=devtools --reset-after-cc-mode-switch" \
        % lab["vars"]["gpu_cc_mode_tool"] in result.output
    assert result.recap["changed"] == 2


def test_checksum_mismatch_runs_nothing(tmp_path: Path, bin_dir: Path) -> None:
    lab = setup(tmp_path, bin_dir, gpus=1)
    wrong = "0" * 64

    result = run_role(tmp_path, "gpu_cc_mode", dict(lab["vars"], gpu_cc_mode_cc="on", gpu_cc_mode_tool_sha256=wrong),
                      REPORT, env=lab["env"])

    assert result.rc != 0
    assert calls(lab["state_file"]) == []
    assert "%s has SHA-256 %s, not the expected %s: nothing was run" % (
        lab["vars"]["gpu_cc_mode_tool"], lab["vars"]["gpu_cc_mode_tool_sha256"], wrong) in result.output


def test_part_of_a_node_in_another_mode_is_refused_before_any_change(tmp_path: Path, bin_dir: Path) -> None:
    lab = setup(tmp_path, bin_dir, gpus=2, cc="off")

    result = run_role(tmp_path, "gpu_cc_mode", dict(lab["vars"], gpu_cc_mode_cc="on", gpu_cc_mode_devices=["03:00.0"]),
                      REPORT, env=lab["env"])

    assert result.rc != 0
    assert sets(calls(lab["state_file"])) == []
    assert ("the plan would leave CC modes mixed on this node (off: 0000:83:00.0; on: 0000:03:00.0): all GPUs of a "
            "node run in one mode") in result.output


def test_a_failed_switch_stops_the_later_steps(tmp_path: Path, bin_dir: Path) -> None:
    lab = setup(tmp_path, bin_dir, gpus=2, cc="off", ppcie="off")
    state = read_state(lab["state_file"])
    state["devices"]["0000:03:00.0"]["fail_reset"] = True
    write_state(lab["state_file"], state)

    result = run_role(tmp_path, "gpu_cc_mode", dict(lab["vars"], gpu_cc_mode_cc="on"), REPORT, env=lab["env"])

    assert result.rc != 0
    assert sets(calls(lab["state_file"])) == [["0000:03:00.0", "--set-cc-mode=on", "--reset-after-cc-mode-switch"]]
    assert "Step 1 of 2 failed on localhost: gpu 0000:03:00.0 CC off -> on (exit status 1)" in result.output
    assert "failed to switch to CC mode on, current mode is off." in result.output
    assert read_state(lab["state_file"])["devices"]["0000:83:00.0"]["cc"] == "off"


def test_gpus_held_by_the_nvidia_driver_are_refused_before_the_tool_runs(tmp_path: Path, bin_dir: Path) -> None:
    lab = setup(tmp_path, bin_dir, gpus=1, gpu_driver="nvidia")

    result = run_role(tmp_path, "gpu_cc_mode", dict(lab["vars"], gpu_cc_mode_cc="on"), REPORT, env=lab["env"])

    assert result.rc != 0
    assert calls(lab["state_file"]) == []
    assert "0000:03:00.0 is bound to the nvidia driver, and nvidia_gpu_tools.py refuses GPUs the driver uses" \
        in result.output


def test_bad_input_is_refused_before_anything_runs(tmp_path: Path, bin_dir: Path) -> None:
    lab = setup(tmp_path, bin_dir, gpus=1)

    both = run_role(tmp_path, "gpu_cc_mode", dict(lab["vars"], gpu_cc_mode_cc="on", gpu_cc_mode_ppcie="on"),
                    REPORT, env=lab["env"], name="both")
    no_tool = run_role(tmp_path, "gpu_cc_mode", {"gpu_cc_mode_root": lab["vars"]["gpu_cc_mode_root"],
                                                 "gpu_cc_mode_cc": "on"}, REPORT, env=lab["env"], name="no-tool")

    assert both.rc != 0 and no_tool.rc != 0
    assert ("gpu_cc_mode_cc on and gpu_cc_mode_ppcie on exclude each other: PPCIe (Hopper HGX multi-GPU "
            "passthrough) runs with CC off on every GPU; choose one") in both.output
    assert "gpu_cc_mode_tool is empty: give the path of nvidia_gpu_tools.py" in no_tool.output
    assert calls(lab["state_file"]) == []


def test_without_a_tool_and_a_wish_the_role_only_lists_the_devices(tmp_path: Path, bin_dir: Path) -> None:
    lab = setup(tmp_path, bin_dir, gpus=1)

    result = run_role(tmp_path, "gpu_cc_mode", {"gpu_cc_mode_root": lab["vars"]["gpu_cc_mode_root"]}, REPORT,
                      env=lab["env"])

    assert result.rc == 0, result.output
    assert "Neither gpu_cc_mode_tool nor gpu_cc_mode_release_url is set: 0000:03:00.0 found, modes not queried" \
        in result.output
    assert calls(lab["state_file"]) == []


def test_real_h200_capture_the_gpu_is_found_and_refused_while_nvidia_holds_it(tmp_path: Path, bin_dir: Path) -> None:
    """A real H200 host (tests/fixtures/hosts): pci_topology_info finds the GPU that the host's nvidia-smi lists,
    bound to nvidia, so the role stops before the tool runs."""
    archive = REPO / "tests" / "fixtures" / "hosts" / "h200-firecracker" / "capture.tar.xz"
    with tarfile.open(archive) as tar:
        if hasattr(tarfile, "tar_filter"):
            tar.extractall(tmp_path / "capture", filter="tar")
        else:  # Python without extraction filters (before 3.11.4 and its backports)
            tar.extractall(tmp_path / "capture")  # noqa: S202 - our own fixture
    xml = ET.parse(tmp_path / "capture" / "commands" / "nvidia-smi-q.xml").getroot()
    gpus = [gpu.findtext("pci/pci_bus_id", "").lower()[4:] for gpu in xml.findall("gpu")]
    state_file = write_state(tmp_path / "gpus.json", {"devices": {}})
    tool = bin_dir / "nvidia_gpu_tools.py"

    result = run_role(tmp_path, "gpu_cc_mode", {"gpu_cc_mode_root": str(tmp_path / "capture" / "root"),
                                                "gpu_cc_mode_tool": str(tool), "gpu_cc_mode_tool_sha256": sha256(tool),
                                                "gpu_cc_mode_cc": "on"}, REPORT, env={STATE_ENV: str(state_file)})

    assert len(gpus) == 1
    assert result.rc != 0
    assert "%s is bound to the nvidia driver, and nvidia_gpu_tools.py refuses GPUs the driver uses" % gpus[0] \
        in result.output
    assert calls(state_file) == []


# --- a gpu-admin-tools release archive, served on loopback ---------------------------------------------------

RELEASE_TOP = "gpu-admin-tools-2025.01.1"
# As current releases do, the entry file loads its code from a package beside it.
RELEASE_ENTRY = b"""#!/usr/bin/env python3
import sys

from gpu.standin import main

sys.exit(main(sys.argv[1:]))
"""


def add_member(tar: tarfile.TarFile, name: str, data: bytes, mode: int = 0o664) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mode = len(data), mode
    tar.addfile(info, io.BytesIO(data))


def build_tool_release(path: Path, top: str = RELEASE_TOP, entry: str = "nvidia_gpu_tools.py") -> str:
    """A release shaped like GitHub's archive of a gpu-admin-tools tag (group-writable members); its SHA-256."""
    standin = (REPO / "tests" / "lib" / "standins" / "nvidia_gpu_tools.py").read_bytes()
    with tarfile.open(path, "w:gz") as tar:
        add_member(tar, "%s/%s" % (top, entry), RELEASE_ENTRY, 0o775)
        add_member(tar, "%s/gpu/__init__.py" % top, b"")
        add_member(tar, "%s/gpu/standin.py" % top, standin)
        add_member(tar, "%s/README.md" % top, b"# NVIDIA GPU Admin Tools (test release)\n")
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def tool_release(tmp_path: Path) -> Iterator[Tuple[Server, Dict[str, str]]]:
    served = tmp_path / "served"
    served.mkdir()
    sha = build_tool_release(served / "2025.01.1.tar.gz")
    server = Server(served)
    try:
        yield server, {"gpu_cc_mode_release_url": server.url("2025.01.1.tar.gz"), "gpu_cc_mode_release_sha256": sha,
                       "gpu_cc_mode_release_dir": str(tmp_path / "opt" / "gpu-admin-tools")}
    finally:
        server.close()


def without_tool(role_vars: Dict[str, Any]) -> Dict[str, Any]:
    return {key: value for key, value in role_vars.items() if not key.startswith("gpu_cc_mode_tool")}


def release_lab(tmp_path: Path, bin_dir: Path, release: Dict[str, str], **modes: Any) -> Dict[str, Any]:
    lab = setup(tmp_path, bin_dir, gpus=1, **modes)
    return dict(lab, vars=dict(without_tool(lab["vars"]), **release))


def test_a_release_is_installed_once_and_run_with_its_own_packages(
        tmp_path: Path, bin_dir: Path, tool_release: Tuple[Server, Dict[str, str]]) -> None:
    server, release = tool_release
    lab = release_lab(tmp_path, bin_dir, release, cc="off", ppcie="off")
    installed = Path(release["gpu_cc_mode_release_dir"]) / release["gpu_cc_mode_release_sha256"]
    # a host's Python writes bytecode beside the modules it imports unless told not to
    env = dict(lab["env"], **WRITES_BYTECODE)

    first = run_role(tmp_path, "gpu_cc_mode", dict(lab["vars"], gpu_cc_mode_cc="on"), REPORT, env=env)

    assert first.rc == 0, first.output
    assert sets(calls(lab["state_file"])) == [["0000:03:00.0", "--set-cc-mode=on", "--reset-after-cc-mode-switch"]]
    assert sorted(str(p.relative_to(installed)) for p in installed.rglob("*") if p.is_file()) == [
        "README.md", "gpu/__init__.py", "gpu/standin.py", "nvidia_gpu_tools.py"]
    assert {oct(p.stat().st_mode & 0o777) for p in installed.rglob("*")} <= {"0o755", "0o644"}, \
        "writable by the owner only"
    assert sorted(p.name for p in installed.parent.iterdir()) == [installed.name, installed.name + ".files.json"], \
        "no staging or archive left behind"
    assert json.loads((installed.parent / (installed.name + ".files.json")).read_text()) == {
        name: sha256(installed / name) for name in ("README.md", "gpu/__init__.py", "gpu/standin.py",
                                                    "nvidia_gpu_tools.py")}
    assert server.requests == ["/2025.01.1.tar.gz"]

    again = run_role(tmp_path, "gpu_cc_mode", dict(lab["vars"], gpu_cc_mode_cc="on"), REPORT, env=env, name="again")

    assert again.rc == 0, again.output
    assert again.recap["changed"] == 0 and server.requests == ["/2025.01.1.tar.gz"], "nothing downloaded again"
    assert read_state(lab["state_file"])["devices"]["0000:03:00.0"]["cc"] == "on"


def test_an_installed_release_that_changed_runs_nothing(
        tmp_path: Path, bin_dir: Path, tool_release: Tuple[Server, Dict[str, str]]) -> None:
    server, release = tool_release
    lab = release_lab(tmp_path, bin_dir, release, cc="off", ppcie="off")
    installed = Path(release["gpu_cc_mode_release_dir"]) / release["gpu_cc_mode_release_sha256"]
    record = installed.parent / (installed.name + ".files.json")
    role_vars = dict(lab["vars"], gpu_cc_mode_cc="on")
    assert run_role(tmp_path, "gpu_cc_mode", role_vars, REPORT, env=lab["env"]).rc == 0
    ran = len(calls(lab["state_file"]))
    standin = installed / "gpu" / "standin.py"
    original = standin.read_bytes()

    standin.write_bytes(original + b"\n# edited on the host\n")
    (installed / "gpu" / "extra.py").write_text("")
    (installed / "README.md").unlink()
    changed = run_role(tmp_path, "gpu_cc_mode", role_vars, REPORT, env=lab["env"], name="changed")

    assert changed.rc != 0
    assert ("%s is not what was installed from the archive with SHA-256 %s: gpu/extra.py, gpu/standin.py, README.md "
            "changed, appeared or went away since. Nothing was run; find out what changed it, then remove %s and %s "
            "to install the release again" % (installed, release["gpu_cc_mode_release_sha256"], installed, record)) \
        in changed.output
    assert len(calls(lab["state_file"])) == ran, "the tool did not run"
    assert standin.read_bytes() != original and server.requests == ["/2025.01.1.tar.gz"], "nothing was repaired"

    record.unlink()
    unrecorded = run_role(tmp_path, "gpu_cc_mode", role_vars, REPORT, env=lab["env"], name="unrecorded")

    assert unrecorded.rc != 0
    assert ("%s has no record of what was installed (%s): an older version of this role installed it, or the record "
            "was removed. Nothing was run; remove %s to install the release again" % (installed, record, installed)) \
        in unrecorded.output
    assert len(calls(lab["state_file"])) == ran


def test_a_release_with_another_sha256_installs_and_runs_nothing(
        tmp_path: Path, bin_dir: Path, tool_release: Tuple[Server, Dict[str, str]]) -> None:
    _server, release = tool_release
    wrong = hashlib.sha256(b"another archive").hexdigest()
    lab = release_lab(tmp_path, bin_dir, dict(release, gpu_cc_mode_release_sha256="sha256:" + wrong.upper()))

    result = run_role(tmp_path, "gpu_cc_mode", dict(lab["vars"], gpu_cc_mode_cc="on"), REPORT, env=lab["env"])

    assert result.rc != 0
    assert "gpu-admin-tools was not installed from %s, nothing was run" % release["gpu_cc_mode_release_url"] \
        in result.output
    assert "did not match %s" % wrong in result.output
    assert "(gpu_cc_mode_release_sha256 must be the SHA-256 of 2025.01.1.tar.gz)" in result.output
    assert calls(lab["state_file"]) == []
    assert list(Path(release["gpu_cc_mode_release_dir"]).iterdir()) == [], "no file left behind"


def test_an_archive_without_the_tool_installs_nothing(
        tmp_path: Path, bin_dir: Path, tool_release: Tuple[Server, Dict[str, str]]) -> None:
    server, release = tool_release
    sha = build_tool_release(tmp_path / "served" / "other.tar.gz", entry="other_tool.py")
    other = dict(release, gpu_cc_mode_release_url=server.url("other.tar.gz"), gpu_cc_mode_release_sha256=sha)
    lab = release_lab(tmp_path, bin_dir, other)

    result = run_role(tmp_path, "gpu_cc_mode", dict(lab["vars"], gpu_cc_mode_cc="on"), REPORT, env=lab["env"])

    assert result.rc != 0
    assert ("other.tar.gz has no nvidia_gpu_tools.py at its top or one directory down; it is not a gpu-admin-tools "
            "release") in result.output
    assert calls(lab["state_file"]) == []
    assert list(Path(release["gpu_cc_mode_release_dir"]).iterdir()) == []


def test_check_mode_says_what_it_would_install_and_downloads_nothing(
        tmp_path: Path, bin_dir: Path, tool_release: Tuple[Server, Dict[str, str]]) -> None:
    server, release = tool_release
    lab = release_lab(tmp_path, bin_dir, release)

    result = run_role(tmp_path, "gpu_cc_mode", dict(lab["vars"], gpu_cc_mode_cc="on"), REPORT, check=True,
                      env=lab["env"])

    assert result.rc == 0, result.output
    assert "Would install gpu-admin-tools from %s into %s/%s; the modes are queried once it is installed" % (
        release["gpu_cc_mode_release_url"], release["gpu_cc_mode_release_dir"],
        release["gpu_cc_mode_release_sha256"]) in result.output
    assert server.requests == [] and calls(lab["state_file"]) == []
    assert not Path(release["gpu_cc_mode_release_dir"]).exists()


def test_a_tool_and_a_release_together_are_refused(
        tmp_path: Path, bin_dir: Path, tool_release: Tuple[Server, Dict[str, str]]) -> None:
    server, release = tool_release
    lab = setup(tmp_path, bin_dir, gpus=1)

    both = run_role(tmp_path, "gpu_cc_mode", dict(lab["vars"], gpu_cc_mode_cc="on", **release), REPORT,
                    env=lab["env"], name="both")
    short = run_role(tmp_path, "gpu_cc_mode", dict(without_tool(lab["vars"]), gpu_cc_mode_cc="on", **dict(
        release, gpu_cc_mode_release_sha256="abc")), REPORT, env=lab["env"], name="short")

    assert both.rc != 0 and short.rc != 0
    assert ("gpu_cc_mode_tool and gpu_cc_mode_release_url are both set: give the path of an installed "
            "nvidia_gpu_tools.py or a release to install, not both") in both.output
    assert 'gpu_cc_mode_release_sha256 is "abc": give the SHA-256 of the archive at' in short.output
    assert server.requests == [] and calls(lab["state_file"]) == []


# --- credentials in the release URL (issue 17) --------------------------------------------------------------
# A URL with user-info or a signed query: the secrets must appear nowhere in the output (stdout and stderr),
# in check mode, on a failed download and on a successful one, at verbosity 0 and 1 (-v, ANSIBLE_VERBOSITY).
SECRETS = ("s3cr3t-passw0rd", "AKIAFAKECREDENTIAL", "f00dfacesignature", "sigvalue123")


def secret_url(server: Server, name: str) -> str:
    port = server.httpd.server_address[1]
    return ("http://builder:%s@127.0.0.1:%d/%s?X-Amz-Credential=%s&X-Amz-Signature=%s&sig=%s"
            % (SECRETS[0], port, name, SECRETS[1], SECRETS[2], SECRETS[3]))


def assert_no_secret(output: str) -> None:
    leaked = [secret for secret in SECRETS if secret in output]
    assert not leaked, "secrets %s printed:\n%s" % (leaked, output)


@pytest.mark.parametrize("verbosity", ["0", "1"])
def test_release_url_credentials_are_never_printed(
        tmp_path: Path, bin_dir: Path, tool_release: Tuple[Server, Dict[str, str]], verbosity: str) -> None:
    server, release = tool_release
    url = secret_url(server, "2025.01.1.tar.gz")
    shown = "http://***@127.0.0.1:%d/2025.01.1.tar.gz?X-Amz-Credential=***&X-Amz-Signature=***&sig=***" % (
        server.httpd.server_address[1])
    lab = release_lab(tmp_path, bin_dir, dict(release, gpu_cc_mode_release_url=url))
    env = dict(lab["env"], ANSIBLE_VERBOSITY=verbosity)

    preview = run_role(tmp_path, "gpu_cc_mode", dict(lab["vars"], gpu_cc_mode_cc="on"), REPORT, check=True, env=env,
                       name="preview")
    assert preview.rc == 0, preview.output
    assert "Would install gpu-admin-tools from %s into" % shown in preview.output
    assert_no_secret(preview.output)

    wrong = hashlib.sha256(b"another archive").hexdigest()
    failed = run_role(tmp_path, "gpu_cc_mode", dict(lab["vars"], gpu_cc_mode_cc="on", gpu_cc_mode_release_sha256=wrong),
                      REPORT, env=env, name="failed")
    assert failed.rc != 0
    assert "gpu-admin-tools was not installed from %s, nothing was run" % shown in failed.output, failed.output
    assert "did not match %s" % wrong in failed.output, failed.output
    assert_no_secret(failed.output)
    assert list(Path(release["gpu_cc_mode_release_dir"]).iterdir()) == [], "no file left behind"

    installed = run_role(tmp_path, "gpu_cc_mode", dict(lab["vars"], gpu_cc_mode_cc="on"), REPORT, env=env,
                         name="installed")
    assert installed.rc == 0, installed.output
    assert server.requests and all(request.startswith("/2025.01.1.tar.gz?") for request in server.requests)
    assert_no_secret(installed.output)
