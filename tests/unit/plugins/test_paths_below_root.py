"""Paths below ``root`` (plugins/plugin_utils/root_paths.py) and the kata_runtime_config action's ``prefix``.

issue 17: a path option joined to ``root`` as given ('..' components, links on the target) edited files
outside ``root``. containerd_runtimes is tested in tests/unit/plugin_utils/test_containerd_config.py.
"""

from __future__ import annotations

import os
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

sys.path.insert(0, str(REPO / "tests" / "lib"))
from role_play import run_tasks_batched  # noqa: E402
from tree_state import tree_state  # noqa: E402

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
                  "kernel_params": ["nvrc.log=debug"]}} for number, (prefix, _why) in enumerate(cases)]
    before, before_outside = tree_state(root), tree_state(outside)
    batch = run_tasks_batched(tmp_path, tasks, check=check)
    assert batch.rc == 0 and len(batch.results) == len(cases), batch.output
    for (prefix, why), result in zip(cases, batch.results):
        assert result.get("failed") and not result.get("changed"), (prefix, result)
        assert "prefix %r" % prefix in result["msg"] and why in result["msg"], (prefix, result["msg"])
    assert tree_state(root) == before
    assert tree_state(outside) == before_outside, "a file outside root was written"
