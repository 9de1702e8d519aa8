"""Hostile input against containerd_runtimes (an action plugin: it runs under ansible-playbook, not as a module
process): each case is refused naming the option, handler or file and the fix, and its own copy of the host
tree (a containerd 1.x main file of configuration version 2, plus a folder outside the root that links point
to) stays byte-identical.

All cases run in one ansible-playbook run with ``--diff`` (one process: a playbook per case would cost
seconds each); every case gets its own tree, so each test asserts its own result and its own tree.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any, Callable, Dict, List, Tuple

import pytest
from role_play import run_tasks_batched
from tree_edits import replace_with_bytes, replace_with_link
from tree_state import changed_entries, tree_state


MAIN = """\
# node config
version = 2
root = "/var/lib/containerd"

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "pause"
  [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
    runtime_type = "io.containerd.runc.v2"
"""
CONFIG = "/etc/containerd/config.toml"
KATA = {"runtime_type": "io.containerd.kata-qemu-nvidia-gpu-snp.v2",
        "runtime_path": "/opt/kata/bin/containerd-shim-kata-v2",
        "options": {"ConfigPath": "/opt/kata/share/defaults/kata-containers/configuration-qemu-nvidia-gpu-snp.toml"}}
NAME_FIX = "use a lowercase DNS label"
DOTS = "'..' component"


def handler(name: str) -> Dict[str, Any]:
    return {"runtimes": {name: KATA}}


def write(relative: str, data: bytes) -> Callable[[Path], None]:
    def _write(root: Path) -> None:
        replace_with_bytes(root / relative, data)
    return _write


def link(relative: str, to: str) -> Callable[[Path], None]:
    """Make ``relative`` (below the root) a link to ``to``; ``{outside}`` is the folder beside the root."""
    def _link(root: Path) -> None:
        replace_with_link(root / relative, to.replace("{outside}", str(root.parent / "outside")))
    return _link


def unchanged(_root: Path) -> None:
    """The tree as built."""


# (case id, arguments besides root, change to the tree, fragments)
CASES: List[Tuple[str, Dict[str, Any], Callable[[Path], None], List[str]]] = [
    ("handler-shell", handler("kata;id"), unchanged, ["runtime handler name 'kata;id'", NAME_FIX]),
    ("handler-subshell", handler("$(id)"), unchanged, ["runtime handler name '$(id)'", NAME_FIX]),
    # before: accepted, Python's '$' matches before a trailing newline
    ("handler-trailing-newline", handler("kata\n"), unchanged, ["runtime handler name 'kata\\n'", NAME_FIX]),
    ("handler-embedded-newline", handler("kata\nx"), unchanged, ["runtime handler name 'kata\\nx'", NAME_FIX]),
    # before: accepted; a RuntimeClass handler is a DNS label, no dots
    ("handler-dots", handler("kata.qemu"), unchanged, ["runtime handler name 'kata.qemu'", NAME_FIX]),
    ("handler-traversal", handler("../kata"), unchanged, ["runtime handler name '../kata'", NAME_FIX]),
    ("handler-uppercase", handler("Kata-QEMU"), unchanged, ["runtime handler name 'Kata-QEMU'", NAME_FIX]),
    ("handler-overlong", handler("k" * 64), unchanged, ["runtime handler name 'kkkk", NAME_FIX]),
    ("handler-absent-shell", {"runtimes_absent": ["runc;reboot"]}, unchanged,
     ["runtime handler name 'runc;reboot'", NAME_FIX]),
    ("handler-a-string", {"runtimes": {"kata-q": "io.containerd.kata.v2"}}, unchanged,
     ["runtimes.kata-q must be the handler's table", "nothing was changed"]),
    ("handler-a-list", {"runtimes": {"kata-q": ["io.containerd.kata.v2"]}}, unchanged,
     ["runtimes.kata-q must be the handler's table", "nothing was changed"]),
    ("runtimes-a-string", {"runtimes": "kata"}, unchanged, ["runtimes"]),
    ("handler-present-and-absent", dict(handler("kata-q"), runtimes_absent=["kata-q"]), unchanged,
     ["kata-q are asked to be both present and absent"]),
    ("path-traversal", dict(handler("kata-q"), path="/../../../../tmp/x.toml"), unchanged,
     ["path '/../../../../tmp/x.toml'", DOTS]),
    ("path-relative", dict(handler("kata-q"), path="etc/containerd/config.toml"), unchanged,
     ["path 'etc/containerd/config.toml' must be an absolute path"]),
    ("path-newline", dict(handler("kata-q"), path=CONFIG + "\n"), unchanged,
     ["path '/etc/containerd/config.toml\\n' holds a control character"]),
    ("path-overlong", dict(handler("kata-q"), path="/etc/" + "a" * 5000 + ".toml"), unchanged,
     ["cannot read", "/etc/aaaa", "File name too long"]),
    ("path-a-directory", dict(handler("kata-q"), path="/etc/containerd"), unchanged,
     ["etc/containerd is not a regular file", "point the path at containerd's config.toml"]),
    ("config-corrupt-toml", handler("kata-q"), write("etc/containerd/config.toml", b"version = 2\n[plugins\n"),
     ["config.toml is not valid TOML", "fix the file"]),
    ("config-binary-junk", handler("kata-q"), write("etc/containerd/config.toml", b"\x00\xff\xfe[[\n"),
     ["config.toml is not UTF-8 text", "fix or replace the file"]),
    ("config-version-string", handler("kata-q"), write("etc/containerd/config.toml", b'version = "two"\n'),
     ["version = 'two' is not an integer", "version = 2 or 3"]),
    ("config-version-1", handler("kata-q"), write("etc/containerd/config.toml", b"[plugins.cri]\n"),
     ["configuration version 1", "Set version = 2"]),
    ("config-cri-not-a-table", handler("kata-q"),
     write("etc/containerd/config.toml", b'version = 2\n[plugins."io.containerd.grpc.v1.cri"]\ncontainerd = 1\n'),
     ['plugins."io.containerd.grpc.v1.cri".containerd is not a table']),
    ("config-imports-not-a-list", {"imports_present": ["/etc/containerd/conf.d/x.toml"]},
     write("etc/containerd/config.toml", b'version = 2\nimports = "x"\n'), ["imports is not a list of paths"]),
    ("config-symlink-loop", handler("kata-q"), link("etc/containerd/config.toml", "config.toml"),
     ["config.toml"]),
    ("config-link-outside-root", handler("kata-q"), link("etc/containerd/config.toml", "{outside}/config.toml"),
     ["is a symbolic link to", "fix or remove the link"]),
    ("dir-link-outside-root", handler("kata-q"), link("etc/containerd", "{outside}"),
     ["is a symbolic link to", "fix or remove the link"]),
    ("import-newline", {"imports_present": ["/etc/containerd/conf.d/x.toml\nversion = 3"]}, unchanged,
     ["imports_present '/etc/containerd/conf.d/x.toml\\nversion = 3' holds a control character"]),
    ("import-empty", {"imports_present": [" "]}, unchanged, ["imports_present ' ' is not a path"]),
    ("import-absent-tab", {"imports_absent": ["/etc/x.toml\t"]}, unchanged,
     ["imports_absent '/etc/x.toml\\t' holds a control character"]),
    ("tables-empty-path", {"tables": [{"path": [], "values": {"a": 1}}]}, unchanged,
     ["a table path of", "is empty"]),
    ("tables-values-a-string", {"tables": [{"path": ["proxy_plugins", "nydus"], "values": "type=snapshot x"}]},
     unchanged, ["values"]),
]


@pytest.fixture(scope="module")
def played(tmp_path_factory: pytest.TempPathFactory) -> Dict[str, Tuple[Path, Dict[str, Any], Dict[str, Any]]]:
    """Every case in its own tree, all run in one ansible-playbook run with --diff: by case id, (the case's
    top folder, its tree state before the run, its registered result)."""
    work = tmp_path_factory.mktemp("containerd")
    tasks: List[Dict[str, Any]] = []
    tops: Dict[str, Tuple[Path, Dict[str, Any]]] = {}
    for number, (case_id, args, corrupt, _fragments) in enumerate(CASES):
        top = work / ("case%d" % number)
        (top / "root" / "etc" / "containerd").mkdir(parents=True)
        (top / "root" / "etc" / "containerd" / "config.toml").write_text(MAIN)
        (top / "outside").mkdir()
        (top / "outside" / "config.toml").write_text(MAIN)
        corrupt(top / "root")
        tops[case_id] = (top, tree_state(top))
        tasks.append({"name": case_id, "confidential_gpu.host.containerd_runtimes": dict(
            {"path": CONFIG}, **args, root=str(top / "root"))})
    batch = run_tasks_batched(work, tasks, diff=True)
    assert batch.rc == 0, batch.output[-9000:]
    got = batch.results
    played_cases = {case_id: (top, before, got[number])
                    for number, (case_id, (top, before)) in enumerate(tops.items())}
    yield played_cases
    shutil.rmtree(work, ignore_errors=True)


@pytest.mark.parametrize("case_id, fragments", [(case[0], case[3]) for case in CASES], ids=[case[0] for case in CASES])
def test_containerd_runtimes_refuses(played: Dict[str, Tuple[Path, Dict[str, Any], Dict[str, Any]]], case_id: str,
                                     fragments: List[str]) -> None:
    top, before, result = played[case_id]
    assert "Traceback" not in json.dumps(result), result
    assert result.get("failed") and not result.get("changed"), result
    for fragment in fragments:
        assert fragment in result["msg"], (fragment, result["msg"])
    after = tree_state(top)
    assert after == before, changed_entries(before, after)
