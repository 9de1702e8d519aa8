"""The one Kata configuration model (plugins/plugin_utils/kata_model.py) on Kata's real NVIDIA confidential
configurations (../shared/fixtures/kata/, rendered from the 3.32.0 and 4.1.0 templates): every reader of a
configuration and its config.d/ drop-ins (the action's merge, kata_measurement_inputs for role attestation,
kata_pod_overhead for role kata) sees the same values, merged as the Go runtime merges them.

The rule followed: kata-containers src/runtime/pkg/katautils/config.go, decodeDropIns (entries of config.d/ in
os.ReadDir order, i.e. by file name) and updateFromDropIn (each key a drop-in sets replaces the value before it;
[hypervisor.<name>] keeps the keys the drop-in does not set), tag 2.5.0, the same at 3.32.0 and 4.1.0. The drop-in
names are kata-deploy's (tools/packaging/kata-deploy/binary/src/artifacts/install.rs, write_common_drop_ins).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from ansible.errors import AnsibleFilterError

from ansible_collections.confidential_gpu.host.plugins.filter.kata import kata_pod_overhead
from ansible_collections.confidential_gpu.host.plugins.plugin_utils.kata_measurement import kata_measurement_inputs
from ansible_collections.confidential_gpu.host.plugins.plugin_utils import kata_model, toml_file

SNP_FILES = ["configuration-qemu-nvidia-gpu-snp.kata-3.32.0.toml", "configuration-qemu-nvidia-gpu-snp.kata-4.1.0.toml"]
CONFIG = "/opt/kata/share/defaults/kata-containers/runtimes/qemu-nvidia-gpu-snp/configuration-qemu-nvidia-gpu-snp.toml"
CONFIG_D = CONFIG.rsplit("/", 1)[0] + "/config.d/"
# Given out of name order on purpose: the runtime reads them by name, so 50- wins over 30-.
DROPINS = {
    "50-user-overrides.toml": '[hypervisor.qemu]\nkernel_params = "user=1"\ndefault_memory = 4096\n',
    "30-kernel-params.toml": '[hypervisor.qemu]\nkernel_params = "deploy=1"\ndefault_vcpus = 3\n',
    "10-installation-prefix.toml": '[hypervisor.qemu]\nkernel = "/opt/other/vmlinux.container"\n',
}


@pytest.mark.parametrize("name", SNP_FILES)
def test_every_reader_sees_the_dropins_merged_by_name(shared_fixtures: Path, name: str) -> None:
    text = (shared_fixtures / "kata" / name).read_text()
    base = kata_model.parse(text, name)
    layers = [(dropin, kata_model.parse(body, dropin)) for dropin, body in DROPINS.items()]
    merged = kata_model.effective_config(base, layers)
    qemu = merged["hypervisor"]["qemu"]
    assert qemu["kernel_params"] == "user=1", "the drop-in last by name wins, whatever order it was given in"
    assert (qemu["default_memory"], qemu["default_vcpus"]) == (4096, 3)
    assert qemu["kernel"] == "/opt/other/vmlinux.container"
    assert qemu["firmware"] == base["hypervisor"]["qemu"]["firmware"], "keys no drop-in sets stay the base's"
    assert merged["agent"] == base["agent"] and merged["runtime"] == base["runtime"]

    # role attestation, through the filter (drop-ins as the role slurps them: path and content)
    inputs = kata_measurement_inputs(text, dropins=[{"path": CONFIG_D + d, "content": b} for d, b in DROPINS.items()],
                                     name="kata-qemu-nvidia-gpu-snp", host_cpus=8, kata_version="3.32.0")
    assert (inputs["kernel_params"], inputs["default_vcpus"], inputs["kernel"]) == \
        (qemu["kernel_params"], qemu["default_vcpus"], qemu["kernel"])
    # role kata's RuntimeClass overhead (a confidential guest: memory fixed at boot)
    files = dict({CONFIG: text}, **{CONFIG_D + d: b for d, b in DROPINS.items()})
    overhead = kata_pod_overhead(files, CONFIG, {"memory": "0Mi", "cpu": "0"})
    assert overhead["podFixed"] == {"memory": "4096Mi", "cpu": "3"}, overhead


def test_a_dropin_that_is_not_toml_is_named_by_every_reader(shared_fixtures: Path) -> None:
    """kata_pod_overhead said "<config> (or a file of its config.d/) is not valid TOML" before: now the file."""
    text = (shared_fixtures / "kata" / SNP_FILES[1]).read_text()
    broken = {CONFIG_D + "50-user-overrides.toml": "[hypervisor.qemu\n"}
    with pytest.raises(AnsibleFilterError, match=r"config\.d/50-user-overrides\.toml is not valid TOML .*Kata"):
        kata_pod_overhead(dict({CONFIG: text}, **broken), CONFIG, {})
    with pytest.raises(AnsibleFilterError, match=r"config\.d/50-user-overrides\.toml is not valid TOML"):
        kata_measurement_inputs(text, dropins=[{"path": p, "content": c} for p, c in broken.items()],
                                kata_version="4.1.0")
    with pytest.raises(toml_file.TomlError, match=r"^config\.d/x\.toml is not valid TOML \(.*\); fix the file, Kata "):
        kata_model.parse("[hypervisor.qemu\n", "config.d/x.toml")


def test_arrays_and_strings_are_replaced_and_the_dropins_beside_the_config_are_taken() -> None:
    files = {CONFIG: "", CONFIG_D + "b.toml": "", CONFIG_D + "a.toml": "", "/elsewhere/config.d/c.toml": "",
             CONFIG_D + "sub/d.toml": ""}
    assert [name for name, _text in kata_model.dropins_beside(files, CONFIG)] == ["a.toml", "b.toml"]
    base = {"agent": {"kata": {"kernel_modules": ["a"], "dial_timeout": 1}}}
    merged = kata_model.apply_dropins(base, [("z", {"agent": {"kata": {"kernel_modules": ["b"]}}})])
    assert merged == {"agent": {"kata": {"kernel_modules": ["b"], "dial_timeout": 1}}}
    assert base["agent"]["kata"]["kernel_modules"] == ["a"], "the base is not changed in place"
