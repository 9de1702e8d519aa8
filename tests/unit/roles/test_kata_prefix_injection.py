"""Role kata: kata_prefix reaches a command line (kata-runtime --version) and file paths.

A prefix that is a shell command line must be refused at the role's entry, and its payload must never run,
neither in a normal run nor under --check (the version query runs in check mode too). The payload of each
hostile prefix would create a marker file; the tests assert that it does not exist afterwards.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Dict

import pytest
from conftest import REPO

sys.path.insert(0, str(REPO / "tests" / "lib"))
from role_play import run_role  # noqa: E402

REFUSAL = "kata_prefix must be a normalised absolute path"
SHIMS = ["qemu-nvidia-gpu-snp"]


def role_vars(prefix: str, **more: Any) -> Dict[str, Any]:
    """Existing installation on the live root (the version query runs only with kata_root /), with a guest
    kernel parameter so that the runtime configuration step (and its version query) is reached."""
    return dict({"kata_root": "/", "kata_install_method": "existing", "kata_prefix": prefix, "kata_shims": SHIMS,
                 "kata_kernel_params": ["quiet"], "kata_manage_containerd": False}, **more)


@pytest.mark.parametrize("check", [False, True], ids=["run", "check"])
@pytest.mark.parametrize("shape", ["sh-c", "semicolon", "newline"])
def test_a_prefix_that_is_a_command_line_is_refused_and_never_runs(tmp_path: Path, check: bool, shape: str) -> None:
    marker = tmp_path / "payload-ran"
    prefix = {
        "sh-c": "/bin/sh -c 'touch %s' x" % marker,
        "semicolon": "/bin/true; touch %s; /opt/kata" % marker,
        "newline": "/opt/kata\n/usr/bin/touch %s" % marker,
    }[shape]
    result = run_role(tmp_path, "kata", role_vars(prefix), check=check)
    assert not marker.exists(), "the payload of kata_prefix ran:\n" + result.output
    assert result.rc != 0, result.output
    assert REFUSAL in result.output, result.output
    assert result.recap.get("changed", 0) == 0, result.output


@pytest.mark.parametrize("prefix", ["/opt/my kata", "/opt/kata/", "/opt/kata/../../tmp", "/opt/./kata", "opt/kata",
                                    "/opt//kata", "/opt/kata$(id)", "/opt/\"kata\""])
def test_a_prefix_that_is_not_a_plain_normalised_path_is_refused_with_the_fix(tmp_path: Path, prefix: str) -> None:
    """A space used to yield no version silently; '..' and other spellings reached file paths as given."""
    result = run_role(tmp_path, "kata", role_vars(prefix))
    assert result.rc != 0, result.output
    assert REFUSAL in result.output and "like /opt/kata or /usr" in result.output, result.output


@pytest.mark.parametrize("variable", ["kata_containerd_config", "kata_containerd_dropin", "kata_release_cache_dir",
                                      "kata_guest_pull_address"])
def test_a_path_that_leads_out_of_kata_root_is_refused_and_nothing_changes(tmp_path: Path, variable: str) -> None:
    """Each of these is joined below kata_root as given: '/../../x' would reach a file outside the tree."""
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    before = sorted(str(path) for path in tmp_path.rglob("*"))
    escape = "/../../%s/escaped" % tmp_path.name
    result = run_role(tmp_path, "kata", dict(role_vars("/opt/kata"), kata_root=str(root), **{variable: escape}))
    assert result.rc != 0, result.output
    assert "%s must be a normalised absolute path" % variable in result.output, result.output
    assert '"%s"' % escape in result.output and "Nothing was changed." in result.output
    assert not (tmp_path / "escaped").exists()
    after = sorted(str(path) for path in tmp_path.rglob("*") if not path.name.startswith("play"))
    assert [path for path in after if path not in before] == [], "the run wrote nothing"
