"""Paths below ``root`` (plugins/plugin_utils/root_paths.py) and the kata_runtime_config action's ``prefix``.

issue 17: a path option joined to ``root`` as given ('..' components, links on the target) edited files
outside ``root``. containerd_runtimes is tested in tests/unit/plugin_utils/test_containerd_config.py.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, Dict

import pytest
from conftest import REPO

from ansible_collections.confidential_gpu.host.plugins.plugin_utils.root_paths import (
    RootPathError,
    below_root,
    link_outside_root,
)

SHIPPED = "share/defaults/kata-containers/configuration-qemu-nvidia-gpu-snp.toml"


def test_below_root_normalises_and_refuses_what_leads_out() -> None:
    assert below_root("/", "/etc//containerd/./config.toml", "path") == "/etc/containerd/config.toml"
    assert below_root("/srv/tree/", "//etc/containerd/config.toml", "path") == "/srv/tree/etc/containerd/config.toml"
    for value, why in [("/../../tmp/x.toml", "'..' component"), ("/etc/..", "'..' component"),
                       ("tmp/x.toml", "must be an absolute path"), ("/etc/x\n.toml", "control character"),
                       (None, "must be an absolute path")]:
        with pytest.raises(RootPathError) as refused:
            below_root("/srv/tree", value, "path")
        assert str(refused.value).startswith("path %r " % value) and why in str(refused.value)


def test_link_outside_root_follows_the_links_on_the_way(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "etc" / "in").mkdir(parents=True)
    (root / "etc" / "inside").symlink_to("in")
    (root / "etc" / "out").symlink_to(tmp_path)

    def stat(path: str) -> Dict[str, Any]:
        if not os.path.lexists(path):
            return {"exists": False}
        link = os.path.islink(path)
        return {"exists": True, "islnk": link, **({"lnk_source": os.path.realpath(path)} if link else {})}

    assert link_outside_root(str(root), str(root / "etc/inside/x.toml"), stat) is None
    assert link_outside_root(str(root), str(root / "etc/missing/x.toml"), stat) is None
    assert link_outside_root(str(root), str(root / "etc/out/x.toml"), stat) == (str(root / "etc/out"), str(tmp_path))
    assert link_outside_root("/", "/etc/out/x.toml", stat) is None


def tree_state(top: Path) -> Dict[str, Any]:
    state: Dict[str, Any] = {}
    for dirpath, dirnames, filenames in os.walk(top):
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            if path.is_symlink():
                state[str(path)] = ("link", os.readlink(path))
            elif path.is_dir():
                state[str(path)] = ("dir", path.lstat().st_mode)
            else:
                state[str(path)] = ("file", path.lstat().st_mode, hashlib.sha256(path.read_bytes()).hexdigest())
    return state


@pytest.mark.parametrize("check", [False, True], ids=["run", "check"])
def test_kata_runtime_config_prefix_stays_below_root(tmp_path: Path, shared_fixtures: Path, check: bool) -> None:
    """A prefix with '..' or a prefix whose directory links out of root wrote drop-ins outside root."""
    shipped = (shared_fixtures / "kata" / "configuration-qemu-nvidia-gpu-snp.kata-3.32.0.toml").read_bytes()
    outside = tmp_path / "outside"
    (outside / SHIPPED).parent.mkdir(parents=True)
    (outside / SHIPPED).write_bytes(shipped)
    root = tmp_path / "root"
    (root / "opt").mkdir(parents=True)
    (root / "opt" / "kata").symlink_to(outside)
    cases = [("/opt/../../../../../../../../" + str(outside.relative_to("/")), "has a '..' component"),
             ("/opt/kata", "is a symbolic link to %s" % outside),
             ("/opt/kata\n", "holds a control character")]
    tasks = [{"name": "case %d" % number,
              "confidential_gpu.host.kata_runtime_config": {
                  "shim": "qemu-nvidia-gpu-snp", "root": str(root), "prefix": prefix, "kata_version": "3.32.0",
                  "kernel_params": ["nvrc.log=debug"]},
              "register": "case%d" % number, "ignore_errors": True} for number, (prefix, _why) in enumerate(cases)]
    results = tmp_path / "results.json"
    tasks.append({"ansible.builtin.copy": {"dest": str(results), "mode": "0644", "content": "{{ [%s] | to_json }}"
                                           % ", ".join("case%d" % number for number in range(len(cases)))},
                  "check_mode": False})
    playbook = tmp_path / "play.yml"
    playbook.write_text(json.dumps([{"hosts": "localhost", "connection": "local", "gather_facts": False,
                                     "tasks": tasks}]))
    before, before_outside = tree_state(root), tree_state(outside)
    env = dict(os.environ, ANSIBLE_CONFIG=str(REPO / "ansible.cfg"), ANSIBLE_NOCOLOR="1")
    proc = subprocess.run([str(Path(sys.executable).with_name("ansible-playbook")), str(playbook)]
                          + (["--check"] if check else []), cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=300, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    for (prefix, why), result in zip(cases, json.loads(results.read_text())):
        assert result.get("failed") and not result.get("changed"), (prefix, result)
        assert "prefix %r" % prefix in result["msg"] and why in result["msg"], (prefix, result["msg"])
    assert tree_state(root) == before
    assert tree_state(outside) == before_outside, "a file outside root was written"
