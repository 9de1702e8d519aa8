"""playbooks/capture.yml and the host_capture module (issue 20, point 1): a capture holds what the info modules
and prepare.yml --check read and nothing else, its manifest's sha256s are its files', and the info modules and
prepare --check replay it from its top directory exactly as they read the source tree."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any, Dict, List, Set

import pytest
import yaml
from conftest import COLLECTIONS, REPO, module_path, run_module_process

sys.path.insert(0, str(REPO / "tests" / "lib"))
sys.path.insert(0, str(REPO / "plugins" / "module_utils"))
from capture_archive import extract  # noqa: E402
from fake_sysfs import build_tree, functions_from_dump  # noqa: E402
from fake_sriov import KernelStandIn  # noqa: E402
from host_capture import NOT_CAPTURED, PREPARE_FILES  # noqa: E402
from host_critical_tree import write  # noqa: E402
from prepare_run import lab_prepare_variables, playbook, prepared_lab, recap_changed  # noqa: E402
from tree_state import tree_state  # noqa: E402

from ansible_collections.confidential_gpu.host.plugins.module_utils import hugepages, pci_driver_persist, sriov  # noqa: E402

# Files on the source host that no info module reads: none may reach a capture.
SECRETS = {
    "/etc/shadow": "root:$6$salt$hash:19000:0:99999:7:::\n",
    "/root/.ssh/id_rsa": "-----BEGIN OPENSSH PRIVATE KEY-----\nsecret\n-----END OPENSSH PRIVATE KEY-----\n",
    "/etc/confidential-gpu/site-token": "token=not-for-captures\n",
    "/etc/systemd/system/vault-agent.service": "[Service]\nEnvironment=VAULT_TOKEN=not-for-captures\n",
    "/etc/default/grub.d/.site-password.cfg": "GRUB_PASSWORD=not-for-captures\n",
}
# What prepare --check is asked for on the capture and on the source: 32 2M pages per node where the host has 16.
MORE_HUGEPAGES = [{"size": "2M", "node": 0, "count": 32}, {"size": "2M", "node": 1, "count": 32}]
RELEASE = "6.8.0-49-generic"


def cc_host_files(root: Path) -> None:
    """What cc_host_info reads on an Intel TDX host, beside the lab VM's PCI tree, and the planted secrets."""
    files = {
        "/proc/sys/kernel/osrelease": RELEASE + "\n",
        "/proc/meminfo": "MemTotal:       16314408 kB\nHugePages_Total:       0\nHugepagesize:       2048 kB\n",
        "/sys/module/kvm_intel/parameters/tdx": "Y\n",
        "/sys/module/vfio_pci/parameters/ids": "\n",
        "/sys/devices/virtual/iommu/dmar0/intel-iommu/version": "1:0\n",
        "/sys/firmware/acpi/tables/DMAR": "DMAR",
        "/lib/modules/%s/modules.builtin" % RELEASE: "kernel/drivers/vfio/vfio.ko\n",
        "/lib/modules/%s/modules.dep" % RELEASE: "kernel/drivers/vfio/pci/vfio-pci.ko: kernel/drivers/vfio/vfio.ko\n"
                                                "kernel/fs/ext4/ext4.ko: kernel/fs/jbd2/jbd2.ko\n",
        "/dev/kvm": "",
        "/dev/vfio/vfio": "",
    }
    for host_path, text in {**files, **SECRETS}.items():
        write(root, host_path, text)
    (root / "sys/class/iommu").mkdir(parents=True, exist_ok=True)
    os.symlink("../../devices/virtual/iommu/dmar0", root / "sys/class/iommu/dmar0")


def source_host(root: Path, bin_dir: Path) -> Path:
    """The lab VM after prepare (tests/lib/prepare_run.py: PCI, SR-IOV, hugepages, host-critical devices, GRUB
    files under /etc) with the facts of a TDX host and the planted secrets, and the files prepare.yml writes
    there (units, binding files, their programs): written by prepare itself."""
    prepared_lab(root)
    cc_host_files(root)
    with KernelStandIn(root):
        proc = playbook(REPO / "playbooks/prepare.yml", "-e", json.dumps(lab_prepare_variables(root, bin_dir)))
    assert proc.returncode == 0 and recap_changed(proc) > 0, proc.stdout + proc.stderr
    return root


def standin_tools(target: Path) -> Path:
    """The stand-in boot tools of tests/lib/standins (as conftest's bin_dir, for a module-scoped fixture)."""
    shutil.copytree(REPO / "tests" / "lib" / "standins", target)
    for path in target.iterdir():
        path.chmod(0o755)
    return target


def capture_playbook(*extra: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, ANSIBLE_CONFIG=str(REPO / "ansible.cfg"), ANSIBLE_NOCOLOR="1")
    command = [str(Path(sys.executable).with_name("ansible-playbook")), str(REPO / "playbooks/capture.yml"), *extra]
    return subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=300, check=False)


@pytest.fixture(scope="module")
def captured(tmp_path_factory: pytest.TempPathFactory) -> Dict[str, Path]:
    """The source tree, and the capture.yml run over it, fetched and unpacked."""
    base = tmp_path_factory.mktemp("capture")
    source = source_host(base / "host", standin_tools(base / "bin"))
    proc = capture_playbook("-e", "confidential_gpu_root=%s" % source, "-e", "capture_dir=%s" % (base / "captures"))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    archive = base / "captures" / "localhost.tar.xz"
    return {"source": source, "archive": archive, "top": extract(archive, base / "unpacked"), "bin": base / "bin"}


def manifest_of(top: Path) -> Dict[str, Any]:
    return json.loads((top / "CAPTURE.json").read_text())


def test_manifest_names_host_kernel_version_and_each_files_sha256(captured: Dict[str, Path]) -> None:
    top = captured["top"]
    manifest = manifest_of(top)
    version = yaml.safe_load((REPO / "galaxy.yml").read_text())["version"]
    assert (manifest["name"], manifest["kernel"], manifest["collection_version"]) == ("localhost", RELEASE, version)
    on_disk = {str(path.relative_to(top)): hashlib.sha256(path.read_bytes()).hexdigest()
               for path in top.rglob("*") if path.is_file() and not path.is_symlink() and path.name != "CAPTURE.json"}
    assert manifest["files"] == on_disk
    assert manifest["links"] == {str(path.relative_to(top)): os.readlink(path)
                                 for path in top.rglob("*") if path.is_symlink()}
    assert "root/sys/bus/pci/devices/0000:00:03.0" in manifest["links"]


def test_nothing_the_modules_do_not_read_is_captured(captured: Dict[str, Path]) -> None:
    root = captured["top"] / "root"
    names = {str(path.relative_to(root)) for path in root.rglob("*")}
    assert not (root / "root").exists(), sorted(names)[:20]
    # of /etc, /boot and /usr: the boot configuration and what prepare wrote, read back by prepare --check
    outside = (name for name in names if name.startswith(("etc/", "boot/", "usr/")) and not (root / name).is_dir())
    assert sorted(outside) == [
        "boot/grub/grub.cfg", "etc/confidential-gpu/hugepages.conf", "etc/confidential-gpu/sriov.conf",
        "etc/default/grub", "etc/driverctl.d/pci-0000:02:00.0", "etc/driverctl.d/pci-0000:02:00.1", "etc/os-release",
        "etc/systemd/system/confidential-gpu-hugepages.service", "etc/systemd/system/confidential-gpu-sriov.service",
        "etc/systemd/system/multi-user.target.wants/confidential-gpu-sriov.service",
        "etc/systemd/system/sysinit.target.wants/confidential-gpu-hugepages.service",
        "etc/udev/rules.d/70-confidential-gpu-vfio.rules", "usr/local/libexec/confidential-gpu/pci-override",
        "usr/local/libexec/confidential-gpu/sriov-apply", "usr/local/sbin/confidential-gpu-hugepages"]
    for host_path in SECRETS:
        assert host_path.lstrip("/") not in names
    contents = b"".join(path.read_bytes() for path in captured["top"].rglob("*") if path.is_file())
    assert b"PRIVATE KEY" not in contents and b"not-for-captures" not in contents and b"$6$salt" not in contents
    assert not (root / "proc/self/mountinfo").exists() and not (root / "proc/net").exists()
    # modules.dep is cut to the lines cc_host_info looks for
    assert (root / "lib/modules" / RELEASE / "modules.dep").read_text().splitlines() == [
        "kernel/drivers/vfio/pci/vfio-pci.ko: kernel/drivers/vfio/vfio.ko"]


def without_host_critical(value: Any) -> Any:
    """A result without what only the live host can say (NOT_CAPTURED): host_critical marks and their warnings."""
    if isinstance(value, dict):
        return {key: without_host_critical(item) for key, item in value.items() if "host_critical" not in key}
    if isinstance(value, list):
        return [without_host_critical(item) for item in value]
    return value


def test_info_modules_replay_the_capture_from_its_top_directory(captured: Dict[str, Path], tmp_path: Path) -> None:
    source, top = captured["source"], captured["top"]
    cc_source = run_module_process("cc_host_info", {"root": str(source)}, tmp_path)
    cc_replay = run_module_process("cc_host_info", {"root": str(top)}, tmp_path)
    assert cc_replay["rc"] == 0 and cc_source["rc"] == 0, cc_replay
    assert cc_source["verdicts"]["tdx_ready"] is True or cc_source["verdicts"]["tdx_ready_reasons"]
    top_warning = ("root %s is the top of a capture made by scripts/capture-host (CAPTURE.json, root/), not a host "
                   "root: read %s instead; pass that as root to silence this" % (top, top / "root"))
    assert cc_replay.pop("warnings") == cc_source.pop("warnings") + [top_warning]
    assert cc_replay.pop("invocation") != cc_source.pop("invocation")
    assert cc_replay == cc_source
    pci_source = run_module_process("pci_topology_info", {"root": str(source)}, tmp_path)
    pci_replay = run_module_process("pci_topology_info", {"root": str(top)}, tmp_path)
    assert pci_replay["rc"] == 0, pci_replay
    assert pci_source["summary"]["functions"] == pci_replay["summary"]["functions"] == 20
    assert [dev for dev in pci_source["devices"] if dev["host_critical"]], "the source tree names host-critical devices"
    assert not [dev for dev in pci_replay["devices"] if dev["host_critical"]], "a capture holds no mounts or routes"
    for key in ("devices", "iommu_groups", "summary"):
        assert without_host_critical(pci_replay[key]) == without_host_critical(pci_source[key]), key


def test_check_mode_writes_nothing_and_plans_the_same_files(captured: Dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "captures"
    proc = capture_playbook("--check", "-e", "confidential_gpu_root=%s" % captured["source"],
                            "-e", "capture_dir=%s" % out)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert not out.exists()
    planned = run_module_process("host_capture", {"root": str(captured["source"]), "name": "localhost",
                                                  "_ansible_check_mode": True}, tmp_path)
    assert planned["rc"] == 0 and planned["dest"] is None, planned
    assert sorted(planned["manifest"]["files"]) == sorted(manifest_of(captured["top"])["files"])


def test_a_missing_dest_directory_is_named(tmp_path: Path) -> None:
    result = run_module_process("host_capture", {"root": str(tmp_path), "name": "x",
                                                 "dest": str(tmp_path / "nowhere" / "c.tar.xz")}, tmp_path)
    assert result["rc"] != 0 and "its directory %s does not exist" % (tmp_path / "nowhere") in result["msg"]
    assert not (tmp_path / "nowhere").exists()


# Every file an info module opens and every directory it lists, below the root it is given (Python's audit
# events, PEP 578): what the modules read, taken from the modules themselves.
AUDIT_HOOK = textwrap.dedent('''
    import os, sys
    _root = os.environ["CAPTURE_AUDIT_ROOT"]
    _log = open(os.environ["CAPTURE_AUDIT_LOG"], "a")
    def _hook(event, args):
        if event in ("open", "os.listdir", "os.scandir") and args and isinstance(args[0], (str, bytes)):
            path = os.fsdecode(args[0])
            if path.startswith(_root + "/"):
                _log.write(path[len(_root):] + "\\n")
                _log.flush()
    sys.addaudithook(_hook)
''')


def paths_read(module: str, root: Path, tmp_path: Path) -> Set[str]:
    hook_dir = tmp_path / "audit"
    hook_dir.mkdir(exist_ok=True)
    (hook_dir / "sitecustomize.py").write_text(AUDIT_HOOK)
    log = tmp_path / ("%s-reads.log" % module)
    args = tmp_path / ("%s-args.json" % module)
    args.write_text(json.dumps({"ANSIBLE_MODULE_ARGS": {"root": str(root)}}))
    env = dict(os.environ, PYTHONPATH="%s:%s" % (hook_dir, COLLECTIONS), CAPTURE_AUDIT_ROOT=str(root),
               CAPTURE_AUDIT_LOG=str(log))
    proc = subprocess.run([sys.executable, str(module_path(module)), str(args)], env=env, capture_output=True,
                          text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return set(log.read_text().splitlines())


def missing_from_capture(source: Path, top: Path, read: Set[str]) -> List[str]:
    """The paths a module read on the source that exist there but not in the capture (NOT_CAPTURED aside)."""
    return sorted(path for path in read
                  if os.path.lexists(str(source) + path) and not os.path.lexists(str(top / "root") + path)
                  and not path.startswith(NOT_CAPTURED) and path not in (p.rstrip("/") for p in NOT_CAPTURED))


@pytest.mark.parametrize("module", ["cc_host_info", "pci_topology_info"])
def test_the_capture_holds_everything_the_module_reads(captured: Dict[str, Path], module: str,
                                                       tmp_path: Path) -> None:
    read = paths_read(module, captured["source"], tmp_path)
    assert "/proc/cmdline" in read or module == "pci_topology_info", sorted(read)[:20]
    assert missing_from_capture(captured["source"], captured["top"], read) == []


def test_a_real_machine_from_an_lspci_dump_replays(shared_fixtures: Path, tmp_path: Path) -> None:
    """The pciutils corpus's whole X58 machine (53 functions, ACS on 4), captured by the playbook: every config
    space byte replays."""
    source = build_tree(tmp_path / "host", functions_from_dump(
        (shared_fixtures / "lspci-dumps" / "tree-asus-p6t6.txt").read_text()))
    proc = capture_playbook("-e", "confidential_gpu_root=%s" % source, "-e", "capture_dir=%s" % (tmp_path / "out"))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    top = extract(tmp_path / "out" / "localhost.tar.xz", tmp_path / "unpacked")
    live = run_module_process("pci_topology_info", {"root": str(source)}, tmp_path)
    replay = run_module_process("pci_topology_info", {"root": str(top)}, tmp_path)
    assert replay["summary"]["functions"] == manifest_of(top)["pci_functions"] == 53
    assert replay["devices"] == live["devices"] and replay["iommu_groups"] == live["iommu_groups"]
    assert missing_from_capture(source, top, paths_read("pci_topology_info", source, tmp_path)) == []


def test_the_capture_holds_nothing_the_modules_do_not_read(captured: Dict[str, Path], prepare_audit: Dict[str, Any],
                                                           tmp_path: Path) -> None:
    """Every file captured is one a module opens: on the source, or on a copy without config space (so the identity
    attributes are read instead) and with vfio_pci not loaded (so modules.dep is read), or one prepare --check
    reads on the source; device nodes and ACPI tables are empty files whose presence is what the modules test."""
    other = tmp_path / "other"
    shutil.copytree(captured["source"], other, symlinks=True)
    for config in other.glob("sys/devices/**/config"):
        config.unlink()
    shutil.rmtree(other / "sys/module/vfio_pci")
    source_top = str(captured["source"])
    read: Set[str] = {os.path.realpath(source_top + path)[len(source_top):] for path in prepare_audit["read"]}
    read |= prepare_audit["read"]
    for source in (captured["source"], other):
        for module in ("cc_host_info", "pci_topology_info"):
            (tmp_path / source.name).mkdir(exist_ok=True)
            paths = paths_read(module, source, tmp_path / source.name)
            read |= paths | {os.path.realpath(str(source) + path)[len(str(source)):] for path in paths}
    root = captured["top"] / "root"
    captured_files = {"/" + str(path.relative_to(root)) for path in root.rglob("*")
                      if path.is_file() and not path.is_symlink()}
    existence_only = {path for path in captured_files if path.startswith(("/dev/", "/sys/firmware/acpi/tables/"))
                      or (path.startswith(("/etc/modprobe.d/", "/etc/modules-load.d/")) and path not in read)}
    assert existence_only >= {"/dev/kvm", "/dev/vfio/vfio", "/sys/firmware/acpi/tables/DMAR"}
    assert sorted(captured_files - existence_only - read) == []


# prepare.yml's modules besides: every path they test with os.stat or os.lstat (os.path.exists, isfile, ...), for
# files whose presence is what they read (grub.cfg, a unit's enablement link).
STAT_HOOK = textwrap.dedent('''
    def _logged(call):
        def stat(path, *args, **kwargs):
            if isinstance(path, (str, bytes)) and os.fsdecode(path).startswith(_root + "/"):
                _log.write(os.fsdecode(path)[len(_root):] + "\\n")
                _log.flush()
            return call(path, *args, **kwargs)
        return stat
    os.stat, os.lstat = _logged(os.stat), _logged(os.lstat)
''')


def prepare_check(root: Path, bin_dir: Path, audit: Path = None) -> subprocess.CompletedProcess:
    """prepare.yml --check --diff on ``root`` asking for MORE_HUGEPAGES; with ``audit`` (a directory), every path
    its processes open, list or stat below ``root`` is logged to audit/reads.log."""
    env = dict(os.environ, ANSIBLE_CONFIG=str(REPO / "ansible.cfg"), ANSIBLE_NOCOLOR="1")
    if audit is not None:
        audit.mkdir(parents=True, exist_ok=True)
        (audit / "sitecustomize.py").write_text(AUDIT_HOOK + STAT_HOOK)
        env.update(PYTHONPATH="%s:%s" % (audit, COLLECTIONS), CAPTURE_AUDIT_ROOT=str(root),
                   CAPTURE_AUDIT_LOG=str(audit / "reads.log"))
    variables = lab_prepare_variables(root, bin_dir, hugepages_pools=MORE_HUGEPAGES)
    command = [str(Path(sys.executable).with_name("ansible-playbook")), str(REPO / "playbooks/prepare.yml"),
               "--check", "--diff", "-e", json.dumps(variables)]
    return subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=300, check=False)


@pytest.fixture(scope="module")
def prepare_audit(captured: Dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Dict[str, Any]:
    """prepare --check on the source tree, every path it reads recorded (PEP 578 audit hooks, and os.stat)."""
    audit = tmp_path_factory.mktemp("prepare-audit")
    proc = prepare_check(captured["source"], captured["bin"], audit)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return {"proc": proc, "read": set((audit / "reads.log").read_text().splitlines())}


def task_outcomes(stdout: str) -> List[str]:
    """Each task's name and its outcome lines (changed/ok/skipping/failed), in order; diff hunks' +/- lines."""
    lines = []
    for line in stdout.splitlines():
        if line.startswith("TASK [") or re.match(r"(changed|ok|skipping|failed|fatal): \[", line):
            lines.append(line.split(" => ")[0])
        elif re.match(r"[+-](?![+-]{2} )", line):
            lines.append(line)
    return lines


def test_prepare_check_replays_the_capture_from_its_top_directory(captured: Dict[str, Path],
                                                                  prepare_audit: Dict[str, Any]) -> None:
    """prepare.yml --check with confidential_gpu_root the capture's top directory: what it would change on the
    capture is what it would change on the source, and the capture is left as it was, byte for byte."""
    top, source_run = captured["top"], prepare_audit["proc"]
    before = tree_state(top)
    mtimes = {path: path.lstat().st_mtime for path in top.rglob("*")}
    replay = prepare_check(top, captured["bin"])
    assert replay.returncode == 0, replay.stdout + replay.stderr
    assert recap_changed(replay) == recap_changed(source_run) > 0, replay.stdout
    assert task_outcomes(replay.stdout) == task_outcomes(source_run.stdout)
    assert tree_state(top) == before and {path: path.lstat().st_mtime for path in top.rglob("*")} == mtimes


def test_prepare_without_check_refuses_a_capture(captured: Dict[str, Path], tmp_path: Path) -> None:
    top = tmp_path / "capture"
    shutil.copytree(captured["top"], top, symlinks=True)
    before = tree_state(top)
    proc = playbook(REPO / "playbooks/prepare.yml", "-e", json.dumps(lab_prepare_variables(top, captured["bin"])))
    assert proc.returncode != 0
    assert "%s is the top of a capture (CAPTURE.json): prepare replays it with --check only" % top in proc.stdout
    assert tree_state(top) == before


def test_the_capture_holds_everything_prepare_check_reads(captured: Dict[str, Path],
                                                          prepare_audit: Dict[str, Any]) -> None:
    """Every file or link prepare --check opens or stats on the source is in the capture. Directories it only
    stats or lists are not: a capture holds a directory where it holds something below it (an empty GRUB drop-in
    directory reads as an absent one), and the device directories reached through /sys/class/block, net and
    graphics are host-critical lookups (NOT_CAPTURED)."""
    source = str(captured["source"])
    read = {path for path in prepare_audit["read"]
            if os.path.islink(source + path) or not os.path.isdir(source + path)}
    assert {"/etc/default/grub", "/boot/grub/grub.cfg", "/etc/driverctl.d/pci-0000:02:00.0"} <= read
    assert missing_from_capture(captured["source"], captured["top"], read) == []


def test_prepare_files_are_the_names_the_modules_give_them() -> None:
    """host_capture.py names prepare's managed files itself (it loads without the collection, for
    scripts/capture-host): they are the modules' own constants."""
    managed = {hugepages.CONFIG_PATH, hugepages.SCRIPT_PATH, sriov.CONFIG_FILE, sriov.SCRIPT_FILE,
               pci_driver_persist.UDEV_RULES, pci_driver_persist.HELPER, pci_driver_persist.MODPROBE_CONF,
               pci_driver_persist.INITRAMFS_TOOLS_HOOK, pci_driver_persist.DRACUT_CONF}
    assert managed <= set(PREPARE_FILES)
