"""kata_runtime_config: the TOML editing on Kata's real configuration files, the merge rules, and the action
end to end through ansible-playbook (local connection, a temporary directory as the target's root).

The configuration files are Kata's NVIDIA confidential ones for 3.32.0 and 4.1.0
(../shared/fixtures/kata/); they are copied into tmp_path by the tests that write.
"""

from __future__ import annotations

import difflib
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any, Dict, List

import pytest
import tomlkit
from conftest import REPO

from ansible.errors import AnsibleFilterError

from ansible_collections.confidential_gpu.host.plugins.filter.kata import kata_pcie_plan, kata_shims_for_host
from ansible_collections.confidential_gpu.host.plugins.plugin_utils.kata_model import (
    KataConfigError,
    check_settings,
    choose_method,
    deep_merge,
    edit_copy,
    effective_config,
    kata_paths,
    merge_kernel_params,
    overridden_later,
    parse_version,
    pcie_keys,
    render_dropin,
    shims_for_host,
    tokens,
    vfio_mode,
)

sys.path.insert(0, str(REPO / "tests" / "lib"))
from fake_sysfs import build_tree  # noqa: E402
from lspci_tree import functions_from_tree  # noqa: E402
from tree_state import tree_state as snapshot  # noqa: E402

KATA_FILES = ["configuration-qemu-nvidia-gpu-snp.kata-3.32.0.toml", "configuration-qemu-nvidia-gpu-snp.kata-4.1.0.toml",
              "configuration-qemu-nvidia-gpu-tdx.kata-3.32.0.toml", "configuration-qemu-nvidia-gpu-tdx.kata-4.1.0.toml"]
HEADER = ["Managed by a test"]
DEFAULTS = "opt/kata/share/defaults/kata-containers"


def kata_file(shared_fixtures: Path, name: str) -> str:
    return (shared_fixtures / "kata" / name).read_text()


# ---------------------------------------------------------------------------
# Editing Kata's own files with tomlkit


@pytest.mark.parametrize("name", KATA_FILES)
def test_managed_copy_changes_values_and_keeps_everything_else(shared_fixtures: Path, name: str) -> None:
    base_text = kata_file(shared_fixtures, name)
    base = tomlkit.parse(base_text).unwrap()
    params = tokens(base["hypervisor"]["qemu"]["kernel_params"]) + ["nvrc.log=debug"]
    changes = {"hypervisor": {"qemu": {"pcie_root_port": 4, "cold_plug_vfio": "root-port", "pcie_switch_port": 0,
                                       "kernel_params": " ".join(params), "default_memory": 32768}},
               "runtime": {"create_container_timeout": 600}}
    edited = edit_copy(base_text, changes, HEADER, name)

    after = tomlkit.parse(edited).unwrap()
    assert after["hypervisor"]["qemu"]["pcie_root_port"] == 4
    assert after["hypervisor"]["qemu"]["pcie_switch_port"] == 0, "a key the base lacks is added to its table"
    assert after["hypervisor"]["qemu"]["kernel_params"].endswith(" nvrc.log=debug")
    assert after["runtime"]["create_container_timeout"] == 600
    for section, keys in changes.items():
        table = after[section] if section == "runtime" else after[section]["qemu"]
        base_table = base[section] if section == "runtime" else base[section]["qemu"]
        for key in keys if section == "runtime" else keys["qemu"]:
            table.pop(key)
            base_table.pop(key, None)
    assert after == base, "every other value is the base's"

    before_lines, after_lines = base_text.splitlines(), edited.splitlines()
    assert after_lines[0] == "# Managed by a test"
    changed_keys = ("pcie_root_port =", "kernel_params =", "default_memory =", "create_container_timeout =")
    for tag, i1, i2, j1, j2 in difflib.SequenceMatcher(a=before_lines, b=after_lines, autojunk=False).get_opcodes():
        if tag == "equal":
            continue
        assert all(line.startswith(changed_keys) for line in before_lines[i1:i2]), before_lines[i1:i2]
        assert all(line.startswith(changed_keys + ("#", "pcie_switch_port =")) or not line
                   for line in after_lines[j1:j2]), after_lines[j1:j2]
    comments = [line for line in before_lines if line.lstrip().startswith("#")]
    assert [line for line in after_lines[2:] if line.lstrip().startswith("#")] == comments


@pytest.mark.parametrize("name", KATA_FILES)
def test_dropin_over_the_base_gives_the_planned_values(shared_fixtures: Path, name: str) -> None:
    base = tomlkit.parse(kata_file(shared_fixtures, name)).unwrap()
    plan = {"cold_plug_vfio": "switch-port", "pcie_root_port": 0, "pcie_switch_port": 8}
    settings = {"hypervisor": {"qemu": pcie_keys(plan, base, "qemu")}}
    params = merge_kernel_params(tokens(base["hypervisor"]["qemu"]["kernel_params"]), ["nvrc.log=debug"], [])
    dropins = [("40-a.toml", tomlkit.parse(render_dropin(settings, HEADER)).unwrap()),
               ("40-a-kernel-params.toml", tomlkit.parse(render_dropin(
                   {"hypervisor": {"qemu": {"kernel_params": " ".join(params)}}}, HEADER)).unwrap())]
    merged = effective_config(base, dropins)
    qemu = merged["hypervisor"]["qemu"]
    assert (qemu["cold_plug_vfio"], qemu["pcie_switch_port"]) == ("switch-port", 8)
    assert tokens(qemu["kernel_params"]) == tokens(base["hypervisor"]["qemu"]["kernel_params"]) + ["nvrc.log=debug"]
    assert merged["runtime"] == base["runtime"] and merged["agent"] == base["agent"]
    assert "hot_plug_vfio" not in settings["hypervisor"]["qemu"], "the NVIDIA configurations do not hot-plug"


@pytest.mark.parametrize("name", ["configuration-qemu-nvidia-gpu-snp.kata-4.1.0.toml",
                                  "configuration-qemu-nvidia-gpu-tdx.kata-3.32.0.toml"])
def test_confidential_classes_plan_ports_as_kata_counts_them_with_iommufd(shared_fixtures: Path, name: str) -> None:
    """Kata's confidential guests take their devices through IOMMUFD (3.26.0 and later refuse the group path), and
    then count one port per device handed over, not per group member: the action plans with that count for the
    real NVIDIA TEE configurations, and with whole groups once a drop-in turns confidential_guest off."""
    base = tomlkit.parse(kata_file(shared_fixtures, name)).unwrap()
    assert base["hypervisor"]["qemu"]["confidential_guest"] is True
    assert vfio_mode(base, "qemu") == "iommufd"
    assert vfio_mode(deep_merge(base, {"hypervisor": {"qemu": {"confidential_guest": False}}}), "qemu") == "group"


def test_render_dropin_writes_tables_by_their_dotted_names() -> None:
    text = render_dropin({"hypervisor": {"qemu": {"pcie_root_port": 2}}, "agent": {"kata": {"dial_timeout": 90}},
                          "runtime": {"enable_debug": True}}, ["one", "", "two"])
    assert text.startswith("# one\n#\n# two\n\n")
    assert "[hypervisor.qemu]\npcie_root_port = 2\n" in text and "[agent.kata]\ndial_timeout = 90\n" in text
    assert "[hypervisor]\n" not in text and "[runtime]\nenable_debug = true\n" in text


# ---------------------------------------------------------------------------
# Merge rules and checks (plain data)


def test_kernel_params_keep_the_base_first_and_add_once() -> None:
    base = tokens("cgroup_no_v1=all pci=realloc pci=nocrs pci=assign-busses nvrc.smi.srs=1")
    assert merge_kernel_params(base, ["pci=realloc", "nvrc.log=debug", "nvrc.log=debug"], []) == base + [
        "nvrc.log=debug"]
    assert merge_kernel_params(base, [], ["pci"]) == ["cgroup_no_v1=all", "nvrc.smi.srs=1"]
    assert merge_kernel_params(base, ["pci=noaer"], ["pci=nocrs"]) == [
        "cgroup_no_v1=all", "pci=realloc", "pci=assign-busses", "nvrc.smi.srs=1", "pci=noaer"]


@pytest.mark.parametrize(("present", "absent", "message"), [
    (["a b"], [], "kernel parameter 'a b' must be one word"),
    ([""], [], "kernel parameter '' must be one word"),
    (["x=1"], ["x=1"], "kernel parameter x=1 is both in kernel_params and kernel_params_absent"),
    # a '"' opens a quoted value in the guest kernel's parser (lib/cmdline.c next_arg) and swallows what follows
    (['a=\\"]'], [], "holds a double quote, a backslash or a character outside printable ASCII"),
    (['console="hvc0'], [], "holds a double quote"),
    (["x=caf\u00e9"], [], "outside printable ASCII"),
    ([], ["a\\b"], "holds a double quote, a backslash"),
])
def test_kernel_params_refuse_what_kata_would_split(present: List[str], absent: List[str], message: str) -> None:
    with pytest.raises(KataConfigError, match=re.escape(message)):
        merge_kernel_params(["a"], present, absent)


def test_earlier_dropins_count_later_ones_are_reported() -> None:
    base = {"hypervisor": {"qemu": {"kernel_params": "a b", "pcie_root_port": 0}}}
    earlier = [("30-kernel-params.toml", {"hypervisor": {"qemu": {"kernel_params": "a b https_proxy=x"}}})]
    before = effective_config(base, earlier)
    assert merge_kernel_params(tokens(before["hypervisor"]["qemu"]["kernel_params"]), ["c"], []) == [
        "a", "b", "https_proxy=x", "c"]
    later = [("50-user-overrides.toml", {"hypervisor": {"qemu": {"pcie_root_port": 3}}})]
    warnings = overridden_later({"hypervisor": {"qemu": {"pcie_root_port": 8}}}, later)
    assert warnings == ["config.d/50-user-overrides.toml sets hypervisor.qemu.pcie_root_port = 3 after this "
                        "module's drop-in, so that value wins; rename one of them or drop the key there"]


def test_arrays_are_replaced_not_appended() -> None:
    """Kata-deploy's devkit drop-in re-lists the base's array for this reason."""
    merged = effective_config({"agent": {"kata": {"kernel_modules": ["a"]}}},
                              [("10.toml", {"agent": {"kata": {"kernel_modules": ["b"]}}})])
    assert merged["agent"]["kata"]["kernel_modules"] == ["b"]


def test_hot_plug_is_turned_off_when_cold_plug_is_planned() -> None:
    plan = {"cold_plug_vfio": "root-port", "pcie_root_port": 2, "pcie_switch_port": 0}
    effective = {"hypervisor": {"qemu": {"hot_plug_vfio": "root-port"}}}
    assert pcie_keys(plan, effective, "qemu")["hot_plug_vfio"] == "no-port"
    assert pcie_keys(None, effective, "qemu") == {}


@pytest.mark.parametrize(("settings", "message"), [
    ({"hypervisor": {"qemu": {"default_memory": "16G"}}},
     "settings hypervisor.qemu.default_memory: base.toml holds a number (8192), the value given is a string ('16G')"),
    ({"hypervisor": {"clh": {"default_memory": 1}}}, "settings hypervisor.clh: base.toml has [hypervisor.qemu]"),
    ({"hypervisor": {"qemu": {"kernel_params": "x"}}}, "settings hypervisor.qemu.kernel_params is set by this module"),
    ({"hypervisor": {"qemu": {"cold_plug_vfio": "no-port"}}}, "settings hypervisor.qemu.cold_plug_vfio is set by"),
    ({"network": {"x": 1}}, "settings section 'network' is not one of Kata's"),
    ({"runtime": {"enable_debug": None}}, "settings runtime.enable_debug is null"),
    ({"runtime": {"experimental": [{"a": 1}]}}, "settings runtime.experimental: array items must be"),
    ({"hypervisor": {"qemu": 3}}, "settings hypervisor.qemu must be a table of keys"),
    ({"runtime": {"a": {"b": 1}}}, "settings runtime.a.b is nested too deep"),
])
def test_bad_settings_are_refused(settings: Dict[str, Any], message: str) -> None:
    base = {"hypervisor": {"qemu": {"default_memory": 8192, "kernel_params": ""}}, "agent": {"kata": {}},
            "runtime": {"enable_debug": False, "experimental": []}}
    with pytest.raises(KataConfigError, match=re.escape(message)):
        check_settings(settings, "qemu", base, "base.toml")


def test_unknown_key_is_a_warning() -> None:
    warnings = check_settings({"runtime": {"enable_debugg": True}}, "qemu", {"hypervisor": {"qemu": {}}}, "b.toml")
    assert warnings == ["settings runtime.enable_debugg: b.toml has no such key; Kata ignores unknown keys (with a "
                        "warning in its log), check the spelling"]


@pytest.mark.parametrize(("method", "version", "layout", "expected"), [
    ("auto", "3.27.0", False, "dropin"),
    ("auto", "kata-runtime  : 4.1.0\n   commit   : abc\n   OCI specs: 1.1.0", False, "dropin"),
    ("auto", "2.4.3", True, "copy"),
    ("auto", None, True, "dropin"),
    ("copy", "4.1.0", True, "copy"),
])
def test_method_follows_the_release(method: str, version: Any, layout: bool, expected: str) -> None:
    assert choose_method(method, version, layout)[0] == expected


def test_dropins_since_the_release_whose_runtime_reads_config_d() -> None:
    """The Go runtime reads config.d/ beside its configuration since 2.5.0 (decodeDropIns, an excerpt of
    upstream's config.go in tests/fixtures/kata-upstream); 3.27 only moved kata-deploy to per-shim directories."""
    excerpt = (REPO / "tests/fixtures/kata-upstream/dropins-2.5.0-config.go.txt").read_text()
    first = re.search(r"first tag containing it: (\d+\.\d+\.\d+); tag (\d+\.\d+\.\d+) has no", excerpt)
    assert first and 'dropInDir := filepath.Join(configDir, "config.d")' in excerpt
    assert "err = decodeDropIns(resolved, &tomlConf)" in excerpt
    since, before = first.groups()
    assert choose_method("auto", since, False)[0] == "dropin"
    assert choose_method("auto", "3.26.0", False)[0] == "dropin"
    assert choose_method("auto", before, False)[0] == "copy"


@pytest.mark.parametrize(("version", "message"), [
    (None, "cannot tell which Kata release is installed: pass kata_version"),
    ("latest", "kata_version 'latest' holds no version number"),
])
def test_method_needs_a_version_or_the_layout(version: Any, message: str) -> None:
    with pytest.raises(KataConfigError, match=re.escape(message)):
        choose_method("auto", version, False)


def test_versions_and_paths() -> None:
    assert parse_version("3.27") == (3, 27, 0) and parse_version("") is None
    paths = kata_paths("/opt/kata/", "qemu-nvidia-gpu-tdx")
    assert paths["config_d"] == "/opt/kata/share/defaults/kata-containers/runtimes/qemu-nvidia-gpu-tdx/config.d"
    assert paths["shipped"] == "/opt/kata/share/defaults/kata-containers/configuration-qemu-nvidia-gpu-tdx.toml"
    with pytest.raises(KataConfigError, match="runs on runtime-rs"):
        kata_paths("/opt/kata", "qemu-nvidia-gpu-runtime-rs")
    with pytest.raises(KataConfigError, match="is not a Kata shim name"):
        kata_paths("/opt/kata", "../etc")


def test_filters_refuse_what_they_cannot_plan() -> None:
    with pytest.raises(AnsibleFilterError, match="kata_pcie_plan: PCIe mode 'both' is not one of"):
        kata_pcie_plan({"devices": [], "iommu_groups": []}, "gpu", "both")
    with pytest.raises(AnsibleFilterError, match="kata_shims_for_host: expects the registered result"):
        kata_shims_for_host("snp")
    assert kata_pcie_plan({"devices": [], "iommu_groups": []}, "gpu")["lines"][-1] == \
        "  error: no device selected: give PCI addresses or selectors (gpu, nvswitch, nic, gpu_nics)"


def test_shims_follow_host_readiness() -> None:
    assert shims_for_host({"verdicts": {"snp_ready": True, "tdx_ready": False}}) == ["qemu-nvidia-gpu-snp", "qemu-snp"]
    assert shims_for_host({"verdicts": {"snp_ready": False, "tdx_ready": True}}) == ["qemu-nvidia-gpu-tdx", "qemu-tdx"]
    assert shims_for_host({"verdicts": {}}) == ["qemu-nvidia-gpu"]
    assert shims_for_host({"verdicts": {"tdx_ready": True}}, gpu=False) == ["qemu-tdx"]
    assert kata_shims_for_host({"verdicts": {"snp_ready": True}}, False) == ["qemu-snp"]


# ---------------------------------------------------------------------------
# The action, end to end


PLAYBOOK = """
- name: Kata runtime configuration on a tree
  hosts: localhost
  connection: local
  gather_facts: false
  tasks:
    - name: Read the host's topology
      confidential_gpu.host.pci_topology_info:
        root: "{{ tree }}"
      register: topology

    - name: Configure the shim
      confidential_gpu.host.kata_runtime_config:
        shim: qemu-nvidia-gpu-snp
        root: "{{ target }}"
        kata_version: "{{ version }}"
        pcie_mode: "{{ mode }}"
        topology: "{{ topology }}"
        devices: "{{ devices }}"
        kernel_params: [nvrc.log=debug]
        settings:
          hypervisor:
            qemu:
              default_memory: 32768
      register: kata

    - name: Keep the result, with the plan the filter makes from the same facts
      ansible.builtin.copy:
        content: "{{ kata | combine({'filter_plan': topology
                                      | confidential_gpu.host.kata_pcie_plan(devices, mode, vfio_mode)}) | to_json }}"
        dest: "{{ out }}"
      delegate_to: localhost
      check_mode: false
      diff: false
      changed_when: false
"""


class Target:
    """A temporary target: a Kata install with the 3.32 SNP configuration, and a host tree to plan on."""

    def __init__(self, tmp_path: Path, shared_fixtures: Path) -> None:
        self.tmp = tmp_path
        self.root = tmp_path / "target"
        self.defaults = self.root / DEFAULTS
        self.defaults.mkdir(parents=True)
        self.shipped = self.defaults / "configuration-qemu-nvidia-gpu-snp.toml"
        shutil.copyfile(shared_fixtures / "kata" / KATA_FILES[0], self.shipped)
        self.shipped.chmod(0o644)
        self.shim_dir = self.defaults / "runtimes" / "qemu-nvidia-gpu-snp"
        self.config_d = self.shim_dir / "config.d"
        tree = (shared_fixtures / "gpu-servers/lspci-tv_lenovo-sd665n-v3_4xH100_cx7.txt").read_text()
        plain = (shared_fixtures / "gpu-servers/lspci_lenovo-sd665n-v3_4xH100_cx7.txt").read_text()
        build_tree(tmp_path / "host", functions_from_tree(tree, plain))
        self.playbook = tmp_path / "kata.yml"
        self.playbook.write_text(PLAYBOOK)
        self.out = tmp_path / "result.json"

    def run(self, *options: str, version: str = "3.32.0", mode: str = "replicate",
            devices: Any = ("gpu", "gpu_nics")) -> subprocess.CompletedProcess:
        extra = {"tree": str(self.tmp / "host"), "target": str(self.root), "version": version, "mode": mode,
                 "devices": list(devices), "out": str(self.out), "vfio_mode": "iommufd"}
        env = dict(os.environ, ANSIBLE_CONFIG=str(REPO / "ansible.cfg"), ANSIBLE_NOCOLOR="1",
                   ANSIBLE_LOCAL_TEMP=str(self.tmp / "ansible-local"))
        command = [str(Path(sys.executable).with_name("ansible-playbook")), str(self.playbook), "-e", json.dumps(extra),
                   *options]
        return subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=300, check=False)

    def result(self) -> Dict[str, Any]:
        return json.loads(self.out.read_text())


def recap_changed(proc: subprocess.CompletedProcess) -> int:
    return int(re.search(r"localhost\s+: ok=\d+\s+changed=(\d+)", proc.stdout).group(1))


def test_action_check_apply_idempotent(tmp_path: Path, shared_fixtures: Path) -> None:
    target = Target(tmp_path, shared_fixtures)
    before = snapshot(target.root)

    check = target.run("--check", "--diff")
    assert check.returncode == 0, check.stdout + check.stderr
    assert snapshot(target.root) == before, "check mode writes nothing"
    # a confidential configuration (3.32 SNP): Kata takes the devices through IOMMUFD, one port each
    assert "PCIe replicate: cold_plug_vfio=switch-port pcie_root_port=0 pcie_switch_port=8 (8 of 16 ports, " \
        "iommufd: the devices themselves)" in check.stdout, "the plan is printed in check mode"
    assert '+cold_plug_vfio = "switch-port"' in check.stdout and "+pcie_switch_port = 8" in check.stdout
    assert re.search(r'\+kernel_params = "cgroup_no_v1=all .* nvrc.smi.srs=1 nvrc.log=debug"', check.stdout)
    assert recap_changed(check) == 1

    apply = target.run()
    assert apply.returncode == 0, apply.stdout + apply.stderr
    result = target.result()
    assert result["changed"] is True and result["method"] == "dropin"
    assert result["config_path"] == "/%s/runtimes/qemu-nvidia-gpu-snp/configuration-qemu-nvidia-gpu-snp.toml" % DEFAULTS
    assert (target.shim_dir / "configuration-qemu-nvidia-gpu-snp.toml").read_bytes() == target.shipped.read_bytes()
    assert sorted(os.listdir(target.config_d)) == ["40-confidential-gpu-kernel-params.toml", "40-confidential-gpu.toml"]
    settings = tomlkit.parse((target.config_d / "40-confidential-gpu.toml").read_text()).unwrap()
    assert settings == {"hypervisor": {"qemu": {"cold_plug_vfio": "switch-port", "default_memory": 32768,
                                                "pcie_root_port": 0, "pcie_switch_port": 8}}}
    assert result["pcie_plan"]["ports"] == 8 and len(result["pcie_plan"]["layout"]) == 4
    assert result["filter_plan"]["lines"][0] == "PCIe replicate: cold_plug_vfio=switch-port pcie_root_port=0 " \
                                                "pcie_switch_port=8 (8 of 16 ports, iommufd: the devices themselves)"
    assert {key: value for key, value in result["filter_plan"].items() if key != "lines"} == result["pcie_plan"]
    assert result["kernel_params"][-1] == "nvrc.log=debug"
    shipped = str(target.shipped.relative_to(target.root))
    assert snapshot(target.root)[shipped] == before[shipped], "the base is untouched"

    written = snapshot(target.root)
    again = target.run()
    assert again.returncode == 0 and recap_changed(again) == 0, again.stdout
    # --check --diff on the converged host: copy returns its diff as one dict when a file is unchanged
    check_again = target.run("--check", "--diff")
    assert check_again.returncode == 0 and recap_changed(check_again) == 0, check_again.stdout
    assert snapshot(target.root) == written


def test_action_reads_other_dropins_and_switches_method(tmp_path: Path, shared_fixtures: Path) -> None:
    target = Target(tmp_path, shared_fixtures)
    target.config_d.mkdir(parents=True)
    (target.config_d / "30-kernel-params.toml").write_text(
        '[hypervisor.qemu]\nkernel_params = "cgroup_no_v1=all pci=realloc https_proxy=http://proxy:3128"\n')
    (target.config_d / "50-user-overrides.toml").write_text("[hypervisor.qemu]\npcie_switch_port = 2\n")

    apply = target.run(mode="flatten", devices=["0000:06:00.0"])
    assert apply.returncode == 0, apply.stdout + apply.stderr
    result = target.result()
    assert result["kernel_params"] == ["cgroup_no_v1=all", "pci=realloc", "https_proxy=http://proxy:3128",
                                       "nvrc.log=debug"]
    assert any("config.d/50-user-overrides.toml sets hypervisor.qemu.pcie_switch_port = 2" in text
               for text in result["warnings"])
    assert "50-user-overrides.toml sets hypervisor.qemu.pcie_switch_port" in apply.stdout + apply.stderr

    # Kata before 2.5.0: a managed copy; the drop-ins of this module go, the others stay.
    copy = target.run(version="2.4.3", mode="flatten", devices=["0000:06:00.0"])
    assert copy.returncode == 0, copy.stdout + copy.stderr
    result = target.result()
    assert result["method"] == "copy" and sorted(result["removed"]) == [
        "/%s/runtimes/qemu-nvidia-gpu-snp/config.d/40-confidential-gpu%s.toml" % (DEFAULTS, suffix)
        for suffix in ("-kernel-params", "")]
    assert sorted(os.listdir(target.config_d)) == ["30-kernel-params.toml", "50-user-overrides.toml"]
    managed = (target.shim_dir / "configuration-qemu-nvidia-gpu-snp.toml").read_text()
    qemu = tomlkit.parse(managed).unwrap()["hypervisor"]["qemu"]
    assert (qemu["cold_plug_vfio"], qemu["pcie_root_port"], qemu["default_memory"]) == ("root-port", 1, 32768)
    assert qemu["kernel_params"] == "cgroup_no_v1=all pci=realloc pci=nocrs pci=assign-busses nvrc.smi.srs=1 " \
                                    "nvrc.log=debug", "the copy starts from the shipped file, not from drop-ins"
    assert recap_changed(target.run(version="2.4.3", mode="flatten", devices=["0000:06:00.0"])) == 0


def test_action_refuses_bad_input_and_changes_nothing(tmp_path: Path, shared_fixtures: Path) -> None:
    target = Target(tmp_path, shared_fixtures)
    before = snapshot(target.root)
    proc = target.run(devices=["gpu", "nic", "0000:99:00.0"])
    assert proc.returncode != 0
    assert "device 0000:99:00.0 is not on this host" in proc.stdout
    assert snapshot(target.root) == before
    proc = target.run(version="tomorrow")
    assert proc.returncode != 0 and "kata_version 'tomorrow' holds no version number" in proc.stdout
    assert snapshot(target.root) == before


def test_a_base_configuration_that_is_a_symlink_loop_is_named(tmp_path: Path, shared_fixtures: Path) -> None:
    """It failed with slurp's own "Unable to slurp file: {source}"."""
    target = Target(tmp_path, shared_fixtures)
    target.shipped.unlink()
    target.shipped.symlink_to(target.shipped.name)
    before = snapshot(target.root)
    proc = target.run()
    assert proc.returncode != 0
    assert "%s is a symbolic link that leads to no readable file" % target.shipped in proc.stdout, proc.stdout
    assert "Unable to slurp" not in proc.stdout
    assert snapshot(target.root) == before
