"""containerd configuration edits (plugins/plugin_utils/containerd_config.py) and the containerd_runtimes
action that applies them on a host; the role tests (tests/unit/roles/test_kata_install.py) load the results
with a real containerd."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import tomlkit
from conftest import REPO

from ansible_collections.confidential_gpu.host.plugins.plugin_utils import containerd_config as cc
from ansible_collections.confidential_gpu.host.plugins.plugin_utils import toml_file

sys.path.insert(0, str(REPO / "tests" / "lib"))
from role_play import run_tasks_batched  # noqa: E402
from tree_state import tree_state  # noqa: E402

MAIN = """\
# node config
version = 2
root = "/var/lib/containerd"

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "pause"  # pinned
  [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
    runtime_type = "io.containerd.runc.v2"

[plugins."io.containerd.internal.v1.opt"]
  path = "/opt/containerd"
"""

KATA = {"runtime_type": "io.containerd.kata-qemu-nvidia-gpu.v2",
        "runtime_path": "/opt/kata/bin/containerd-shim-kata-v2",
        "pod_annotations": ["io.katacontainers.*"], "privileged_without_host_devices": True,
        "options": {"ConfigPath": "/opt/kata/share/defaults/kata-containers/configuration-qemu-nvidia-gpu.toml"}}


def test_imports_added_after_the_top_level_keys_and_only_once() -> None:
    doc = cc.parse(MAIN, "config.toml")
    assert cc.edit_imports(doc, ["/etc/containerd/conf.d/kata.toml"], [], "config.toml") is True
    text = toml_file.dumps(doc)
    assert text.startswith('# node config\nversion = 2\nroot = "/var/lib/containerd"\n'
                           'imports = ["/etc/containerd/conf.d/kata.toml"]\n\n[plugins.')
    assert text.replace('imports = ["/etc/containerd/conf.d/kata.toml"]\n', "") == MAIN
    assert cc.edit_imports(doc, ["/etc/containerd/conf.d/kata.toml"], [], "config.toml") is False


def test_imports_keep_the_others_in_order_and_remove_only_the_absent() -> None:
    doc = cc.parse('version = 3\nimports = ["/a.toml", "/kata.toml", "/b.toml"]  # mine\n', "c")
    assert cc.edit_imports(doc, ["/c.toml"], ["/kata.toml"], "c") is True
    assert cc.imports_of(doc) == ["/a.toml", "/b.toml", "/c.toml"]
    assert "# mine" in toml_file.dumps(doc)
    assert cc.edit_imports(doc, [], ["/kata.toml"], "c") is False


def test_imports_refuses_contradictions_and_non_lists() -> None:
    with pytest.raises(cc.ConfigError, match="asked to be both in and out of imports"):
        cc.edit_imports(cc.parse("version = 2\n", "c"), ["/x"], ["/x"], "c")
    with pytest.raises(cc.ConfigError, match="c: imports is not a list of paths"):
        cc.edit_imports(cc.parse('version = 2\nimports = "/x"\n', "c"), ["/y"], [], "c")


def test_runtime_table_added_next_to_runc_with_everything_else_kept() -> None:
    doc = cc.parse(MAIN, "config.toml")
    assert cc.edit_runtimes(doc, "io.containerd.grpc.v1.cri", {"kata-qemu-nvidia-gpu": KATA}, [], "c") == \
        ["kata-qemu-nvidia-gpu"]
    text = toml_file.dumps(doc)
    assert '  sandbox_image = "pause"  # pinned\n' in text and "# node config" in text
    plain = tomlkit.parse(text).unwrap()
    runtimes = plain["plugins"]["io.containerd.grpc.v1.cri"]["containerd"]["runtimes"]
    assert runtimes == {"runc": {"runtime_type": "io.containerd.runc.v2"}, "kata-qemu-nvidia-gpu": KATA}
    assert plain["plugins"]["io.containerd.internal.v1.opt"] == {"path": "/opt/containerd"}
    assert cc.edit_runtimes(doc, "io.containerd.grpc.v1.cri", {"kata-qemu-nvidia-gpu": KATA}, [], "c") == []


def test_runtime_table_that_differs_is_replaced_whole_and_absent_ones_removed() -> None:
    stale = MAIN + ('\n[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.kata-qemu-nvidia-gpu]\n'
                    '  runtime_type = "io.containerd.kata-qemu-nvidia-gpu.v2"\n  snapshotter = "nydus"\n'
                    '[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.kata-old]\n'
                    '  runtime_type = "io.containerd.kata-old.v2"\n')
    doc = cc.parse(stale, "c")
    changed = cc.edit_runtimes(doc, "io.containerd.grpc.v1.cri", {"kata-qemu-nvidia-gpu": KATA}, ["kata-old"], "c")
    assert changed == ["kata-qemu-nvidia-gpu", "kata-old"]
    runtimes = cc.runtimes_in(cc.parse(toml_file.dumps(doc), "c"), "io.containerd.grpc.v1.cri")
    assert runtimes == {"runc": {"runtime_type": "io.containerd.runc.v2"}, "kata-qemu-nvidia-gpu": KATA}


def test_runtime_tables_created_in_a_file_without_a_cri_section() -> None:
    doc = cc.parse("version = 3\n", "c")
    cc.edit_runtimes(doc, "io.containerd.cri.v1.runtime", {"kata-qemu-nvidia-gpu": KATA}, [], "c")
    text = toml_file.dumps(doc)
    assert '\n[plugins."io.containerd.cri.v1.runtime".containerd.runtimes.kata-qemu-nvidia-gpu]\n' in text
    assert "\n[plugins]\n" not in text, "intermediate tables are not written as empty headers"
    assert tomlkit.parse(text).unwrap()["plugins"]["io.containerd.cri.v1.runtime"]["containerd"]["runtimes"] == \
        {"kata-qemu-nvidia-gpu": KATA}


def test_bad_requests_and_files_are_named() -> None:
    with pytest.raises(cc.ConfigError, match=r"/etc/containerd/config.toml is not valid TOML"):
        cc.parse("version = 2\n[plugins\n", "/etc/containerd/config.toml")
    with pytest.raises(cc.ConfigError, match="configuration version 1; .* Set version = 2"):
        cc.cri_plugin_id(cc.config_version(cc.parse("[plugins.cri]\n", "c"), "c"), "c")
    with pytest.raises(cc.ConfigError, match="version = 'two' is not an integer"):
        cc.config_version(cc.parse('version = "two"\n', "c"), "c")
    with pytest.raises(cc.ConfigError, match=r"runtimes\.kata-q must be the handler's table .* not a str "
                                             r"\('io.containerd.kata.v2'\)"):
        cc.edit_runtimes(cc.parse(MAIN, "c"), "io.containerd.grpc.v1.cri", {"kata-q": "io.containerd.kata.v2"},
                         [], "c")
    with pytest.raises(cc.ConfigError, match="runtime handler name 'kata qemu' is not valid"):
        cc.edit_runtimes(cc.parse(MAIN, "c"), "io.containerd.grpc.v1.cri", {"kata qemu": KATA}, [], "c")
    with pytest.raises(cc.ConfigError, match=r'c: plugins\."io.containerd.grpc.v1.cri"\.containerd is not a table'):
        cc.edit_runtimes(cc.parse('version = 2\n[plugins."io.containerd.grpc.v1.cri"]\ncontainerd = 1\n', "c"),
                         "io.containerd.grpc.v1.cri", {"kata-q": KATA}, [], "c")


def test_ours_is_told_by_the_first_line() -> None:
    assert cc.is_ours("# Managed by confidential_gpu.host (role kata): ...\nversion = 3\n")
    assert not cc.is_ours("version = 3\n# Managed by confidential_gpu.host\n")


def test_action_reads_fails_and_changes_nothing_on_bad_input(tmp_path: Path) -> None:
    """The action plugin run by ansible-playbook: reading a missing file is no error, editing one is; a
    file that is not TOML fails naming it and stays as it was."""
    (tmp_path / "etc").mkdir()
    broken = tmp_path / "etc" / "broken.toml"
    broken.write_text("version = 2\n[plugins\n")
    (tmp_path / "etc" / "ok.toml").write_text("version = 2\n")
    results = tmp_path / "results.json"
    playbook = tmp_path / "play.yml"
    playbook.write_text("""\
- hosts: localhost
  connection: local
  gather_facts: false
  tasks:
    - {name: read missing, confidential_gpu.host.containerd_runtimes: {path: /etc/none.toml, root: "%(root)s"},
       register: read_missing}
    - {name: edit missing, confidential_gpu.host.containerd_runtimes: {path: /etc/none.toml, root: "%(root)s",
       imports_present: [/x.toml]}, register: edit_missing, ignore_errors: true}
    - {name: edit broken, confidential_gpu.host.containerd_runtimes: {path: /etc/broken.toml, root: "%(root)s",
       imports_present: [/x.toml]}, register: edit_broken, ignore_errors: true}
    - {name: a string for a handler, confidential_gpu.host.containerd_runtimes: {path: /etc/ok.toml,
       root: "%(root)s", runtimes: {kata-q: io.containerd.kata.v2}}, register: edit_string, ignore_errors: true}
    - ansible.builtin.copy:
        dest: "%(results)s"
        content: "{{ {'read': read_missing, 'missing': edit_missing, 'broken': edit_broken,
                      'string': edit_string} | to_json }}"
        mode: "0644"
""" % {"root": tmp_path, "results": results})
    env = dict(os.environ, ANSIBLE_CONFIG=str(REPO / "ansible.cfg"), ANSIBLE_NOCOLOR="1")
    proc = subprocess.run([str(Path(sys.executable).with_name("ansible-playbook")), str(playbook)], cwd=REPO,
                          env=env, capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    got = json.loads(results.read_text())
    assert got["read"]["exists"] is False and got["read"]["changed"] is False and not got["read"].get("failed")
    assert got["missing"]["failed"] and "%s/etc/none.toml does not exist" % tmp_path in got["missing"]["msg"]
    assert got["broken"]["failed"] and "%s is not valid TOML" % broken in got["broken"]["msg"]
    # an AWX/-e string where a table belongs: named, not "'_AnsibleTaggedStr' object has no attribute 'items'"
    assert got["string"]["failed"] and "runtimes.kata-q must be the handler's table" in got["string"]["msg"], \
        got["string"]
    assert (tmp_path / "etc" / "ok.toml").read_text() == "version = 2\n"
    assert broken.read_text() == "version = 2\n[plugins\n"
    assert not (tmp_path / "etc" / "none.toml").exists()


def test_tables_set_single_keys_and_keep_the_rest() -> None:
    """The guest-pull tables (proxy_plugins.nydus, disable_snapshot_annotations) go into a node's file with its
    other keys of the same table kept; a second pass changes nothing."""
    doc = cc.parse('version = 2\n\n[plugins."io.containerd.grpc.v1.cri".containerd]\n'
                   '  default_runtime_name = "runc"  # ours\n', "config.toml")
    tables = [{"path": ["proxy_plugins", "nydus"], "values": {"type": "snapshot", "address": "/run/n.sock"}},
              {"path": ["plugins", "io.containerd.grpc.v1.cri", "containerd"],
               "values": {"disable_snapshot_annotations": False}}]
    assert cc.edit_tables(doc, tables, "config.toml") == [
        "proxy_plugins.nydus", 'plugins."io.containerd.grpc.v1.cri".containerd']
    text = toml_file.dumps(doc)
    assert 'default_runtime_name = "runc"  # ours' in text
    data = tomlkit.parse(text).unwrap()
    assert data["proxy_plugins"] == {"nydus": {"type": "snapshot", "address": "/run/n.sock"}}
    assert data["plugins"]["io.containerd.grpc.v1.cri"]["containerd"] == {
        "default_runtime_name": "runc", "disable_snapshot_annotations": False}
    assert cc.edit_tables(doc, tables, "config.toml") == []
    with pytest.raises(cc.ConfigError, match="proxy_plugins is not a table"):
        cc.edit_tables(cc.parse('proxy_plugins = 1\n', "c.toml"), tables[:1], "c.toml")


# path values that lead outside root, or are not plain absolute paths, and the refusal each gets
OUTSIDE = [
    ("/../../../../../../../../OUTSIDE", "has a '..' component"),
    ("/etc/containerd/../../../OUTSIDE", "has a '..' component"),
    ("etc/containerd/config.toml", "must be an absolute path"),
    ("/etc/containerd/config.toml\n", "holds a control character"),
    ("/link-out/config.toml", "is a symbolic link to"),
    ("/etc/link-out-file.toml", "is a symbolic link to"),
]


@pytest.mark.parametrize("check", [False, True], ids=["run", "check"])
def test_action_refuses_paths_that_lead_outside_root_and_changes_nothing(tmp_path: Path, check: bool) -> None:
    """issue 17: path /../../../../tmp/x.toml edited a file outside root. Each bad path is refused naming the
    option and the value, and neither the tree nor the file outside it changes."""
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "config.toml").write_text(MAIN)
    root = tmp_path / "root"
    (root / "etc" / "containerd").mkdir(parents=True)
    (root / "etc" / "containerd" / "config.toml").write_text(MAIN)
    (root / "link-out").symlink_to(outside)
    (root / "etc" / "link-out-file.toml").symlink_to(outside / "config.toml")
    cases = [(value.replace("OUTSIDE", str(outside.relative_to("/") / "config.toml")), why) for value, why in OUTSIDE]
    tasks = [{"name": "case %d" % number,
              "confidential_gpu.host.containerd_runtimes": {
                  "path": value, "root": str(root), "runtimes": {"kata-qemu-nvidia-gpu": KATA}}}
             for number, (value, _why) in enumerate(cases)]
    before, before_outside = tree_state(root), tree_state(outside)
    batch = run_tasks_batched(tmp_path, tasks, check=check)
    assert batch.rc == 0 and len(batch.results) == len(cases), batch.output
    for (value, why), result in zip(cases, batch.results):
        assert result.get("failed") and not result.get("changed"), (value, result)
        assert ("path %r" % value) in result["msg"] and why in result["msg"], (value, result["msg"])
    assert tree_state(root) == before
    assert tree_state(outside) == before_outside
    print("containerd_runtimes: %d paths outside root refused" % len(cases))
