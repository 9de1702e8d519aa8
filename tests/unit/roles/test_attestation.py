"""Role confidential_gpu.host.attestation end to end: ansible-playbook on this machine (local connection),
a Kata installation laid out in a temporary directory, the real sev-snp-measure on the controller.

Known answers come from sev-snp-measure's own command line on the same files; the firmware is Debian's
OVMF (package ``ovmf``) and, where kernel hashes are measured, the test firmware tests/lib/snp_firmware.py
derives from it (no Debian release packages the AmdSevX64 build Kata ships).
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional

import pytest
from conftest import REPO

sys.path.insert(0, str(REPO / "tests" / "lib"))
from snp_firmware import DEBIAN_OVMF, with_kernel_hashes  # noqa: E402

PLAYBOOK = """---
- name: Compute SNP reference values
  hosts: localhost
  gather_facts: false
  roles:
    - role: confidential_gpu.host.attestation
"""
CONFIG = """# Kata configuration laid out for the test
[hypervisor.qemu]
path = "{root}/bin/qemu-system-x86_64-snp-experimental"
kernel = "{root}/share/kata-containers/vmlinuz-confidential.container"
initrd = "{root}/share/kata-containers/kata-containers-initrd-confidential.img"
firmware = "{firmware}"
confidential_guest = true
sev_snp_guest = true
kernel_params = "{kernel_params}"
default_vcpus = 2
default_maxvcpus = 8
disable_guest_selinux = true
"""
# The Kata release whose composition of the command line the role follows in these tests.
KATA_VERSION = "4.1.0"
MEASURE = [sys.executable, "-m", "sevsnpmeasure.cli"]


@pytest.fixture(scope="module")
def sev_snp_measure() -> List[str]:
    proc = subprocess.run(MEASURE + ["--version"], capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        pytest.skip("sev-snp-measure is not installed in the test Python (requirements.txt pins it): "
                    + (proc.stderr.strip().splitlines() or ["no output"])[-1])
    return MEASURE


@pytest.fixture(scope="module")
def ovmf() -> Path:
    if not DEBIAN_OVMF.is_file():
        pytest.skip("%s is absent: install the Debian package ovmf (scripts/apt-packages.txt)" % DEBIAN_OVMF)
    return DEBIAN_OVMF


@pytest.fixture
def amdsev(ovmf: Path, tmp_path: Path) -> Path:
    return with_kernel_hashes(ovmf, tmp_path / "AMDSEV.fd")


def kata_tree(root: Path, firmware: Path, kernel_params: str = "agent.log=info", dropin: Optional[str] = None) -> Path:
    """A Kata installation: configuration, kernel and initrd (their bytes are only hashed)."""
    share = root / "share" / "kata-containers"
    share.mkdir(parents=True, exist_ok=True)
    (share / "vmlinuz-confidential.container").write_bytes(b"kernel image " * 4096)
    (share / "kata-containers-initrd-confidential.img").write_bytes(b"initrd " * 2048)
    config_dir = root / "share" / "defaults" / "kata-containers"
    config_dir.mkdir(parents=True, exist_ok=True)
    config = config_dir / "configuration-qemu-snp.toml"
    config.write_text(CONFIG.format(root=root, firmware=firmware, kernel_params=kernel_params))
    if dropin is not None:
        (config_dir / "config.d").mkdir(exist_ok=True)
        (config_dir / "config.d" / "50-test.toml").write_text(dropin)
    return config


def run_role(tmp_path: Path, variables: Dict, *extra: str) -> subprocess.CompletedProcess:
    playbook = tmp_path / "attestation.yml"
    playbook.write_text(PLAYBOOK)
    var_file = tmp_path / "vars.json"
    defaults = {"attestation_output_dir": str(tmp_path / "out"), "attestation_work_dir": str(tmp_path / "work"),
                "attestation_kata_version": KATA_VERSION}
    var_file.write_text(json.dumps(dict(defaults, **variables)))
    env = dict(os.environ, ANSIBLE_CONFIG=str(REPO / "ansible.cfg"), ANSIBLE_NOCOLOR="1")
    command = [str(Path(sys.executable).with_name("ansible-playbook")), str(playbook), "-e", "@%s" % var_file, *extra]
    return subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=300, check=False)


def recap(proc: subprocess.CompletedProcess) -> Dict[str, int]:
    match = re.search(r"localhost\s*:\s*ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)", proc.stdout)
    assert match, proc.stdout + proc.stderr
    return dict(zip(["ok", "changed", "unreachable", "failed"], map(int, match.groups())))


def cli(measure: List[str], firmware: Path, vcpus: int, kernel: Optional[Path] = None,
        initrd: Optional[Path] = None, append: Optional[str] = None) -> str:
    args = measure + ["--mode", "snp", "--vcpus", str(vcpus), "--vcpu-type", "EPYC-v4", "--ovmf", str(firmware)]
    if kernel:
        args += ["--kernel", str(kernel), "--append", append or ""]
        if initrd:
            args += ["--initrd", str(initrd)]
    return subprocess.run(args, capture_output=True, text=True, check=True).stdout.strip()


def message_values(path: Path) -> Dict[str, List[str]]:
    message = json.loads(path.read_text())
    assert set(message) == {"version", "type", "payload"} and message["type"] == "sample"
    return json.loads(base64.b64decode(message["payload"]))


def test_known_answer_idempotence_and_check_mode(sev_snp_measure: List[str], amdsev: Path, tmp_path: Path) -> None:
    root = tmp_path / "kata"
    config = kata_tree(root, amdsev)
    classes = [{"name": "kata-qemu-snp", "config": str(config)}]
    variables = {"attestation_runtime_classes": classes, "attestation_vcpu_counts": [1, 4],
                 "attestation_cmdline_source": "config"}

    check = run_role(tmp_path, variables, "--check", "--diff")
    assert check.returncode == 0, check.stdout + check.stderr
    assert not list((tmp_path / "out").rglob("*.json")), "check mode writes no reference values"
    assert recap(check)["changed"] > 0

    first = run_role(tmp_path, variables)
    assert first.returncode == 0, first.stdout + first.stderr
    index = json.loads((tmp_path / "out" / "localhost" / "index.json").read_text())
    record = index["measurements"][0]
    kernel = root / "share" / "kata-containers" / "vmlinuz-confidential.container"
    initrd = root / "share" / "kata-containers" / "kata-containers-initrd-confidential.img"
    assert record["inputs"]["cmdline_source"] == "config"
    cmdline = record["inputs"]["cmdline"]
    # Kata 4.1.0 (qemu.go kernelParameters): no nr_cpus= for a confidential guest; an initrd guest has no root
    # or systemd arguments; katautils/config.go SetKernelParams adds scsi_mod.scan=none before kernel_params.
    assert cmdline.endswith("console=hvc0 console=hvc1 quiet panic=1 selinux=0 scsi_mod.scan=none agent.log=info")
    expected = {vcpus: cli(sev_snp_measure, amdsev, vcpus, kernel, initrd, cmdline) for vcpus in (1, 4)}
    assert expected[1] != expected[4], "the vCPU count is measured"
    for vcpus, measurement in expected.items():
        values = message_values(tmp_path / "out" / "localhost" / ("kata-qemu-snp-%dvcpu.json" % vcpus))
        assert values == {"snp_launch_measurement": [measurement]}
    assert [(r["vcpus"], r["measurement"]) for r in index["measurements"]] == sorted(expected.items())
    assert record["inputs"]["kernel"]["sha256"] == hashlib.sha256(kernel.read_bytes()).hexdigest()
    assert record["inputs"]["vcpu_type"] == "EPYC-v4"
    assert message_values(tmp_path / "out" / "localhost" / "all.json") == {
        "snp_launch_measurement": [expected[1], expected[4]]}
    assert message_values(tmp_path / "out" / "all-hosts.json") == {
        "snp_launch_measurement": sorted(expected.values())}

    second = run_role(tmp_path, variables)
    assert second.returncode == 0, second.stdout + second.stderr
    assert recap(second)["changed"] == 0, second.stdout


def test_command_line_and_dropins_change_the_measurement(
        sev_snp_measure: List[str], amdsev: Path, tmp_path: Path) -> None:
    root = tmp_path / "kata"
    config = kata_tree(root, amdsev, dropin='[hypervisor.qemu]\nkernel_params = "agent.log=debug"\n')
    variables = {"attestation_runtime_classes": [{"name": "kata-qemu-snp", "config": str(config)}],
                 "attestation_cmdline_source": "config", "attestation_measurement_encodings": ["hex", "base64"]}
    proc = run_role(tmp_path, variables)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    index = json.loads((tmp_path / "out" / "localhost" / "index.json").read_text())
    (record,) = index["measurements"]
    assert record["vcpus"] == 2, "default_vcpus of the configuration"
    assert record["inputs"]["cmdline"].endswith("agent.log=debug"), "the drop-in replaces kernel_params"
    values = message_values(tmp_path / "out" / "localhost" / "kata-qemu-snp-2vcpu.json")["snp_launch_measurement"]
    assert values == [record["measurement"], base64.b64encode(bytes.fromhex(record["measurement"])).decode()]

    given = dict(variables, attestation_runtime_classes=[
        {"name": "kata-qemu-snp", "config": str(config), "cmdline": record["inputs"]["cmdline"] + " x=1"}])
    proc = run_role(tmp_path, given)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    changed = json.loads((tmp_path / "out" / "localhost" / "index.json").read_text())["measurements"][0]
    assert changed["inputs"]["cmdline_source"] == "given"
    assert changed["measurement"] != record["measurement"], "the command line is measured"
    kernel = root / "share" / "kata-containers" / "vmlinuz-confidential.container"
    initrd = root / "share" / "kata-containers" / "kata-containers-initrd-confidential.img"
    assert changed["measurement"] == cli(sev_snp_measure, amdsev, 2, kernel, initrd, changed["inputs"]["cmdline"])


@pytest.mark.parametrize("linked", [False, True], ids=["file", "symlink"])
def test_dropins_are_read_where_kata_reads_them(sev_snp_measure: List[str], amdsev: Path, tmp_path: Path,
                                                linked: bool) -> None:
    """kata-deploy's layout (tools/packaging/kata-deploy/binary/src/artifacts/install.rs setup_runtime_directory,
    3.29.0 to 4.1.0): the shipped configuration-<shim>.toml is a relative link to
    runtimes/<shim>/configuration-<shim>.toml, and the drop-ins (role kata's among them) are in
    runtimes/<shim>/config.d. Kata resolves the link before it looks for config.d (katautils/config.go
    decodeConfig -> ResolvePath, decodeDropIns), so that drop-in is part of the measured line. Kata reads each
    entry with os.ReadFile (updateFromDropIn, 4.1.0), so a drop-in that is a symlink (say to a file an admin keeps
    in /etc) counts as well."""
    root = tmp_path / "kata"
    shipped = kata_tree(root, amdsev)
    shim = "qemu-nvidia-gpu-snp"
    defaults = shipped.parent
    shim_dir = defaults / "runtimes" / shim
    (shim_dir / "config.d").mkdir(parents=True)
    real = shim_dir / ("configuration-%s.toml" % shim)
    real.write_text(shipped.read_text())
    link = defaults / ("configuration-%s.toml" % shim)
    link.symlink_to("runtimes/%s/configuration-%s.toml" % (shim, shim))
    dropin = shim_dir / "config.d" / "40-confidential-gpu.toml"
    if linked:
        kept = tmp_path / "etc-kata" / dropin.name
        kept.parent.mkdir()
        dropin.symlink_to(kept)
        dropin = kept
    dropin.write_text('[hypervisor.qemu]\nkernel_params = "agent.log=info nvrc.smi.srs=1"\n')
    variables = {"attestation_runtime_classes": [{"name": "kata-qemu-nvidia-gpu-snp", "config": str(link)}],
                 "attestation_cmdline_source": "config"}
    proc = run_role(tmp_path, variables)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (record,) = json.loads((tmp_path / "out" / "localhost" / "index.json").read_text())["measurements"]
    assert record["inputs"]["cmdline"].endswith("scsi_mod.scan=none agent.log=info nvrc.smi.srs=1")
    kernel = root / "share" / "kata-containers" / "vmlinuz-confidential.container"
    initrd = root / "share" / "kata-containers" / "kata-containers-initrd-confidential.img"
    assert record["measurement"] == cli(sev_snp_measure, amdsev, 2, kernel, initrd, record["inputs"]["cmdline"])


def test_unknown_kata_version_is_named(sev_snp_measure: List[str], amdsev: Path, tmp_path: Path) -> None:
    config = kata_tree(tmp_path / "kata", amdsev)
    proc = run_role(tmp_path, {"attestation_runtime_classes": [{"name": "kata-qemu-snp", "config": str(config)}],
                               "attestation_cmdline_source": "config", "attestation_kata_version": "",
                               "attestation_kata_runtime": str(tmp_path / "no-kata-runtime")})
    assert proc.returncode != 0
    assert "its kernel command line cannot be composed from %s: the Kata version is not known" % config in proc.stdout
    assert not list((tmp_path / "out").rglob("*.json"))


def test_running_sandbox_gives_the_exact_command_line(
        sev_snp_measure: List[str], amdsev: Path, tmp_path: Path) -> None:
    root = tmp_path / "kata"
    config = kata_tree(root, amdsev)
    qemu = root / "bin" / "qemu-system-x86_64-snp-experimental"
    kernel = root / "share" / "kata-containers" / "vmlinuz-confidential.container"
    initrd = root / "share" / "kata-containers" / "kata-containers-initrd-confidential.img"
    append = "tsc=reliable quiet panic=1 nr_cpus=8 agent.log=info from=running"
    # A process that looks like Kata's QEMU in /proc/<pid>/cmdline (argv[0] is the hypervisor path;
    # it is this Python, sleeping).
    sandbox = subprocess.Popen(
        [str(qemu), "-c", "import time; time.sleep(120)", "-cpu", "EPYC-v4,pmu=off",
         "-object", "sev-snp-guest,id=snp,cbitpos=51,reduced-phys-bits=1,kernel-hashes=on",
         "-kernel", str(kernel), "-initrd", str(initrd), "-append", append, "-bios", str(amdsev), "-smp", "3"],
        executable=sys.executable)
    try:
        time.sleep(0.5)
        proc = run_role(tmp_path, {"attestation_runtime_classes": [{"name": "kata-qemu-snp", "config": str(config)}],
                                   "attestation_cmdline_source": "running"})
    finally:
        sandbox.kill()
        sandbox.wait()
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (record,) = json.loads((tmp_path / "out" / "localhost" / "index.json").read_text())["measurements"]
    assert (record["inputs"]["cmdline_source"], record["inputs"]["cmdline"]) == ("running", append)
    assert record["inputs"]["running_vcpus"] == 3
    assert record["measurement"] == cli(sev_snp_measure, amdsev, 2, kernel, initrd, append)


def test_no_running_sandbox_is_a_clear_failure(sev_snp_measure: List[str], amdsev: Path, tmp_path: Path) -> None:
    config = kata_tree(tmp_path / "kata", amdsev)
    proc = run_role(tmp_path, {"attestation_runtime_classes": [{"name": "kata-qemu-snp", "config": str(config)}],
                               "attestation_cmdline_source": "running"})
    assert proc.returncode != 0
    assert "runtime class kata-qemu-snp on localhost: no running sandbox of it was found" in proc.stdout
    assert not list((tmp_path / "out").rglob("*.json"))


def test_firmware_without_kernel_hashes_is_named(sev_snp_measure: List[str], ovmf: Path, tmp_path: Path) -> None:
    config = kata_tree(tmp_path / "kata", ovmf)
    proc = run_role(tmp_path, {"attestation_runtime_classes": [{"name": "kata-qemu-snp", "config": str(config)}],
                               "attestation_cmdline_source": "config"})
    assert proc.returncode != 0
    assert "Kernel specified but OVMF metadata doesn't include SNP_KERNEL_HASHES section" in proc.stdout
    assert "%s is not an AMD SEV build of OVMF" % ovmf in proc.stdout


def test_debian_ovmf_without_direct_boot(sev_snp_measure: List[str], ovmf: Path, tmp_path: Path) -> None:
    """A class whose measured kernel is given as empty measures firmware and vCPUs only (Debian's OVMF
    as is): the measurement still follows the vCPU count and equals the tool's."""
    config = kata_tree(tmp_path / "kata", ovmf)
    classes = [{"name": "ovmf-only", "config": str(config), "kernel": "", "initrd": "", "cmdline": ""}]
    proc = run_role(tmp_path, {"attestation_runtime_classes": classes, "attestation_vcpu_counts": [1, 2]})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    records = json.loads((tmp_path / "out" / "localhost" / "index.json").read_text())["measurements"]
    assert [r["measurement"] for r in records] == [cli(sev_snp_measure, ovmf, 1), cli(sev_snp_measure, ovmf, 2)]
    assert records[0]["measurement"] != records[1]["measurement"]


@pytest.mark.parametrize(("variables", "message"), [
    ({"attestation_runtime_classes": [{"name": "a"}]}, "each with a unique name"),
    ({"attestation_vcpu_counts": [0]}, "attestation_vcpu_counts must be whole numbers of 1 or more"),
    ({"attestation_cmdline_source": "guess"},
     "value of attestation_cmdline_source must be one of: auto, running, config, got: guess"),
])
def test_bad_input_changes_nothing(variables: Dict, message: str, tmp_path: Path) -> None:
    base = {"attestation_runtime_classes": [{"name": "a", "config": str(tmp_path / "none.toml")}]}
    proc = run_role(tmp_path, dict(base, **variables))
    assert proc.returncode != 0
    assert message in proc.stdout
    assert not (tmp_path / "out").exists() and not (tmp_path / "work").exists()


def test_missing_configuration_is_named(sev_snp_measure: List[str], tmp_path: Path) -> None:
    proc = run_role(tmp_path, {"attestation_runtime_classes": [{"name": "a", "config": str(tmp_path / "none.toml")}]})
    assert proc.returncode != 0
    assert "runtime class a: %s is not a file on localhost" % (tmp_path / "none.toml") in proc.stdout
