# Copyright: contributors to confidential_gpu.host
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""What the boot-loader backends share: :class:`Backend`, :class:`Outcome`, the :class:`Runner` (check mode
records commands without running them), files below the :class:`HostRoot`, the restore after a failed tool.
Standard library only: this runs on target hosts with Python >= 3.8.
"""

from __future__ import annotations

import re
from typing import Dict, List, NamedTuple, Optional, Sequence

from ansible_collections.confidential_gpu.host.plugins.module_utils.host_write import CommandRunner
from ansible_collections.confidential_gpu.host.plugins.module_utils import host_files
from ansible_collections.confidential_gpu.host.plugins.module_utils.host_files import FileChange
from ansible_collections.confidential_gpu.host.plugins.module_utils.kernel_args_model import (
    Arg,
    KernelCmdlineError,
    Request,
    apply_request,
    check_protected,
    join_args,
    satisfied,
    split_configured,
)
from ansible_collections.confidential_gpu.host.plugins.module_utils.sysfs import HostRoot


class Runner(CommandRunner):
    """Boot-loader tools, failures as :class:`KernelCmdlineError`."""

    error = KernelCmdlineError
    missing_hint = "install it or pass command_path"


def read_file(host: HostRoot, host_path: str) -> Optional[str]:
    """Content of a configuration file; ``None`` when it does not exist; an error when it cannot be read."""
    return host_files.read_file(host, host_path, KernelCmdlineError)[0]


def write_file(host: HostRoot, host_path: str, content: Optional[str]) -> None:
    """Replace a file atomically (keeping its mode, 0644 when new), or remove it when ``content`` is None."""
    host_files.write_file(host, FileChange(host_path, None, content), KernelCmdlineError)


def restore_after_failure(host: HostRoot, change: Optional[FileChange], error: KernelCmdlineError,
                          check_mode: bool) -> KernelCmdlineError:
    """A tool failed after ``change`` was written: put the file back; the error to raise says whether it was."""
    if change is None or check_mode:
        return error
    try:
        write_file(host, change.host_path, change.before)
    except KernelCmdlineError as restore_error:
        return KernelCmdlineError("%s; restoring %s failed too (%s): put it back by hand"
                                  % (error, change.host_path, restore_error))
    return KernelCmdlineError("%s; %s was restored to what it was before this run" % (error, change.host_path))


def line_diff(header: str, before: Sequence[Arg], after: Sequence[Arg]) -> Dict[str, str]:
    return {"before": "\n".join(a.text for a in before) + "\n", "after": "\n".join(a.text for a in after) + "\n",
            "before_header": header, "after_header": header}


class Outcome(NamedTuple):
    """What a backend found and did (or would do, in check mode)."""

    changed: bool
    before: List[Arg]
    configured: List[Arg]
    files: List[str]
    diff: List[Dict[str, str]]


class Backend:
    name = ""

    def __init__(self, host: HostRoot, runner: Runner) -> None:
        self.host = host
        self.runner = runner

    def apply(self, request: Request) -> Outcome:
        raise NotImplementedError

    def _single_line_values(self, request: Request) -> None:
        """grubby and ostree split arguments on spaces: a value with one cannot pass through them."""
        for arg in request.present:
            if arg.value is not None and re.search(r"\s", arg.value):
                raise KernelCmdlineError("%s: the %s backend cannot set a value that holds a space (grubby and "
                                         "rpm-ostree split arguments on spaces)" % (arg.text, self.name))


def cmdline_file_change(host: HostRoot, host_path: str, text: Optional[str], request: Request,
                        create: bool, fallback: str = "") -> Optional[FileChange]:
    if text is None and not create:
        return None
    args, init = split_configured(text if text is not None else fallback, host_path,
                                  "close or remove the quote in %s" % host_path)
    new = apply_request(args, request)
    check_protected(args, new, request, host_path)
    if text is not None and satisfied(args, request):
        return None
    content = join_args(new, init) + "\n"
    return None if content == text else FileChange(host_path, text, content)
