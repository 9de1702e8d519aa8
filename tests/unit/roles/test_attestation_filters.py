"""The attestation role's filters (plugins/filter/kata_measurement_inputs.py, their code in
plugins/plugin_utils/kata_measurement.py) on Kata's real configurations, real QEMU command lines and the Trustee RVPS
message shape."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest
from ansible.errors import AnsibleFilterError
from conftest import REPO

from ansible_collections.confidential_gpu.host.plugins.plugin_utils import kata_measurement as kmi

SNP_CONFIGS = ["configuration-qemu-nvidia-gpu-snp.kata-3.32.0.toml",
               "configuration-qemu-nvidia-gpu-snp.kata-4.1.0.toml"]
NO_VERITY = '[hypervisor.qemu]\nkernel_verity_params = ""\n'
MINIMAL = """
[hypervisor.qemu]
path = "/opt/kata/bin/qemu-system-x86_64-snp-experimental"
kernel = "/opt/kata/share/kata-containers/vmlinuz-confidential.container"
initrd = "/opt/kata/share/kata-containers/kata-containers-initrd-confidential.img"
firmware = "/opt/kata/share/ovmf/AMDSEV.fd"
confidential_guest = true
sev_snp_guest = true
kernel_params = "agent.log=info"
default_vcpus = %s
default_maxvcpus = %s
"""
MEASUREMENT = "ab" * 48


@pytest.mark.parametrize("name", SNP_CONFIGS)
def test_real_nvidia_snp_configuration(shared_fixtures: Path, name: str) -> None:
    text = (shared_fixtures / "kata" / name).read_text()
    version = name.split(".kata-")[1][:-len(".toml")]
    inputs = kmi.kata_measurement_inputs(text, name="kata-qemu-nvidia-gpu-snp", host_cpus=96, kata_version=version)
    assert inputs["firmware"] == "/opt/kata/share/ovmf/AMDSEV.fd"
    assert inputs["kernel"] == "/opt/kata/share/kata-containers/vmlinuz-nvidia-gpu.container"
    assert inputs["image"] == "/opt/kata/share/kata-containers/kata-containers-nvidia-gpu-confidential.img"
    assert inputs["initrd"] == ""
    assert inputs["hypervisor"] == "/opt/kata/bin/qemu-system-x86_64-snp-experimental"
    assert (inputs["default_vcpus"], inputs["vcpu_type"], inputs["nr_cpus"]) == (1, "EPYC-v4", 96)
    assert inputs["static_sandbox_resource_mgmt"] is True
    assert "default_vcpus" in inputs["annotations"] and "kernel_params" in inputs["annotations"]
    # The rendered fixture holds a placeholder where a release injects the dm-verity root hash:
    # no command line is guessed for it.
    assert inputs["cmdline"] is None
    assert "kernel_verity_params is a placeholder" in inputs["problems"][0]


@pytest.mark.parametrize("name", SNP_CONFIGS)
def test_composed_command_line_of_the_real_configuration(shared_fixtures: Path, name: str) -> None:
    # Kata 3.32.0 and 4.1.0 (qemu.go kernelParameters): root after the arch parameters, the console, quiet and
    # systemd.show_status=false, panic=1, no nr_cpus for a confidential guest, selinux, the systemd unit,
    # scsi_mod.scan=none (virtio-scsi), the agent's, then kernel_params.
    text = (shared_fixtures / "kata" / name).read_text()
    version = name.split(".kata-")[1][:-len(".toml")]
    inputs = kmi.kata_measurement_inputs(text, dropins=[NO_VERITY], name="x", host_cpus=96, kata_version=version)
    words = inputs["cmdline"].split()
    assert words[:12] == list(kmi.KATA_AMD64_KERNEL_PARAMS)
    assert words[12:24] == ["root=/dev/vda1", "rootflags=ro", "rootfstype=erofs", "console=hvc0", "console=hvc1",
                            "quiet", "systemd.show_status=false", "panic=1", "selinux=0",
                            "systemd.unit=kata-containers.target", "systemd.mask=systemd-networkd.service",
                            "systemd.mask=systemd-networkd.socket"]
    assert not any(word.startswith("nr_cpus=") for word in words)
    assert inputs["cmdline"].endswith("cgroup_no_v1=all pci=realloc pci=nocrs pci=assign-busses nvrc.smi.srs=1")
    assert inputs["problems"] == []


def test_captured_command_line_of_a_kata_sandbox() -> None:
    # The -append of a QEMU that Kata 3.9.0 started (tests/fixtures/kata_cmdline/README.md says where from).
    fixtures = REPO / "tests" / "fixtures" / "kata_cmdline"
    config = (fixtures / "kata-3.9.0-qemu-coco-dev.toml").read_text()
    captured = (fixtures / "kata-3.9.0-qemu-coco-dev.append").read_text().strip()
    assert kmi.kata_kernel_cmdline(config, kata_version="3.9.0", host_cpus=4) == captured


def test_nr_cpus_stays_for_confidential_guests_before_3_32() -> None:
    # qemu.go kernelParameters: 3.31.0 always appends nr_cpus=, 3.32.0 skips it for confidential guests.
    base = MINIMAL % (1, 4)
    assert "panic=1 nr_cpus=4 selinux=1" in kmi.kata_kernel_cmdline(base, kata_version="3.31.0")
    assert "panic=1 selinux=1" in kmi.kata_kernel_cmdline(base, kata_version="3.32.0")


def test_agent_arguments_come_before_kernel_params() -> None:
    # katautils/config.go SetKernelParams: defaults, scsi_mod.scan=none, the agent's, then the user's.
    agent = '[agent.kata]\nenable_debug = true\ndebug_console_enabled = true\nlaunch_process_timeout = 6\n'
    line = kmi.kata_kernel_cmdline(MINIMAL % (1, 4) + agent, kata_version="4.1.0")
    assert line.endswith("scsi_mod.scan=none agent.log=debug agent.debug_console agent.debug_console_vport=1026 "
                         "agent.launch_process_timeout=6 agent.log=info")


def test_verity_root_arguments_from_kernel_verity_params() -> None:
    # hypervisor.go GetKernelRootParams (3.27.0 ..): the dm-verity table Kata builds from kernel_verity_params.
    verity = ('[hypervisor.qemu]\nimage = "/i.img"\ninitrd = ""\nrootfs_type = "ext4"\nkernel_verity_params = '
              '"root_hash=768c,salt=63f8,data_blocks=96512,data_block_size=4096,hash_block_size=4096"\n')
    line = kmi.kata_kernel_cmdline(MINIMAL % (1, 1), dropins=[verity], kata_version="3.32.0")
    assert ('pci=lastbus=0 dm-mod.create="dm-verity,,,ro,0 772096 verity 1 /dev/vda1 /dev/vda2 4096 4096 96512 0 '
            'sha256 768c 63f8" root=/dev/dm-0 rootflags=data=ordered,errors=remount-ro ro rootfstype=ext4 '
            'console=hvc0') in line


@pytest.mark.parametrize(("version", "message"), [
    (None, "the Kata version is not known"),
    ("main", "'main' is not a version"),
    ("3.8.0", "composed only for the Go runtime 3.9.0 to 4.1.x"),
    ("4.2.0", "composed only for the Go runtime 3.9.0 to 4.1.x"),
])
def test_unmodelled_versions_are_refused(version: str, message: str) -> None:
    with pytest.raises(AnsibleFilterError, match=message):
        kmi.kata_kernel_cmdline(MINIMAL % (1, 4), kata_version=version)
    inputs = kmi.kata_measurement_inputs(MINIMAL % (1, 4), kata_version=version)
    assert inputs["cmdline"] is None and message.split("'")[-1].strip() in inputs["problems"][0]


def test_dropins_replace_keys_in_path_order() -> None:
    base = MINIMAL % (1, 4)
    dropins = [{"path": "/d/config.d/20-b.toml", "content": '[hypervisor.qemu]\nkernel_params = "second"\n'},
               {"path": "/d/config.d/10-a.toml",
                "content": '[hypervisor.qemu]\nkernel_params = "first"\ndefault_vcpus = 2\n'}]
    inputs = kmi.kata_measurement_inputs(base, dropins=dropins)
    assert inputs["kernel_params"] == "second" and inputs["default_vcpus"] == 2
    assert inputs["firmware"] == "/opt/kata/share/ovmf/AMDSEV.fd", "keys the drop-ins do not set stay"
    slurped = [{"source": "/d/config.d/30.toml", "encoding": "base64",
                "content": base64.b64encode(b'[hypervisor.qemu]\nkernel_params = "third"\n').decode()}]
    assert kmi.kata_measurement_inputs(base, dropins=dropins + slurped)["kernel_params"] == "third"


def test_initrd_guest_has_no_root_arguments() -> None:
    inputs = kmi.kata_measurement_inputs(MINIMAL % (1, 4), host_cpus=8, kata_version="3.31.0")
    assert inputs["initrd"].endswith("initrd-confidential.img")
    assert "root=" not in inputs["cmdline"] and "systemd" not in inputs["cmdline"]
    # disable_guest_selinux is unset, so false in the Go runtime's hypervisor struct: selinux=1.
    assert inputs["cmdline"].endswith(
        "console=hvc1 quiet panic=1 nr_cpus=4 selinux=1 scsi_mod.scan=none agent.log=info")


@pytest.mark.parametrize(("vcpus", "maximum", "host", "expected_vcpus", "expected_nr"), [
    (0, 0, 16, 1, 16), (0.5, 8, 16, 1, 8), (2.5, 64, 16, 3, 16), (4, 4, 16, 4, 4), (1, 0, 384, 1, 240),
])
def test_vcpu_rules(vcpus: float, maximum: int, host: int, expected_vcpus: int, expected_nr: int) -> None:
    inputs = kmi.kata_measurement_inputs(MINIMAL % (vcpus, maximum), host_cpus=host, kata_version="3.31.0")
    assert (inputs["default_vcpus"], inputs["nr_cpus"]) == (expected_vcpus, expected_nr)
    assert "nr_cpus=%d" % expected_nr in inputs["cmdline"]


def test_host_dependent_counts_are_reported_not_guessed() -> None:
    inputs = kmi.kata_measurement_inputs(MINIMAL % (-1, 0), kata_version="3.31.0")
    assert inputs["default_vcpus"] is None and inputs["cmdline"] is None
    assert any("attestation_vcpu_counts" in problem for problem in inputs["problems"])
    assert any("host's CPU count" in problem for problem in inputs["problems"])


def test_tdx_configuration_is_refused(shared_fixtures: Path) -> None:
    text = (shared_fixtures / "kata" / "configuration-qemu-nvidia-gpu-tdx.kata-4.1.0.toml").read_text()
    message = "runtime class kata-qemu-nvidia-gpu-tdx: not an SEV-SNP runtime class"
    with pytest.raises(AnsibleFilterError, match=message):
        kmi.kata_measurement_inputs(text, name="kata-qemu-nvidia-gpu-tdx")


@pytest.mark.parametrize(("text", "message"), [
    ("[hypervisor.qemu\n", "is not valid TOML"),
    ('[hypervisor.clh]\npath = "x"\n', r"no \[hypervisor.qemu\] table \(hypervisors: clh\)"),
    ((MINIMAL % (1, 1)).replace('firmware = "/opt/kata/share/ovmf/AMDSEV.fd"', 'firmware = ""'), "firmware is empty"),
    ((MINIMAL % (1, 1)) + 'image = "/x.img"\n', "both initrd"),
])
def test_bad_configurations_name_the_problem(text: str, message: str) -> None:
    with pytest.raises(AnsibleFilterError, match=message):
        kmi.kata_measurement_inputs(text, name="c")


def test_qemu_command_line_of_a_kata_snp_sandbox() -> None:
    # The shape of the command line Kata's govmm builds for an SNP guest (-object sev-snp-guest with
    # kernel-hashes=on, -bios from the object's file), as /proc/<pid>/cmdline holds it.
    argv = ["/opt/kata/bin/qemu-system-x86_64-snp-experimental", "-name", "sandbox-1",
            "-machine", "q35,accel=kvm,kernel_irqchip=split,confidential-guest-support=snp",
            "-cpu", "EPYC-v4,pmu=off", "-m", "8192M,slots=10,maxmem=1031038M",
            "-object", "sev-snp-guest,id=snp,cbitpos=51,reduced-phys-bits=1,policy=196608,kernel-hashes=on",
            "-kernel", "/opt/kata/share/kata-containers/vmlinuz-nvidia-gpu.container",
            "-append", "tsc=reliable quiet panic=1 nr_cpus=96 root=/dev/vda1 rootflags=ro",
            "-bios", "/opt/kata/share/ovmf/AMDSEV.fd", "-smp", "3,cores=1,threads=1,sockets=96,maxcpus=96"]
    inputs = kmi.qemu_measurement_inputs("\0".join(argv) + "\0")
    assert inputs == {
        "hypervisor": argv[0], "firmware": "/opt/kata/share/ovmf/AMDSEV.fd",
        "kernel": "/opt/kata/share/kata-containers/vmlinuz-nvidia-gpu.container", "initrd": "",
        "cmdline": "tsc=reliable quiet panic=1 nr_cpus=96 root=/dev/vda1 rootflags=ro", "vcpus": 3,
        "vcpu_type": "EPYC-v4", "snp": True, "kernel_hashes": True, "append_given": True,
    }
    assert kmi.qemu_measurement_inputs(["qemu", "-smp", "cpus=2,maxcpus=4"])["vcpus"] == 2
    with pytest.raises(AnsibleFilterError, match="NUL-separated"):
        kmi.qemu_measurement_inputs(42)


def test_sev_snp_measure_arguments() -> None:
    inputs = {"firmware": "/t/AMDSEV.fd", "kernel": "/t/vmlinuz", "initrd": "", "cmdline": "a=b c",
              "vcpu_type": "EPYC-v4", "runtime_class": "r"}
    args = kmi.sev_snp_measure_args(inputs, 2, files={"firmware": "/c/fw", "kernel": "/c/k"})
    assert args == ["--mode", "snp", "--vcpus", "2", "--vcpu-type", "EPYC-v4", "--vmm-type", "QEMU",
                    "--guest-features", "0x1", "--ovmf", "/c/fw", "--output-format", "hex", "--kernel", "/c/k",
                    "--append=a=b c"]
    no_kernel = kmi.sev_snp_measure_args(dict(inputs, kernel="", cmdline=""), 1, vcpu_type="EPYC-Genoa")
    assert "--kernel" not in no_kernel and not any(arg.startswith("--append") for arg in no_kernel)
    assert no_kernel[no_kernel.index("--vcpu-type") + 1] == "EPYC-Genoa"
    with pytest.raises(AnsibleFilterError, match="vcpus must be 1 or more"):
        kmi.sev_snp_measure_args(inputs, 0)


def test_reference_values_in_hex_and_base64() -> None:
    values = kmi.snp_reference_values([MEASUREMENT, MEASUREMENT.upper()], ["hex", "base64"])
    assert values == {"snp_launch_measurement": [MEASUREMENT, base64.b64encode(bytes.fromhex(MEASUREMENT)).decode()]}
    assert kmi.snp_reference_values(MEASUREMENT, name="other") == {"other": [MEASUREMENT]}
    with pytest.raises(AnsibleFilterError, match="has 47 bytes"):
        kmi.snp_reference_values("ab" * 47)
    with pytest.raises(AnsibleFilterError, match="encodings must be hex and/or base64"):
        kmi.snp_reference_values(MEASUREMENT, ["raw"])


def test_rvps_sample_message_shape() -> None:
    # Trustee rvps/src/lib.rs Message {version, payload, type}; the sample extractor base64-decodes the
    # payload into a map of reference-value name to list of values.
    message = kmi.rvps_sample_message({"snp_launch_measurement": [MEASUREMENT]})
    assert set(message) == {"version", "type", "payload"}
    assert (message["version"], message["type"]) == ("0.1.0", "sample")
    assert json.loads(base64.b64decode(message["payload"])) == {"snp_launch_measurement": [MEASUREMENT]}
    assert kmi.rvps_sample_message({"b": ["1"], "a": ["2"]}) == kmi.rvps_sample_message({"a": ["2"], "b": ["1"]})
    with pytest.raises(AnsibleFilterError):
        kmi.rvps_sample_message({})


def test_the_filter_file_hands_each_filter_its_code() -> None:
    """What ansible-core loads (plugins/filter/kata_measurement_inputs.py) offers the six filters, each running the
    code of plugin_utils with the caller's arguments and errors."""
    from ansible_collections.confidential_gpu.host.plugins.filter.kata_measurement_inputs import FilterModule
    filters = FilterModule().filters()
    assert sorted(filters) == sorted(["kata_measurement_inputs", "kata_kernel_cmdline", "qemu_measurement_inputs",
                                      "sev_snp_measure_args", "snp_reference_values", "rvps_sample_message"])
    assert filters["snp_reference_values"](MEASUREMENT, name="other") == {"other": [MEASUREMENT]}
    with pytest.raises(AnsibleFilterError, match="has 47 bytes"):
        filters["snp_reference_values"]("ab" * 47)
