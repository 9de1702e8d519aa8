# Copyright: contributors to confidential_gpu.host
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Backend ``grubby`` (EL, Fedora): ``grubby --update-kernel=ALL``. Standard library only (Python >= 3.8)."""

from __future__ import annotations

import re
from typing import Any, Dict, List, Optional

from ansible_collections.confidential_gpu.host.plugins.module_utils.boot_backend import (
    Backend,
    Outcome,
    cmdline_file_change,
    line_diff,
    read_file,
    restore_after_failure,
    write_file,
)
from ansible_collections.confidential_gpu.host.plugins.module_utils.host_files import FileChange
from ansible_collections.confidential_gpu.host.plugins.module_utils.kernel_args_model import (
    Arg,
    KernelCmdlineError,
    Request,
    Unit,
    absent_matches,
    apply_request,
    changed_units,
    check_protected,
    satisfied,
    split_configured,
    unmet,
)


class GrubbyBackend(Backend):
    """EL/Fedora: grubby --update-kernel=ALL (every boot entry), and /etc/kernel/cmdline when it exists."""

    name = "grubby"
    KERNEL_CMDLINE = "/etc/kernel/cmdline"

    def entries(self) -> List[Dict[str, Any]]:
        """``grubby --info=ALL``: index, kernel, args (root= is printed apart; put back first)."""
        entries: List[Dict[str, Any]] = []
        for line in self.runner.read(["grubby", "--info=ALL"]).splitlines():
            key, sep, value = line.partition("=")
            if not sep:
                continue
            value = value[1:-1] if len(value) >= 2 and value[0] == value[-1] == '"' else value
            if key == "index":
                entries.append({"index": int(value), "kernel": "", "args": "", "root": None})
            elif entries and key in ("kernel", "args", "root"):
                entries[-1][key] = value
        if not entries:
            raise KernelCmdlineError("grubby --info=ALL lists no boot entry: install a kernel, or choose the "
                                     "backend that boots this host")
        for entry in entries:
            where = "grubby entry %s (grubby --info=ALL)" % entry["kernel"]
            fix = "correct its options (grubby --update-kernel=%s --remove-args/--args, or its file in " \
                  "/boot/loader/entries)" % entry["kernel"]
            args = [arg for arg in split_configured(entry["args"], where, fix)[0] if not arg.text.startswith("$")]
            if entry["root"]:
                args.insert(0, Arg("root", entry["root"], "root=%s" % entry["root"]))
            entry["parsed"] = args
        return entries

    def default_index(self) -> int:
        text = self.runner.read(["grubby", "--default-index"]).strip()
        try:
            return int(text)
        except ValueError:
            raise KernelCmdlineError("grubby --default-index printed %r, not an entry index" % text) from None

    def _default(self, entries: List[Dict[str, Any]]) -> Dict[str, Any]:
        index = self.default_index()
        return next((e for e in entries if e["index"] == index), entries[0])

    def command(self, entries: List[Dict[str, Any]], request: Request) -> Optional[List[str]]:
        """One grubby call: --remove-args (every key of a unit to rewrite, each absent one), --args."""
        remove: List[str] = []
        rewritten: List[Unit] = []
        for entry in entries:
            args = entry["parsed"]
            for unit in changed_units(args, request):
                rewritten += [unit] if unit not in rewritten else []
                remove += self._removals([a for a in args if a.name in unit.names], remove, by_key=True)
            remove += self._removals(absent_matches(args, request), remove, by_key=False)
        add = [arg.text for unit in request.units if unit in rewritten for arg in unit.args]
        if not remove and not add:
            return None
        argv = ["grubby", "--update-kernel=ALL"]
        if remove:
            argv.append("--remove-args=%s" % " ".join(remove))
        if add:
            argv.append("--args=%s" % " ".join(add))
        return argv

    @staticmethod
    def _removals(args: List[Arg], already: List[str], by_key: bool) -> List[str]:
        """Words for --remove-args: a key removes every value of it, key=value one occurrence.

        A word is repeated as often as it occurs in one entry (grubby removes one
        match per word when occurrences touch).
        """
        words = [arg.key if by_key else arg.text for arg in args]
        out: List[str] = []
        for word in words:
            if words.count(word) > already.count(word) + out.count(word):
                out.append(word)
        for arg in args:
            if re.search(r"\s", arg.text):
                raise KernelCmdlineError("%s holds a space: grubby cannot remove it; edit the boot entries by hand"
                                         % arg.text)
        return out

    def apply(self, request: Request) -> Outcome:
        self._single_line_values(request)
        entries = self.entries()
        default = self._default(entries)
        before = default["parsed"]
        for entry in entries:
            check_protected(entry["parsed"], apply_request(entry["parsed"], request), request,
                            "boot entry %s" % entry["kernel"])
        file_change = self._kernel_cmdline_change(request)
        argv = self.command(entries, request)
        diff = [line_diff("grubby entry %s" % e["kernel"], e["parsed"], apply_request(e["parsed"], request))
                for e in entries if not satisfied(e["parsed"], request)]
        if file_change:
            diff.append(file_change.diff())
            if not self.runner.check_mode:
                write_file(self.host, file_change.host_path, file_change.after)
        if argv:
            try:
                self.runner.change(argv)
            except KernelCmdlineError as error:
                raise restore_after_failure(self.host, file_change, error, self.runner.check_mode) from None
        configured = apply_request(before, request)
        if argv and not self.runner.check_mode:
            entries = self.entries()
            stale = [e for e in entries if not satisfied(e["parsed"], request)]
            if stale:
                raise KernelCmdlineError("grubby ran but these entries still differ from the request: %s (%s)"
                                         % (", ".join(e["kernel"] for e in stale),
                                            "; ".join(unmet(stale[0]["parsed"], request))))
            configured = self._default(entries)["parsed"]
        return Outcome(bool(argv or file_change), before, configured,
                       [self.KERNEL_CMDLINE] if file_change else [], diff)

    def _kernel_cmdline_change(self, request: Request) -> Optional[FileChange]:
        """Kernels installed later take their arguments from /etc/kernel/cmdline when it exists: keep it in step."""
        return cmdline_file_change(self.host, self.KERNEL_CMDLINE, read_file(self.host, self.KERNEL_CMDLINE),
                                   request, create=False)
