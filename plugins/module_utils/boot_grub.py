# Copyright: contributors to confidential_gpu.host
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Backend ``grub`` (Debian, Ubuntu): one drop-in in ``/etc/default/grub.d/`` that re-assigns
``GRUB_CMDLINE_LINUX`` (and ``GRUB_CMDLINE_LINUX_DEFAULT`` when an argument to remove lives there), then
``update-grub``.  The configured line is computed by sourcing ``/etc/default/grub`` and the drop-ins with
``/bin/sh``, as ``grub-mkconfig`` does, when the root is ``/``; below any other root the files are read by
:mod:`grub_settings`, a parser that runs nothing from them.  Standard library only (Python >= 3.8).
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from typing import List, Optional, Tuple

from ansible_collections.confidential_gpu.host.plugins.module_utils.boot_backend import (
    Backend,
    Outcome,
    Runner,
    read_file,
    restore_after_failure,
    write_file,
)
from ansible_collections.confidential_gpu.host.plugins.module_utils.grub_settings import (
    GrubSettingsError,
    SettingsState,
)
from ansible_collections.confidential_gpu.host.plugins.module_utils.host_files import FileChange
from ansible_collections.confidential_gpu.host.plugins.module_utils.kernel_args_model import (
    Arg,
    KernelCmdlineError,
    Request,
    Tagged,
    check_protected,
    rewrite,
    satisfied,
    split_cmdline,
    split_configured,
    unmet,
)
from ansible_collections.confidential_gpu.host.plugins.module_utils.sysfs import HostRoot


def _sh_quote(text: str) -> str:
    return "'%s'" % text.replace("'", "'\"'\"'")


class GrubBackend(Backend):
    """Debian/Ubuntu GRUB: a drop-in in /etc/default/grub.d/, update-grub when it changed."""

    name = "grub"
    DEFAULTS = "/etc/default/grub"
    DROPINS = "/etc/default/grub.d"
    GRUB_CFG = "/boot/grub/grub.cfg"
    VARIABLES = ("GRUB_CMDLINE_LINUX", "GRUB_CMDLINE_LINUX_DEFAULT")
    _SOURCE = r"""
main=$1 dir=$2 ours=$3 seen=
[ -r "$main" ] && . "$main" >&2
for f in "$dir"/*.cfg; do
    [ -e "$f" ] || continue
    if [ "${f##*/}" = "$ours" ]; then
        base_l=${GRUB_CMDLINE_LINUX-} base_d=${GRUB_CMDLINE_LINUX_DEFAULT-} seen=1
    fi
    . "$f" >&2
done
[ -n "$seen" ] || base_l=${GRUB_CMDLINE_LINUX-} base_d=${GRUB_CMDLINE_LINUX_DEFAULT-}
printf '%s\0%s\0%s\0%s\0' "$base_l" "$base_d" "${GRUB_CMDLINE_LINUX-}" "${GRUB_CMDLINE_LINUX_DEFAULT-}"
"""

    def __init__(self, host: HostRoot, runner: Runner, dropin_name: str) -> None:
        super().__init__(host, runner)
        if not re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_.\-]*\.cfg", dropin_name or ""):
            raise KernelCmdlineError("grub_dropin_name %r: give a file name ending in .cfg (grub-mkconfig reads "
                                     "only /etc/default/grub.d/*.cfg), like 99-confidential-gpu.cfg" % dropin_name)
        self.dropin = "%s/%s" % (self.DROPINS, dropin_name)
        self.dropin_name = dropin_name
        # Debian's grub-mkconfig sources the files with sh (grub2 2.06, /usr/sbin/grub-mkconfig); on the host
        # itself that is what update-grub will do anyway.  A tree (a capture from another host) is parsed, never run.
        self.reader = "sh" if host.root == "/" else "parser"

    def source(self, dropin_text: Optional[str]) -> Tuple[Tuple[str, str], Tuple[str, str]]:
        """(values before our drop-in, values after every file), read as grub-mkconfig sources them.

        ``dropin_text`` stands in for our drop-in (``None``: the drop-in as it is on disk).
        """
        if self.reader == "parser":
            return self._parse(dropin_text)
        return self._source_with_sh(dropin_text)

    def _parse(self, dropin_text: Optional[str]) -> Tuple[Tuple[str, str], Tuple[str, str]]:
        """The same chain as :meth:`_source_with_sh`, through :class:`SettingsState` (no shell, nothing run)."""
        state = SettingsState()
        base: Optional[Tuple[str, str]] = None
        try:
            names = {name for name in self.host.listdir(self.DROPINS) if name.endswith(".cfg")
                     and not name.startswith(".") and os.path.exists(self.host.path("%s/%s" % (self.DROPINS, name)))}
            names |= {self.dropin_name} if dropin_text else set()
            files = [self.DEFAULTS] + ["%s/%s" % (self.DROPINS, name) for name in sorted(names)]
            for host_path in files:
                ours = host_path == self.dropin and dropin_text != ""
                if ours:
                    base = self._values(state)
                text = dropin_text if ours and dropin_text is not None else read_file(self.host, host_path)
                if text:
                    state.read(text, host_path)
            return base or self._values(state), self._values(state)
        except GrubSettingsError as error:
            raise KernelCmdlineError("reading the GRUB settings below root %s without a shell (a tree is never run): "
                                     "%s; nothing was changed" % (self.host.root, error)) from None

    def _values(self, state: SettingsState) -> Tuple[str, str]:
        return state.value(self.VARIABLES[0]), state.value(self.VARIABLES[1])

    def _source_with_sh(self, dropin_text: Optional[str]) -> Tuple[Tuple[str, str], Tuple[str, str]]:
        scratch = tempfile.mkdtemp(prefix="kernel_cmdline.grub.")
        try:
            for name in self.host.listdir(self.DROPINS):
                if name.endswith(".cfg") and not (dropin_text is not None and name == self.dropin_name):
                    os.symlink(os.path.abspath(self.host.path("%s/%s" % (self.DROPINS, name))),
                               os.path.join(scratch, name))
            if dropin_text:
                with open(os.path.join(scratch, self.dropin_name), "w", encoding="utf-8") as handle:
                    handle.write(dropin_text)
            out = self.runner.read(["/bin/sh", "-c", self._SOURCE, "sh",
                                    self.host.path(self.DEFAULTS), scratch, self.dropin_name])
        except KernelCmdlineError as error:
            raise KernelCmdlineError("sourcing %s and %s/*.cfg as grub-mkconfig does failed, so update-grub would "
                                     "fail too; fix the file it names: %s"
                                     % (self.DEFAULTS, self.DROPINS, error)) from None
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        fields = out.split("\0")
        return (fields[0], fields[1]), (fields[2], fields[3])

    def _tagged(self, values: Tuple[str, str]) -> List[Tagged]:
        items: List[Tagged] = []
        for variable, text in zip(self.VARIABLES, values):
            args, init = split_configured(
                text, "%s (as %s and %s/*.cfg set it)" % (variable, self.DEFAULTS, self.DROPINS),
                "close or remove the quote in the file that assigns %s" % variable)
            if init:
                raise KernelCmdlineError("%s holds '--' (arguments for init), which this backend does not edit; "
                                         "move them out of %s" % (variable, variable))
            items += [(arg, variable) for arg in args]
        return items

    def render_dropin(self, base: Tuple[str, str], new: Tuple[List[Arg], List[Arg]]) -> Optional[str]:
        blocks = []
        for variable, base_text, args in zip(self.VARIABLES, base, new):
            base_args = split_cmdline(base_text)[0]
            if [a.text for a in base_args] == [a.text for a in args]:
                continue
            base_texts = [a.text for a in base_args]
            added = [a.text for a in args if a.text not in base_texts]
            lines = ['if [ "${%s-}" = %s ]; then' % (variable, _sh_quote(base_text)),
                     "    %s=%s" % (variable, _sh_quote(" ".join(a.text for a in args))),
                     "else",
                     "    echo %s >&2" % _sh_quote(
                         "%s: %s changed since this file was written; only its added arguments apply: run "
                         "confidential_gpu.host.kernel_cmdline (role kernel_args) again" % (self.dropin, variable))]
            if added:
                lines.append('    %s="${%s-}"%s' % (variable, variable, _sh_quote(" " + " ".join(added))))
            lines.append("fi")
            blocks.append("\n".join(lines))
        if not blocks:
            return None
        header = (
            "# Managed by confidential_gpu.host.kernel_cmdline (Ansible): changes here are overwritten.\n"
            "# grub-mkconfig (update-grub) sources this file after %s and the drop-ins that sort\n"
            "# before it. It sets the kernel arguments asked for on top of the values it was written\n"
            "# for; when those have changed since, it only adds its arguments and says so.\n" % self.DEFAULTS)
        return header + "\n".join(blocks) + "\n"

    def _regenerate_command(self) -> List[str]:
        if self.runner.find("update-grub"):
            return ["update-grub"]
        if self.runner.find("grub-mkconfig"):
            return ["grub-mkconfig", "-o", self.GRUB_CFG]
        raise KernelCmdlineError("neither update-grub nor grub-mkconfig is in %s: install grub2-common (Debian, "
                                 "Ubuntu) or choose the backend that boots this host"
                                 % ":".join(self.runner.search_path))

    def _grub_cfg_stale(self) -> bool:
        try:
            return os.stat(self.host.path(self.GRUB_CFG)).st_mtime < os.stat(self.host.path(self.dropin)).st_mtime
        except OSError:
            return False

    def apply(self, request: Request) -> Outcome:
        base, final_before = self.source(None)
        items = self._tagged(base)
        new_items = rewrite(items, request, append_tag=self.VARIABLES[0])
        base_args = [arg for arg, _tag in items]
        check_protected(base_args, [arg for arg, _tag in new_items], request,
                        "the GRUB configuration (%s, %s/*.cfg)" % (self.DEFAULTS, self.DROPINS))
        linux, linux_default = ([arg for arg, tag in new_items if tag == variable] for variable in self.VARIABLES)
        content = self.render_dropin(base, (linux, linux_default))
        current = read_file(self.host, self.dropin)
        final = final_before if content == current else self.source(content or "")[1]
        configured = self._tagged(final)
        if not satisfied([arg for arg, _tag in configured], request):
            later = [n for n in self.host.listdir(self.DROPINS) if n.endswith(".cfg") and n > self.dropin_name]
            raise KernelCmdlineError(
                "%s would not take effect: %s still lacks %s after it; files sourced later (%s) set the variables "
                "again: give grub_dropin_name a name that sorts after them"
                % (self.dropin, " ".join(self.VARIABLES), "; ".join(unmet([a for a, _t in configured], request)),
                   ", ".join(later) or "none found"))
        change = FileChange(self.dropin, current, content)
        changed = current != content
        if changed or self._grub_cfg_stale():
            self._write_and_regenerate(change, self._regenerate_command())
            changed = True
        return Outcome(changed, [a for a, _t in self._tagged(final_before)], [a for a, _t in configured],
                       [self.dropin] if current != content else [], [change.diff()] if current != content else [])

    def _write_and_regenerate(self, change: FileChange, regenerate: List[str]) -> None:
        if not self.runner.check_mode:
            write_file(self.host, change.host_path, change.after)
        try:
            self.runner.change(regenerate)
        except KernelCmdlineError as error:
            raise restore_after_failure(self.host, change, error, self.runner.check_mode) from None
