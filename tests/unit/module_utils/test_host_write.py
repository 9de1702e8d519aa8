# Copyright: contributors to confidential_gpu.host
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The write side: the one sysfs writer (its timeout policy, real blocking writes), the one command runner and the
managed-file set."""

from __future__ import annotations

import errno
import os
import time
from pathlib import Path

import pytest
from ansible_collections.confidential_gpu.host.plugins.module_utils.host_files import plan_file, write_file
from ansible_collections.confidential_gpu.host.plugins.module_utils.host_write import (
    ROOT_ENV,
    CommandError,
    CommandRunner,
    SysfsWriteError,
    SysfsWriteTimeout,
    read_attributes,
    write_attribute,
)
from ansible_collections.confidential_gpu.host.plugins.module_utils.sysfs import HostRoot

ATTRIBUTE = "/sys/bus/pci/devices/0000:01:00.0/sriov_numvfs"


def attribute(root: Path, content: bytes = b"0\n") -> Path:
    path = root / ATTRIBUTE.lstrip("/")
    path.parent.mkdir(parents=True)
    path.write_bytes(content)
    return path


def test_a_write_the_kernel_holds_is_abandoned_and_its_writer_killed(tmp_path: Path) -> None:
    """A FIFO nobody reads blocks the open for writing, as the kernel blocks an unbind or a sriov_numvfs write
    while a guest holds the device: the call returns after the limit, and the writer does not stay behind."""
    path = attribute(tmp_path)
    path.unlink()
    os.mkfifo(path)
    started = time.monotonic()
    with pytest.raises(SysfsWriteTimeout) as caught:
        write_attribute(HostRoot(str(tmp_path)), ATTRIBUTE, "0\n", 0.5)
    assert time.monotonic() - started < 5
    assert str(caught.value) == (
        "writing 0 to %s did not return within 0.5 s (writer process %d killed; the write may still take effect "
        "when the kernel lets it go)" % (ATTRIBUTE, caught.value.pid))
    with pytest.raises(ProcessLookupError):
        os.kill(caught.value.pid, 0)  # killed and reaped: no writer is left to write later
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    try:
        assert os.read(fd, 16) == b"", "nothing was written after the timeout"
    finally:
        os.close(fd)


def test_a_missing_attribute_is_refused_naming_it_and_never_created(tmp_path: Path) -> None:
    (tmp_path / "sys").mkdir()
    with pytest.raises(SysfsWriteError) as caught:
        write_attribute(HostRoot(str(tmp_path)), ATTRIBUTE, "2\n", 5)
    assert str(caught.value) == "cannot open %s for writing: No such file or directory" % ATTRIBUTE
    assert (caught.value.errno, caught.value.stage) == (errno.ENOENT, "open")
    assert not (tmp_path / ATTRIBUTE.lstrip("/")).exists()


def test_a_plain_write_replaces_the_value_as_a_shell_redirection_does(tmp_path: Path) -> None:
    path = attribute(tmp_path, b"16\n")
    assert write_attribute(HostRoot(str(tmp_path)), ATTRIBUTE, "4\n", 5) == b""
    assert path.read_bytes() == b"4\n"


def test_a_write_at_an_offset_changes_only_those_bytes_and_reads_them_back(tmp_path: Path) -> None:
    path = attribute(tmp_path, bytes(16))
    back = write_attribute(HostRoot(str(tmp_path)), ATTRIBUTE, b"\x1d\x00", 5, offset=6, read_back=2)
    assert back == b"\x1d\x00"
    assert path.read_bytes() == bytes(6) + b"\x1d" + bytes(9)


# --------------------------------------------------------------------------
# Commands
# --------------------------------------------------------------------------

class ToolError(Exception):
    """What a module reports (a runner subclass names it)."""


class ToolRunner(CommandRunner):
    error = ToolError
    missing_hint = "install it or pass command_path"


def tool(bin_dir: Path, name: str, body: str) -> None:
    bin_dir.mkdir(exist_ok=True)
    path = bin_dir / name
    path.write_text("#!/bin/sh\n" + body + "\n")
    path.chmod(0o755)


def test_reads_that_may_wait_answer_each_file_or_none_at_all(tmp_path: Path) -> None:
    """Each file's text as HostRoot.read_text gives it, None where missing; a FIFO nobody writes blocks the read
    as the console lock blocks vtconsole's bind: the call returns None after the limit, and tries nothing after it."""
    host = HostRoot(str(tmp_path))
    attribute(tmp_path, b" 1\n")
    assert read_attributes(host, [ATTRIBUTE, "/sys/missing"], 5) == [host.read_text(ATTRIBUTE), None] == ["1", None]
    blocked = tmp_path / "sys/blocked"
    os.mkfifo(blocked)
    started = time.monotonic()
    assert read_attributes(host, [ATTRIBUTE, "/sys/blocked", "/sys/blocked"], 1.0) is None
    assert time.monotonic() - started < 1.9, "one wait of 1 s, not one per blocked file"


def test_every_tool_gets_the_root_the_same_way(tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    tool(bin_dir, "update-initramfs", 'echo "initramfs $%s"' % ROOT_ENV)
    tool(bin_dir, "grubby", 'echo "grubby $%s"' % ROOT_ENV)
    runner = ToolRunner([str(bin_dir)], True, "/srv/tree")
    assert runner.read(["update-initramfs", "-u"]) == "initramfs /srv/tree\n"
    assert runner.read(["grubby", "--info=ALL"]) == "grubby /srv/tree\n"


def test_check_mode_records_a_changing_command_without_running_it(tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    tool(bin_dir, "modprobe", 'touch "$%s/ran"' % ROOT_ENV)
    ToolRunner([str(bin_dir)], True, str(tmp_path)).change(["modprobe", "vfio-pci"])
    assert not (tmp_path / "ran").exists()
    runner = ToolRunner([str(bin_dir)], False, str(tmp_path))
    runner.change(["modprobe", "vfio-pci"])
    assert (tmp_path / "ran").exists() and runner.commands == [["modprobe", "vfio-pci"]]


def test_failures_name_the_command_its_status_and_the_fix(tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    tool(bin_dir, "dracut", "echo 'no space left on /boot' >&2; exit 3")
    tool(bin_dir, "hangs", "exec sleep 30")
    runner = ToolRunner([str(bin_dir)], False, "/")
    with pytest.raises(ToolError, match=r"^dracut -f failed \(rc=3\): no space left on /boot$"):
        runner.change(["dracut", "-f"])
    with pytest.raises(ToolError, match=r"^grub-mkconfig not found in %s; install it or pass command_path$"
                       % bin_dir):
        runner.read(["grub-mkconfig"])
    with pytest.raises(ToolError, match=r"^hangs did not finish within 0.5 s$"):
        runner.read(["hangs"], timeout=0.5)
    with pytest.raises(CommandError, match="modprobe not found"):
        CommandRunner([str(bin_dir)], False, "/").change(["modprobe", "x"])


# --------------------------------------------------------------------------
# The managed-file set (host_files)
# --------------------------------------------------------------------------

def test_a_managed_file_is_written_once_then_converged_and_a_mode_change_shows(tmp_path: Path) -> None:
    host = HostRoot(str(tmp_path))
    created = plan_file(host, "/usr/local/libexec/tool", "#!/bin/sh\n", 0o755, ToolError)
    assert created is not None and created.diff() == {
        "before": "", "after": "#!/bin/sh\n", "before_header": "/usr/local/libexec/tool (absent)",
        "after_header": "/usr/local/libexec/tool"}
    write_file(host, created, ToolError)
    path = tmp_path / "usr/local/libexec/tool"
    assert path.read_text() == "#!/bin/sh\n" and path.stat().st_mode & 0o7777 == 0o755
    assert plan_file(host, "/usr/local/libexec/tool", "#!/bin/sh\n", 0o755, ToolError) is None, "idempotent"
    path.chmod(0o644)
    moved = plan_file(host, "/usr/local/libexec/tool", "#!/bin/sh\n", 0o755, ToolError)
    assert moved is not None and (moved.diff()["before_header"], moved.diff()["after_header"]) == (
        "/usr/local/libexec/tool (mode 0644)", "/usr/local/libexec/tool (mode 0755)")
    removed = plan_file(host, "/usr/local/libexec/tool", None, None, ToolError)
    assert removed is not None and removed.diff()["after_header"] == "/usr/local/libexec/tool (absent)"
    write_file(host, removed, ToolError)
    assert not path.exists() and plan_file(host, "/usr/local/libexec/tool", None, None, ToolError) is None


def test_an_unreadable_managed_file_fails_naming_it(tmp_path: Path) -> None:
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc/sriov.conf").write_bytes(b"\xff\xfe")
    with pytest.raises(ToolError, match=r"^cannot read /etc/sriov.conf: 'utf-8' codec can't decode"):
        plan_file(HostRoot(str(tmp_path)), "/etc/sriov.conf", "x\n", 0o644, ToolError)
