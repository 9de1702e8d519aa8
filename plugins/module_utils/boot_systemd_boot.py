# Copyright: contributors to confidential_gpu.host
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Backend ``systemd_boot``: ``/etc/kernel/cmdline``, then ``kernel-install add`` for every installed kernel.
Standard library only (Python >= 3.8)."""

from __future__ import annotations

from typing import Dict, List, Optional, Tuple

from ansible_collections.confidential_gpu.host.plugins.module_utils.boot_backend import (
    Backend,
    Outcome,
    cmdline_file_change,
    read_file,
    restore_after_failure,
    write_file,
)
from ansible_collections.confidential_gpu.host.plugins.module_utils.kernel_args_model import (
    LOADER_KEYS,
    Arg,
    KernelCmdlineError,
    Request,
    join_args,
    satisfied,
    split_cmdline,
    split_configured,
)


class SystemdBootBackend(Backend):
    """systemd-boot / kernel-install: /etc/kernel/cmdline, then kernel-install add for every installed kernel."""

    name = "systemd_boot"
    KERNEL_CMDLINE = "/etc/kernel/cmdline"
    FALLBACK = "/usr/lib/kernel/cmdline"
    ENTRY_DIRS = ("/efi/loader/entries", "/boot/efi/loader/entries", "/boot/loader/entries")
    MODULE_DIRS = ("/usr/lib/modules", "/lib/modules")

    def source_line(self) -> Tuple[Optional[str], str]:
        """(/etc/kernel/cmdline or None, the line kernel-install uses).

        kernel-install reads /etc/kernel/cmdline, else /usr/lib/kernel/cmdline, else /proc/cmdline.
        """
        text = read_file(self.host, self.KERNEL_CMDLINE)
        if text is not None:
            split_configured(text, self.KERNEL_CMDLINE, "close or remove the quote in %s" % self.KERNEL_CMDLINE)
            return text, text
        fix = "write the line every kernel should get to %s by hand" % self.KERNEL_CMDLINE
        fallback = read_file(self.host, self.FALLBACK)
        if fallback is None:
            args, _init = split_configured(self.host.read_text("/proc/cmdline"), "/proc/cmdline", fix)
            fallback = join_args(a for a in args if a.key not in LOADER_KEYS)
        split_configured(fallback, self.FALLBACK, fix)
        return None, fallback

    def entries(self) -> List[Tuple[str, str, List[Arg]]]:
        """Type #1 boot loader entries with a Linux kernel: (path, version, options)."""
        found = []
        for directory in self.ENTRY_DIRS:
            for name in self.host.listdir(directory):
                if not name.endswith(".conf"):
                    continue
                path = "%s/%s" % (directory, name)
                fields: Dict[str, List[str]] = {}
                for line in (read_file(self.host, path) or "").splitlines():
                    key, _sep, value = line.strip().partition(" ")
                    fields.setdefault(key, []).append(value.strip())
                if "linux" in fields:
                    version = (fields.get("version") or [""])[0]
                    found.append((path, version, split_cmdline(" ".join(fields.get("options", [])))[0]))
        return found

    def kernels(self) -> List[Tuple[str, str]]:
        """Installed kernels: (version, image) from /usr/lib/modules/<v>/vmlinuz or /boot/vmlinuz-<v>."""
        kernels: Dict[str, str] = {}
        for directory in self.MODULE_DIRS:
            for version in self.host.listdir(directory):
                for image in ("%s/%s/vmlinuz" % (directory, version), "/boot/vmlinuz-%s" % version):
                    if version not in kernels and self.host.exists(image):
                        kernels[version] = image
        if not kernels:
            raise KernelCmdlineError("no installed kernel found (looked for /usr/lib/modules/<version>/vmlinuz and "
                                     "/boot/vmlinuz-<version>), so kernel-install has nothing to write entries for")
        return sorted(kernels.items())

    def apply(self, request: Request) -> Outcome:
        text, line = self.source_line()
        before = split_cmdline(line)[0]
        change = cmdline_file_change(self.host, self.KERNEL_CMDLINE, text, request, create=True, fallback=line)
        configured = split_cmdline(change.after if change else line)[0]
        stale = [path for path, _version, args in self.entries() if not satisfied(args, request)]
        if not change and not stale:
            return Outcome(False, before, configured, [], [])
        files, diff = ([self.KERNEL_CMDLINE], [change.diff()]) if change else ([], [])
        if change and not stale and [a.pair for a in configured] == [a.pair for a in before]:
            # Only pins what kernel-install already uses (its fallback) in /etc/kernel/cmdline.
            if not self.runner.check_mode:
                write_file(self.host, change.host_path, change.after)
            return Outcome(True, before, configured, files, diff)
        if not self.runner.find("kernel-install"):
            raise KernelCmdlineError("kernel-install is not in %s: install systemd (it ships kernel-install) or "
                                     "choose the backend that boots this host" % ":".join(self.runner.search_path))
        kernels = self.kernels()
        if change and not self.runner.check_mode:
            write_file(self.host, change.host_path, change.after)
        try:
            for version, image in kernels:
                self.runner.change(["kernel-install", "add", version, image])
        except KernelCmdlineError as error:
            raise restore_after_failure(self.host, change, error, self.runner.check_mode) from None
        if not self.runner.check_mode:
            left = [path for path, _v, args in self.entries() if not satisfied(args, request)]
            if left:
                raise KernelCmdlineError("kernel-install ran but these entries still differ from %s: %s; they may "
                                         "belong to kernels that are no longer installed: remove them"
                                         % (self.KERNEL_CMDLINE, ", ".join(left)))
        return Outcome(True, before, configured, files, diff)
