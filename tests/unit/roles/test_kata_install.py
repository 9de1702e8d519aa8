"""Role kata end to end with ansible-playbook on this machine (local connection).

The tarball path: a Kata static release built here (opt/kata/ with a shim that prints its version and the
NVIDIA configurations of ../shared/fixtures/kata), served by http.server on loopback, installed below a
temporary root; the second run downloads nothing; a wrong sha256 installs nothing.

containerd: the files the role writes are loaded by the containerd of this machine (Debian 12's package,
1.6.x) with `containerd --config <file> config dump`, which must show the kata handlers. containerd 2.x
(configuration version 3) is not packaged for Debian 12: for it the role runs with kata_containerd_version
set and the written TOML is checked with tomlkit.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Tuple

import pytest
import tomlkit
import yaml
from conftest import REPO

sys.path.insert(0, str(REPO / "tests" / "lib"))
from loopback_http import Server  # noqa: E402

VERSION = "3.32.0"
SHIMS = ["qemu-nvidia-gpu-snp", "qemu-nvidia-gpu-tdx"]
SHIM_SCRIPT = "#!/bin/sh\necho 'Kata Containers containerd shim (Golang): id: \"io.containerd.kata.v2\", version: %s'\n"
DEFAULTS = "opt/kata/share/defaults/kata-containers"


# --- a Kata static release, served on loopback ----------------------------------------------------------
# The file names a release serves come from upstream's release script (tests/fixtures/kata-upstream/
# release-asset-names.txt: the lines of tools/packaging/release/release.sh that name them, per tag), and which
# of them holds the Go shim from kata-release-tarball-inputs.sh (4.1.0), not from the role's own rule.

UPSTREAM = REPO / "tests" / "fixtures" / "kata-upstream"


def upstream_asset_names(tag: str, version: str, arch: str = "amd64") -> List[str]:
    """The release files of a Kata release cut from ``tag``'s release.sh, for ``version`` and ``arch``."""
    names = []
    for line in (UPSTREAM / "release-asset-names.txt").read_text().splitlines():
        if line.startswith("#") or not line.strip():
            continue
        line_tag, _commit, rest = line.split(" ", 2)
        if line_tag == tag:
            template = re.search(r'new_tarball_name="([^"]+)"', rest)
            assert template, line
            names.append(template.group(1).replace("${RELEASE_VERSION}", version).replace("${ARCHITECTURE}", arch))
    assert names, "no release.sh line for tag %s in the fixture" % tag
    return names


def go_shim_asset(names: List[str]) -> str:
    """The file holding the Go shim: the only one before 4.1.0; from 4.1.0 the one whose allowlist names
    shim-v2-go in kata-release-tarball-inputs.sh (kata_go_tarball_inputs builds kata-go-static.tar.zst)."""
    if len(names) == 1:
        return names[0]
    inputs = (UPSTREAM / "release-tarball-inputs-4.1.0.txt").read_text()
    assert re.search(r"^kata_go_tarball_inputs amd64 line \d+:kata-static-shim-v2-go\.tar\.zst$", inputs, re.M)
    assert "#   kata-go-static.tar.zst - Go runtime focused" in inputs
    return next(name for name in names if name.startswith("kata-go-static-"))


def add_file(tar: tarfile.TarFile, name: str, data: bytes, mode: int = 0o644) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.uid, info.gid = len(data), mode, 0, 0
    tar.addfile(info, io.BytesIO(data))


def add_dir(tar: tarfile.TarFile, name: str) -> None:
    info = tarfile.TarInfo(name)
    info.type, info.mode = tarfile.DIRTYPE, 0o755
    tar.addfile(info)


def write_tarball(path: Path, fill: Any) -> None:
    """A tarball at ``path`` compressed as its name says (.tar.xz by tarfile, .tar.zst with the zstd command)."""
    if path.name.endswith(".tar.zst"):
        if shutil.which("zstd") is None:
            pytest.skip("zstd is not installed (Debian package zstd, scripts/apt-packages.txt): Kata releases "
                        "from 3.21.0 are .tar.zst and cannot be built here")
        plain = path.with_name(path.name[:-len(".zst")])
        with tarfile.open(plain, "w") as tar:
            fill(tar)
        subprocess.run(["zstd", "-q", "--rm", "-f", str(plain), "-o", str(path)], check=True)
    else:
        with tarfile.open(path, "w:xz") as tar:
            fill(tar)


def build_release(path: Path, fixtures: Path, version: str = VERSION, go: bool = True) -> Dict[str, bytes]:
    """A release file laid out like upstream's (entries ./opt/kata/...): with the Go shim and the NVIDIA
    configurations of ``version`` when ``go``, else with the runtime-rs shim only; returns the configurations."""
    configs = {"configuration-%s.toml" % shim: (fixtures / "kata" / ("configuration-%s.kata-%s.toml" % (shim, version)))
               .read_bytes() for shim in SHIMS} if go else {}

    def fill(tar: tarfile.TarFile) -> None:
        for directory in (".", "./opt", "./opt/kata", "./opt/kata/bin", "./opt/kata/share",
                          "./opt/kata/share/defaults", "./" + DEFAULTS):
            add_dir(tar, directory)
        if go:
            add_file(tar, "./opt/kata/bin/containerd-shim-kata-v2", (SHIM_SCRIPT % version).encode(), 0o755)
            add_file(tar, "./opt/kata/bin/kata-runtime", b"#!/bin/sh\necho kata-runtime\n", 0o755)
        else:
            add_dir(tar, "./opt/kata/runtime-rs")
            add_dir(tar, "./opt/kata/runtime-rs/bin")
            add_file(tar, "./opt/kata/runtime-rs/bin/containerd-shim-kata-v2", b"#!/bin/sh\necho rust\n", 0o755)
            add_dir(tar, "./%s/runtime-rs" % DEFAULTS)  # a runtime-rs class, only so that its handler is found
            add_file(tar, "./%s/runtime-rs/configuration-qemu-nvidia-gpu-snp-runtime-rs.toml" % DEFAULTS,
                     b"[runtime]\n")
        add_file(tar, "./opt/kata/VERSION", (version + "\n").encode())
        for name, data in configs.items():
            add_file(tar, "./%s/%s" % (DEFAULTS, name), data)

    write_tarball(path, fill)
    return configs


def serve_release(tmp_path: Path, fixtures: Path, tag: str) -> Tuple[Server, Dict[str, Any]]:
    """Every file upstream's release.sh of ``tag`` names for release ``tag``, served on loopback."""
    served = tmp_path / "served"
    served.mkdir(exist_ok=True)
    names = upstream_asset_names(tag, tag)
    go_asset = go_shim_asset(names)
    configs: Dict[str, bytes] = {}
    for name in names:
        configs.update(build_release(served / name, fixtures, tag, go=name == go_asset))
    server = Server(served)
    return server, {"base_url": server.url("").rstrip("/"), "names": names, "go_asset": go_asset,
                    "version": tag, "configs": configs, "dir": served,
                    "sha256": {name: hashlib.sha256((served / name).read_bytes()).hexdigest() for name in names}}


@pytest.fixture(params=["3.32.0", "4.1.0"])
def release(request: Any, tmp_path: Path, shared_fixtures: Path) -> Iterator[Tuple[Server, Dict[str, Any]]]:
    server, served = serve_release(tmp_path, shared_fixtures, request.param)
    try:
        yield server, served
    finally:
        server.close()


# --- running the role -------------------------------------------------------------------------------------

def run_role(tmp_path: Path, role_vars: Dict[str, Any], *options: str) -> subprocess.CompletedProcess:
    playbook = tmp_path / "kata.yml"
    playbook.write_text("- hosts: localhost\n  connection: local\n  gather_facts: false\n"
                        "  roles:\n    - confidential_gpu.host.kata\n")
    extra = tmp_path / "vars.json"
    extra.write_text(json.dumps(role_vars))
    env = dict(os.environ, ANSIBLE_CONFIG=str(REPO / "ansible.cfg"), ANSIBLE_NOCOLOR="1",
               ANSIBLE_LOCALHOST_WARNING="False", ANSIBLE_INVENTORY_UNPARSED_WARNING="False")
    command = [str(Path(sys.executable).with_name("ansible-playbook")), str(playbook), "-e", "@%s" % extra, *options]
    return subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=300, check=False)


def recap(proc: subprocess.CompletedProcess) -> Dict[str, int]:
    match = re.search(r"localhost\s+:\s+ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)", proc.stdout)
    assert match, proc.stdout + proc.stderr
    return dict(zip(("ok", "changed", "unreachable", "failed"), map(int, match.groups())))


def release_vars(root: Path, release: Dict[str, Any], **more: Any) -> Dict[str, Any]:
    """The role's variables for a served release: one sha256 as a string where one file is needed (3.x), the
    mapping by file name for 4.1.0."""
    needed = release["sha256"][release["go_asset"]]
    sha256 = needed if len(release["names"]) == 1 else {release["go_asset"]: needed}
    return dict({"kata_root": str(root), "kata_version": release["version"],
                 "kata_release_base_url": release["base_url"], "kata_release_sha256": sha256,
                 "kata_shims": SHIMS, "kata_manage_containerd": False}, **more)


# --- the tarball path -------------------------------------------------------------------------------------

def test_release_installs_once_and_records_it(tmp_path: Path, release: Tuple[Server, Dict[str, Any]]) -> None:
    """Served under upstream's names for 3.32.0 (one kata-static .tar.zst) and 4.1.0 (kata-static and
    kata-go-static): the role downloads the file holding the Go shims, checks its sha256 and unpacks it."""
    server, served = release
    version, asset = served["version"], served["go_asset"]
    root = tmp_path / "root"
    root.mkdir()
    preview = run_role(tmp_path, release_vars(root, served), "--check")
    assert preview.returncode == 0, preview.stdout + preview.stderr
    assert "Would install Kata %s from %s/%s" % (version, served["base_url"], asset) in preview.stdout, preview.stdout
    assert recap(preview)["changed"] == 1
    assert server.requests == [] and list(root.iterdir()) == [], "check mode downloaded or wrote something"

    first = run_role(tmp_path, release_vars(root, served))
    assert first.returncode == 0, first.stdout + first.stderr
    assert recap(first)["changed"] > 0
    prefix = root / "opt" / "kata"
    shim = prefix / "bin" / "containerd-shim-kata-v2"
    assert os.access(shim, os.X_OK)
    assert "version: %s" % version in subprocess.run([str(shim)], capture_output=True, text=True, check=True).stdout
    for name, data in served["configs"].items():
        assert (prefix / "share/defaults/kata-containers" / name).read_bytes() == data
    record = json.loads((prefix / ".confidential-gpu-release").read_text())
    assert record["version"] == version and record["files"] == {asset: served["sha256"][asset]}
    assert server.requests == ["/" + asset], "only the file with the Go shims is needed"
    assert sorted(p.name for p in (root / "opt").iterdir()) == ["kata"], "no staging directory is left"
    assert list((root / "var/cache/confidential-gpu").iterdir()) == [], "the download is not kept"

    second = run_role(tmp_path, release_vars(root, served))
    assert second.returncode == 0, second.stdout + second.stderr
    assert recap(second)["changed"] == 0, second.stdout
    assert len(server.requests) == 1, "the second run downloaded again: %s" % server.requests

    # An upgrade whose file does not match its sha256 fails and leaves the installed release alone.
    newer = version.rsplit(".", 1)[0] + ".%d" % (int(version.rsplit(".", 1)[1]) + 1)
    upgrade_asset = asset.replace(version, newer)
    shutil.copy(served["dir"] / asset, served["dir"] / upgrade_asset)
    upgrade = run_role(tmp_path, release_vars(root, served, kata_version=newer,
                                              kata_release_sha256={upgrade_asset: "0" * 64}))
    assert upgrade.returncode != 0
    assert "Kata %s was not installed" % newer in upgrade.stdout and "did not match" in upgrade.stdout
    assert "kata_release_sha256 must be the sha256 of %s" % upgrade_asset in upgrade.stdout, upgrade.stdout
    assert json.loads((prefix / ".confidential-gpu-release").read_text())["version"] == version
    assert os.access(shim, os.X_OK)


def test_release_with_go_and_rust_shims_needs_both_files_of_4_1(tmp_path: Path, shared_fixtures: Path) -> None:
    """4.1.0 splits the runtimes: a runtime-rs shim next to the Go ones needs kata-static too, each file with
    its own sha256; a single sha256 for two files is refused before anything is downloaded."""
    server, served = serve_release(tmp_path, shared_fixtures, "4.1.0")
    try:
        root = tmp_path / "root"
        root.mkdir()
        shims = SHIMS + ["qemu-nvidia-gpu-snp-runtime-rs"]
        one = run_role(tmp_path, release_vars(root, served, kata_shims=shims,
                                              kata_release_sha256=served["sha256"][served["go_asset"]]))
        assert one.returncode != 0
        assert "kata_release_sha256 is one checksum but this release needs 2 files" in one.stdout, one.stdout
        assert server.requests == []
        both = run_role(tmp_path, release_vars(root, served, kata_shims=shims, kata_release_sha256=served["sha256"]))
        assert both.returncode == 0, both.stdout + both.stderr
        assert sorted(server.requests) == sorted("/" + name for name in served["names"])
        assert os.access(root / "opt/kata/runtime-rs/bin/containerd-shim-kata-v2", os.X_OK)
        assert os.access(root / "opt/kata/bin/containerd-shim-kata-v2", os.X_OK)
    finally:
        server.close()


def test_release_before_3_21_is_tar_xz(tmp_path: Path, shared_fixtures: Path) -> None:
    """3.20.0's release.sh still names kata-static-<v>-<arch>.tar.xz (the configurations of 3.32.0 stand in)."""
    served_dir = tmp_path / "served"
    served_dir.mkdir()
    names = upstream_asset_names("3.20.0", "3.20.0")
    assert names == ["kata-static-3.20.0-amd64.tar.xz"]
    fixtures = tmp_path / "fixtures"
    (fixtures / "kata").mkdir(parents=True)
    for shim in SHIMS:
        shutil.copy(shared_fixtures / "kata" / ("configuration-%s.kata-3.32.0.toml" % shim),
                    fixtures / "kata" / ("configuration-%s.kata-3.20.0.toml" % shim))
    build_release(served_dir / names[0], fixtures, "3.20.0")
    server = Server(served_dir)
    try:
        root = tmp_path / "root"
        root.mkdir()
        served = {"base_url": server.url("").rstrip("/"), "names": names, "go_asset": names[0], "version": "3.20.0",
                  "sha256": {names[0]: hashlib.sha256((served_dir / names[0]).read_bytes()).hexdigest()}}
        proc = run_role(tmp_path, release_vars(root, served))
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert server.requests == ["/" + names[0]]
    finally:
        server.close()


def test_wrong_sha256_installs_nothing(tmp_path: Path, release: Tuple[Server, Dict[str, Any]]) -> None:
    server, served = release
    root = tmp_path / "root"
    root.mkdir()
    wrong = hashlib.sha256(b"not the tarball").hexdigest()
    proc = run_role(tmp_path, release_vars(root, served, kata_release_sha256={served["go_asset"]: wrong}))
    assert proc.returncode != 0
    assert "did not match %s" % wrong in proc.stdout, proc.stdout
    assert len(server.requests) == 1
    assert not (root / "opt" / "kata").exists()
    assert [p for p in root.rglob("*") if p.is_file()] == [], "a file was left below the root"


def test_tarball_that_is_not_a_release_installs_nothing(
        tmp_path: Path, release: Tuple[Server, Dict[str, Any]]) -> None:
    _server, served = release
    other = served["dir"] / "other.tar.xz"
    with tarfile.open(other, "w:xz") as tar:
        add_file(tar, "./usr/bin/tool", b"#!/bin/sh\n", 0o755)
    root = tmp_path / "root"
    root.mkdir()
    proc = run_role(tmp_path, release_vars(root, served, kata_release_assets=["other.tar.xz"],
                                           kata_release_sha256=hashlib.sha256(other.read_bytes()).hexdigest()))
    assert proc.returncode != 0
    assert "other.tar.xz has no opt/kata/bin/containerd-shim-kata-v2" in proc.stdout, proc.stdout
    assert not (root / "opt" / "kata").exists() and not (root / "usr").exists()


def test_installation_made_by_other_means_is_not_replaced(
        tmp_path: Path, release: Tuple[Server, Dict[str, Any]]) -> None:
    server, served = release
    root = tmp_path / "root"
    (root / "opt" / "kata" / "bin").mkdir(parents=True)
    (root / "opt" / "kata" / "bin" / "containerd-shim-kata-v2").write_text("kata-deploy's\n")
    proc = run_role(tmp_path, release_vars(root, served))
    assert proc.returncode != 0
    assert "without this role's record" in proc.stdout and "kata_install_method existing" in proc.stdout
    assert server.requests == []
    assert (root / "opt/kata/bin/containerd-shim-kata-v2").read_text() == "kata-deploy's\n"


def test_release_needs_a_sha256(tmp_path: Path) -> None:
    proc = run_role(tmp_path, {"kata_root": str(tmp_path), "kata_version": VERSION, "kata_shims": SHIMS,
                               "kata_manage_containerd": False})
    assert proc.returncode != 0
    assert "kata_release_sha256 must be the 64 hex digits of the release file's sha256" in proc.stdout, proc.stdout
    assert list(tmp_path.rglob("opt")) == []


# --- containerd -------------------------------------------------------------------------------------------

CONTAINERD = shutil.which("containerd")
needs_containerd = pytest.mark.skipif(
    CONTAINERD is None, reason="containerd is not installed (Debian package containerd): the handlers the "
                               "role writes cannot be loaded by a real containerd here")

# A main file that is not ours: what a Kubernetes node has (settings in the CRI section, runc with the
# systemd cgroup driver), with comments that must survive.
NODE_CONFIG = """\
# Written by the node's installer.
version = 2

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "registry.example/pause:3.9"  # pinned
  [plugins."io.containerd.grpc.v1.cri".containerd]
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = true
"""


def installed_tree(base: Path) -> Path:
    """An existing Kata installation (the layout of the static release) below base; returns the prefix."""
    prefix = base / "opt" / "kata"
    (prefix / "bin").mkdir(parents=True)
    shim = prefix / "bin" / "containerd-shim-kata-v2"
    shim.write_text(SHIM_SCRIPT % VERSION)
    shim.chmod(0o755)
    (prefix / "share/defaults/kata-containers").mkdir(parents=True)
    for name in SHIMS:
        (prefix / "share/defaults/kata-containers" / ("configuration-%s.toml" % name)).write_text(
            "[hypervisor.qemu]\n[runtime]\n")
    return prefix


def containerd_vars(base: Path, **more: Any) -> Dict[str, Any]:
    """Absolute paths below base with kata_root /, so that containerd reads the same paths the role wrote.

    Guest pull is off unless a test turns it on: these tests are about where the handlers go, and this
    machine's containerd (1.6) has no snapshotter per handler (see test_tee_classes_need_containerd_1_7)."""
    return dict({"kata_root": "/", "kata_install_method": "existing", "kata_prefix": str(base / "opt/kata"),
                 "kata_shims": SHIMS, "kata_containerd_config": str(base / "etc/containerd/config.toml"),
                 "kata_containerd_dropin": str(base / "etc/containerd/conf.d/confidential-gpu-kata.toml"),
                 "kata_containerd_restart": False, "kata_guest_pull": False}, **more)


def dump(config: Path) -> Dict[str, Any]:
    proc = subprocess.run([CONTAINERD, "--config", str(config), "config", "dump"],
                          capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
    return tomlkit.parse(proc.stdout).unwrap()


def assert_handlers(runtimes: Dict[str, Any], prefix: Path, config_paths: Optional[Dict[str, str]] = None) -> None:
    for shim in SHIMS:
        handler = runtimes["kata-%s" % shim]
        assert handler["runtime_type"] == "io.containerd.kata-%s.v2" % shim
        assert handler["runtime_path"] == str(prefix / "bin/containerd-shim-kata-v2")
        assert handler["options"]["ConfigPath"] == (config_paths or {}).get(shim, str(
            prefix / ("share/defaults/kata-containers/configuration-%s.toml" % shim)))
        assert handler["privileged_without_host_devices"] is True
        assert handler["pod_annotations"] == ["io.katacontainers.*"]


@needs_containerd
def test_containerd_1_loads_handlers_added_to_a_main_file_not_ours(tmp_path: Path) -> None:
    prefix = installed_tree(tmp_path)
    config = tmp_path / "etc/containerd/config.toml"
    config.parent.mkdir(parents=True)
    config.write_text(NODE_CONFIG)
    first = run_role(tmp_path, containerd_vars(tmp_path))
    assert first.returncode == 0, first.stdout + first.stderr

    loaded = dump(config)
    cri = loaded["plugins"]["io.containerd.grpc.v1.cri"]
    assert_handlers(cri["containerd"]["runtimes"], prefix)
    # containerd 1.x would let an imported CRI section replace this one: the node's settings must survive.
    assert cri["sandbox_image"] == "registry.example/pause:3.9"
    assert cri["containerd"]["runtimes"]["runc"]["options"]["SystemdCgroup"] is True
    text = config.read_text()
    assert text.startswith(NODE_CONFIG.split("[plugins", maxsplit=1)[0]) and "# pinned" in text
    assert "imports" not in tomlkit.parse(text)
    assert not (tmp_path / "etc/containerd/conf.d").exists()
    assert [p.name for p in config.parent.iterdir() if p.name.startswith("config.toml.")], "no backup was kept"

    second = run_role(tmp_path, containerd_vars(tmp_path))
    assert second.returncode == 0, second.stdout + second.stderr
    assert recap(second)["changed"] == 0, second.stdout


@needs_containerd
def test_containerd_1_without_a_main_file_gets_ours_with_runc_kept(tmp_path: Path) -> None:
    """With a ConfigPath given for one shim (as the runtime-configuration step returns it)."""
    prefix = installed_tree(tmp_path)
    generated = prefix / "share/defaults/kata-containers/runtimes/qemu-nvidia-gpu-snp" / \
        "configuration-qemu-nvidia-gpu-snp.toml"
    generated.parent.mkdir(parents=True)
    generated.write_text("[runtime]\n")
    overrides = {"qemu-nvidia-gpu-snp": str(generated)}
    proc = run_role(tmp_path, containerd_vars(tmp_path, kata_handler_config_paths=overrides))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    config = tmp_path / "etc/containerd/config.toml"
    assert config.read_text().startswith("# Managed by confidential_gpu.host (role kata)")
    runtimes = dump(config)["plugins"]["io.containerd.grpc.v1.cri"]["containerd"]["runtimes"]
    assert_handlers(runtimes, prefix, overrides)
    assert runtimes["runc"]["runtime_type"] == "io.containerd.runc.v2"


def test_missing_config_path_is_named_before_containerd_is_touched(tmp_path: Path) -> None:
    installed_tree(tmp_path)
    missing = str(tmp_path / "nowhere/configuration-qemu-nvidia-gpu-snp.toml")
    proc = run_role(tmp_path, containerd_vars(tmp_path, kata_containerd_version="1.6.20",
                                              kata_handler_config_paths={"qemu-nvidia-gpu-snp": missing}))
    assert proc.returncode != 0
    assert "ConfigPath missing below / for kata-qemu-nvidia-gpu-snp: %s" % missing in proc.stdout, proc.stdout
    assert not (tmp_path / "etc").exists()


@needs_containerd
def test_check_mode_changes_nothing_and_shows_the_diff(tmp_path: Path) -> None:
    installed_tree(tmp_path)
    config = tmp_path / "etc/containerd/config.toml"
    config.parent.mkdir(parents=True)
    config.write_text(NODE_CONFIG)
    proc = run_role(tmp_path, containerd_vars(tmp_path), "--check", "--diff")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert recap(proc)["changed"] == 1
    assert '+[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.kata-qemu-nvidia-gpu-snp]' in proc.stdout
    assert config.read_text() == NODE_CONFIG
    assert sorted(p.name for p in config.parent.iterdir()) == ["config.toml"]


def test_containerd_1_refuses_a_version_3_main_file(tmp_path: Path) -> None:
    installed_tree(tmp_path)
    config = tmp_path / "etc/containerd/config.toml"
    config.parent.mkdir(parents=True)
    config.write_text("version = 3\n")
    proc = run_role(tmp_path, containerd_vars(tmp_path, kata_containerd_version="1.7.24"))
    assert proc.returncode != 0
    assert "has configuration version 3 and containerd is 1.7.24" in proc.stdout, proc.stdout
    assert config.read_text() == "version = 3\n"


@pytest.mark.parametrize("version, plugin", [(3, "io.containerd.cri.v1.runtime"), (2, "io.containerd.grpc.v1.cri")])
def test_containerd_2_gets_a_dropin_imported_from_a_main_file_not_ours(tmp_path: Path, version: int,
                                                                       plugin: str) -> None:
    prefix = installed_tree(tmp_path)
    config = tmp_path / "etc/containerd/config.toml"
    config.parent.mkdir(parents=True)
    main = "# the node's own\nversion = %d\n\n[plugins.%s]\n  sandbox_image = \"x\"  # kept\n" % (
        version, '"%s"' % plugin)
    config.write_text(main)
    role_vars = containerd_vars(tmp_path, kata_containerd_version="2.1.4")
    proc = run_role(tmp_path, role_vars)
    assert proc.returncode == 0, proc.stdout + proc.stderr

    dropin = Path(role_vars["kata_containerd_dropin"])
    written = tomlkit.parse(dropin.read_text()).unwrap()
    assert written["version"] == version, "an imported file may not have a higher version than the main file"
    assert list(written["plugins"]) == [plugin]
    assert_handlers(written["plugins"][plugin]["containerd"]["runtimes"], prefix)
    edited = config.read_text()
    assert edited.startswith("# the node's own\nversion = %d\nimports = [%s]\n" % (version, json.dumps(str(dropin))))
    assert 'sandbox_image = "x"  # kept' in edited

    again = run_role(tmp_path, role_vars)
    assert again.returncode == 0 and recap(again)["changed"] == 0, again.stdout


def test_containerd_2_without_a_main_file_gets_ours_importing_the_dropin(tmp_path: Path) -> None:
    """Also writes the RuntimeClass manifests (what kubernetes.core.k8s applies with a kubeconfig)."""
    installed_tree(tmp_path)
    manifests = tmp_path / "manifests"
    manifests.mkdir()
    role_vars = containerd_vars(tmp_path, kata_containerd_version="2.0.0",
                                kata_runtimeclass_manifest_dir=str(manifests),
                                kata_runtimeclass_overhead={"memory": "2Gi", "cpu": "1"},
                                kata_runtimeclass_node_selector={"example.org/cc": "snp"})
    proc = run_role(tmp_path, role_vars)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    main = tomlkit.parse((tmp_path / "etc/containerd/config.toml").read_text()).unwrap()
    assert main == {"version": 3, "imports": [role_vars["kata_containerd_dropin"]]}
    dropin = tomlkit.parse(Path(role_vars["kata_containerd_dropin"]).read_text()).unwrap()
    assert sorted(dropin["plugins"]["io.containerd.cri.v1.runtime"]["containerd"]["runtimes"]) == \
        ["kata-%s" % shim for shim in SHIMS]
    assert sorted(p.name for p in manifests.iterdir()) == ["kata-%s.yaml" % shim for shim in SHIMS]
    runtime_class = yaml.safe_load((manifests / "kata-qemu-nvidia-gpu-snp.yaml").read_text())
    assert runtime_class == {
        "apiVersion": "node.k8s.io/v1", "kind": "RuntimeClass", "handler": "kata-qemu-nvidia-gpu-snp",
        "metadata": {"name": "kata-qemu-nvidia-gpu-snp",
                     "labels": {"app.kubernetes.io/managed-by": "confidential_gpu.host"}},
        "overhead": {"podFixed": {"memory": "2Gi", "cpu": "1"}},
        "scheduling": {"nodeSelector": {"example.org/cc": "snp"}}}


def test_missing_shim_configuration_is_named(tmp_path: Path) -> None:
    installed_tree(tmp_path)
    proc = run_role(tmp_path, containerd_vars(tmp_path, kata_shims=["qemu-nvidia-gpu"]))
    assert proc.returncode != 0
    defaults = tmp_path / "opt/kata/share/defaults/kata-containers"
    assert "No configuration for shim(s) qemu-nvidia-gpu in %s" % defaults in proc.stdout, proc.stdout
    assert not (tmp_path / "etc").exists()


# --- runtime classes configured, then registered ----------------------------------------------------------

@needs_containerd
def test_configured_runtime_classes_are_what_containerd_points_at(
        tmp_path: Path, release: Tuple[Server, Dict[str, Any]]) -> None:
    """Kata 3.32 takes drop-ins: the role writes them, and containerd's ConfigPath names the file beside
    their config.d/ (the shipped one would make Kata look for drop-ins in the shared directory)."""
    _server, served = release
    root = tmp_path / "root"
    root.mkdir()
    wanted = dict(release_vars(root, served), kata_manage_containerd=True, kata_containerd_restart=False,
                  kata_guest_pull=False,
                  kata_kernel_params=["nvrc.log=debug"],
                  kata_runtime_settings={"runtime": {"create_container_timeout": 1200}})
    first = run_role(tmp_path, wanted)
    assert first.returncode == 0, first.stdout + first.stderr
    cri = dump(root / "etc/containerd/config.toml")["plugins"]["io.containerd.grpc.v1.cri"]
    runtimes = cri["containerd"]["runtimes"]
    for shim in SHIMS:
        shim_dir = "/opt/kata/share/defaults/kata-containers/runtimes/%s" % shim
        assert runtimes["kata-%s" % shim]["options"]["ConfigPath"] == "%s/configuration-%s.toml" % (shim_dir, shim)
        dropins = root / shim_dir.lstrip("/") / "config.d"
        settings = tomlkit.parse((dropins / "40-confidential-gpu.toml").read_text()).unwrap()
        assert settings["runtime"]["create_container_timeout"] == 1200
        params = tomlkit.parse((dropins / "40-confidential-gpu-kernel-params.toml").read_text()).unwrap()
        words = params["hypervisor"]["qemu"]["kernel_params"].split()
        assert words[-1] == "nvrc.log=debug" and "pci=realloc" in words, "the base parameters come first"
    second = run_role(tmp_path, wanted)
    assert second.returncode == 0 and recap(second)["changed"] == 0, second.stdout


# --- guest pull for the TEE classes -----------------------------------------------------------------------

@pytest.fixture
def nydus_socket() -> Iterator[Path]:
    """A listening unix socket where nydus-snapshotter's would be (short path: sun_path holds 108 bytes)."""
    directory = Path(tempfile.mkdtemp(prefix="nydus-"))
    path = directory / "containerd-nydus-grpc.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(str(path))
    sock.listen(1)
    try:
        yield path
    finally:
        sock.close()
        shutil.rmtree(directory, ignore_errors=True)


def guest_pull_vars(base: Path, socket_path: Path, **more: Any) -> Dict[str, Any]:
    return containerd_vars(base, kata_guest_pull=True, kata_guest_pull_address=str(socket_path), **more)


@needs_containerd
def test_tee_classes_need_containerd_1_7(tmp_path: Path, nydus_socket: Path) -> None:
    """This machine's containerd (1.6) drops a handler's snapshotter (its `config dump` shows it gone), so
    the role refuses to register the -snp/-tdx classes there, as kata-deploy does, and writes nothing."""
    probe = tmp_path / "probe.toml"
    probe.write_text('version = 2\n[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.kata-probe]\n'
                     '  runtime_type = "io.containerd.kata-probe.v2"\n  snapshotter = "nydus"\n')
    version = subprocess.run([CONTAINERD, "--version"], capture_output=True, text=True, check=True).stdout
    handler = dump(probe)["plugins"]["io.containerd.grpc.v1.cri"]["containerd"]["runtimes"]["kata-probe"]
    if "snapshotter" in handler:
        pytest.skip("this containerd (%s) keeps a handler's snapshotter; the refusal is for 1.6" % version.strip())
    installed_tree(tmp_path)
    proc = run_role(tmp_path, guest_pull_vars(tmp_path, nydus_socket))
    assert proc.returncode != 0
    assert "has no snapshotter per handler (containerd 1.7 or newer has)" in proc.stdout, proc.stdout
    assert "kata-qemu-nvidia-gpu-snp, kata-qemu-nvidia-gpu-tdx run with shared_fs" in proc.stdout
    assert not (tmp_path / "etc").exists()


def test_tee_classes_need_nydus_snapshotter(tmp_path: Path) -> None:
    installed_tree(tmp_path)
    missing = tmp_path / "run/containerd-nydus/containerd-nydus-grpc.sock"
    proc = run_role(tmp_path, guest_pull_vars(tmp_path, missing, kata_containerd_version="2.1.4"))
    assert proc.returncode != 0
    assert "%s does not exist: nydus-snapshotter is not running" % missing in proc.stdout, proc.stdout
    assert "Install containerd-nydus-grpc" in proc.stdout
    assert not (tmp_path / "etc").exists()


@pytest.mark.parametrize("version, plugin", [(3, "io.containerd.cri.v1.runtime"), (2, "io.containerd.grpc.v1.cri")])
def test_containerd_2_gives_each_tee_class_the_nydus_snapshotter(tmp_path: Path, nydus_socket: Path, version: int,
                                                                 plugin: str) -> None:
    """What kata-deploy writes (binary/src/runtime/containerd.rs, artifacts/snapshotters.rs, 3.32.0): the
    handler's snapshotter, the proxy plugin, snapshot annotations on, and for version 3 the images plugin's
    runtime_platforms.<handler>.snapshotter. A non-TEE class gets no snapshotter."""
    installed_tree(tmp_path)
    (tmp_path / "opt/kata/share/defaults/kata-containers/configuration-qemu-nvidia-gpu.toml").write_text("[runtime]\n")
    config = tmp_path / "etc/containerd/config.toml"
    config.parent.mkdir(parents=True)
    config.write_text("version = %d\n" % version)
    role_vars = guest_pull_vars(tmp_path, nydus_socket, kata_containerd_version="2.1.4",
                                kata_shims=SHIMS + ["qemu-nvidia-gpu"])
    proc = run_role(tmp_path, role_vars)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    written = tomlkit.parse(Path(role_vars["kata_containerd_dropin"]).read_text()).unwrap()
    runtimes = written["plugins"][plugin]["containerd"]["runtimes"]
    for shim in SHIMS:
        assert runtimes["kata-%s" % shim]["snapshotter"] == "nydus"
    assert "snapshotter" not in runtimes["kata-qemu-nvidia-gpu"]
    assert written["proxy_plugins"] == {"nydus": {"type": "snapshot", "address": str(nydus_socket)}}
    if version == 3:
        images = written["plugins"]["io.containerd.cri.v1.images"]
        assert images["disable_snapshot_annotations"] is False
        assert images["runtime_platforms"] == {"kata-%s" % shim: {"snapshotter": "nydus"} for shim in SHIMS}
    else:
        assert written["plugins"][plugin]["containerd"]["disable_snapshot_annotations"] is False
    again = run_role(tmp_path, role_vars)
    assert again.returncode == 0 and recap(again)["changed"] == 0, again.stdout


@needs_containerd
def test_containerd_1_7_main_file_not_ours_gets_the_snapshotter_tables(tmp_path: Path, nydus_socket: Path) -> None:
    """containerd 1.7 (configuration version 2, handlers in the main file): the tables are edited in place,
    the node's settings kept, and the file still loads (this machine's containerd reads it)."""
    installed_tree(tmp_path)
    config = tmp_path / "etc/containerd/config.toml"
    config.parent.mkdir(parents=True)
    config.write_text(NODE_CONFIG)
    role_vars = guest_pull_vars(tmp_path, nydus_socket, kata_containerd_version="1.7.24")
    proc = run_role(tmp_path, role_vars)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    written = tomlkit.parse(config.read_text()).unwrap()
    cri = written["plugins"]["io.containerd.grpc.v1.cri"]
    assert cri["containerd"]["disable_snapshot_annotations"] is False
    assert cri["containerd"]["default_runtime_name"] == "runc" and cri["sandbox_image"] == "registry.example/pause:3.9"
    for shim in SHIMS:
        assert cri["containerd"]["runtimes"]["kata-%s" % shim]["snapshotter"] == "nydus"
    assert written["proxy_plugins"]["nydus"] == {"type": "snapshot", "address": str(nydus_socket)}
    assert dump(config)["proxy_plugins"]["nydus"]["address"] == str(nydus_socket)
    again = run_role(tmp_path, role_vars)
    assert again.returncode == 0 and recap(again)["changed"] == 0, again.stdout


# --- RuntimeClass overhead from the guest each class boots ------------------------------------------------

@pytest.mark.parametrize("kata", ["3.32.0", "4.1.0"])
def test_runtimeclass_overhead_follows_the_configuration_written(tmp_path: Path, shared_fixtures: Path,
                                                                 kata: str) -> None:
    """The NVIDIA TEE classes boot a confidential guest of default_memory (8192 MiB in upstream's files) that
    cannot grow: podFixed is that plus the VMM's share, and a drop-in the role writes (default_memory) counts.
    A class whose guest grows with the pod keeps the VMM's share alone."""
    prefix = installed_tree(tmp_path)
    defaults = prefix / "share/defaults/kata-containers"
    for shim in SHIMS:
        shutil.copy(shared_fixtures / "kata" / ("configuration-%s.kata-%s.toml" % (shim, kata)),
                    defaults / ("configuration-%s.toml" % shim))
    (defaults / "configuration-qemu.toml").write_text("[hypervisor.qemu]\ndefault_memory = 2048\n")
    manifests = tmp_path / "manifests"
    manifests.mkdir()
    role_vars = containerd_vars(tmp_path, kata_manage_containerd=False, kata_version=kata,
                                kata_shims=SHIMS + ["qemu"], kata_runtimeclass_manifest_dir=str(manifests),
                                kata_runtime_settings={"hypervisor": {"qemu": {"default_vcpus": 2}}})

    def pod_fixed(name: str) -> Dict[str, Any]:
        return yaml.safe_load((manifests / ("kata-%s.yaml" % name)).read_text())["overhead"]["podFixed"]

    first = run_role(tmp_path, role_vars)
    assert first.returncode == 0, first.stdout + first.stderr
    for shim in SHIMS:
        base = tomlkit.parse((defaults / ("configuration-%s.toml" % shim)).read_text()).unwrap()["hypervisor"]["qemu"]
        assert base["default_memory"] == 8192 and base["confidential_guest"] is True
        assert pod_fixed(shim) == {"memory": "%dMi" % (8192 + 320), "cpu": "2250m"}, "vCPUs from the drop-in"
    assert pod_fixed("qemu") == {"memory": "320Mi", "cpu": "250m"}

    bigger = dict(role_vars, kata_runtime_settings={"hypervisor": {"qemu": {"default_memory": 16384}}})
    second = run_role(tmp_path, bigger)
    assert second.returncode == 0, second.stdout + second.stderr
    assert pod_fixed("qemu-nvidia-gpu-snp") == {"memory": "%dMi" % (16384 + 320), "cpu": "1250m"}
    assert "kata-qemu-nvidia-gpu-snp: {'memory': '16704Mi', 'cpu': '1250m'} (confidential guest" in second.stdout


# --- credentials in the release URL (issue 17) --------------------------------------------------------------

SECRET = "s3cr3t-t0ken-for-kata"


@pytest.mark.parametrize("verbosity", [[], ["-v"]], ids=["quiet", "v"])
def test_release_url_credentials_are_never_printed(tmp_path: Path, shared_fixtures: Path, verbosity: List[str]) -> None:
    """kata_release_base_url with user-info: not in the --check line, not in a failed download's message, not in
    -v output; the redacted URL still names the host and the file."""
    server, served = serve_release(tmp_path, shared_fixtures, "3.32.0")
    try:
        root = tmp_path / "root"
        root.mkdir()
        port = server.httpd.server_address[1]
        base = "http://builder:%s@127.0.0.1:%d" % (SECRET, port)
        shown = "http://***@127.0.0.1:%d" % port
        preview = run_role(tmp_path, release_vars(root, served, kata_release_base_url=base), "--check", *verbosity)
        assert preview.returncode == 0, preview.stdout + preview.stderr
        assert "Would install Kata 3.32.0 from %s/%s" % (shown, served["go_asset"]) in preview.stdout, preview.stdout
        assert SECRET not in preview.stdout + preview.stderr, preview.stdout + preview.stderr

        wrong = hashlib.sha256(b"not the tarball").hexdigest()
        failed = run_role(tmp_path, release_vars(root, served, kata_release_base_url=base,
                                                 kata_release_sha256={served["go_asset"]: wrong}), *verbosity)
        assert failed.returncode != 0
        assert "Kata 3.32.0 was not installed from %s" % shown in failed.stdout, failed.stdout
        assert "did not match %s" % wrong in failed.stdout, failed.stdout
        assert SECRET not in failed.stdout + failed.stderr, failed.stdout + failed.stderr
        assert [p for p in root.rglob("*") if p.is_file()] == [], "a file was left below the root"
        assert server.requests == ["/" + served["go_asset"]]
    finally:
        server.close()
