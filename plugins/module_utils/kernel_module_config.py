# Copyright: contributors to confidential_gpu.host
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Kernel module options (``/etc/modprobe.d``) and the modules loaded at boot (``/etc/modules-load.d``): the two
files of one owner, planned and written as one set through ``host_files``.

Formats, as read by kmod 30 (``man/modprobe.d.xml``: ``options modulename option...``, one line per module,
``#`` starts a comment) and systemd 252 (``man/modules-load.d.xml``: one module name per line, ``#`` and ``;``
start comments).  Standard library only: this runs on target hosts with Python >= 3.8.
"""

from __future__ import annotations

import re
from typing import Any, Dict, List, Mapping, Optional, Sequence

from ansible_collections.confidential_gpu.host.plugins.module_utils import host_files
from ansible_collections.confidential_gpu.host.plugins.module_utils.host_files import FileChange
from ansible_collections.confidential_gpu.host.plugins.module_utils.sysfs import HostRoot

MODPROBE_DIR = "/etc/modprobe.d"
MODULES_LOAD_DIR = "/etc/modules-load.d"
FILE_MODE = 0o644
# A file name in one of the two directories: no '/', no leading '.', and the .conf both tools read.
CONF_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*\.conf$")
# Module names as modprobe takes them ('-' and '_' are the same to it); no white space, no comment start.
MODULE_NAME = re.compile(r"^[A-Za-z0-9_-]+$")
# Option words "name" or "name=value"; a value may hold what a parameter takes (commas, colons, dots), no blanks.
OPTION_WORDS = re.compile(r"^[A-Za-z0-9_-]+(=[^\s#]*)?(\s+[A-Za-z0-9_-]+(=[^\s#]*)?)*$")
MODPROBE_HEADER = ("# Managed by confidential_gpu.host.kernel_module_config.\n"
                   "# Read when a module loads (at boot, or modprobe -r NAME && modprobe NAME); a kernel\n"
                   "# without one of these parameters ignores it with a warning.\n")
MODULES_LOAD_HEADER = ("# Managed by confidential_gpu.host.kernel_module_config: systemd-modules-load.service loads"
                       " these at boot.\n")


class KernelModuleConfigError(Exception):
    """A value that would make a broken file, or a file that cannot be read or written; the message names it."""


def check_inputs(modprobe_conf: str, modules_load_conf: str, options: Optional[Mapping[str, str]],
                 load: Sequence[str]) -> None:
    """Refuse, before anything is read or written, a value that would write elsewhere or break a file."""
    for option, name in (("modprobe_conf", modprobe_conf), ("modules_load_conf", modules_load_conf)):
        if not CONF_NAME.match(name):
            raise KernelModuleConfigError(
                "%s %r: must be a file name (letters, digits, _ . -) ending in .conf, like confidential-gpu.conf"
                % (option, name))
    for module, words in (options or {}).items():
        if not MODULE_NAME.match(module):
            raise KernelModuleConfigError("options: module name %r: use letters, digits, _ and -" % module)
        if not OPTION_WORDS.match(words):
            raise KernelModuleConfigError(
                "options of %s: %r must be name or name=value words separated by blanks, like sev_snp=1"
                % (module, words))
    for module in load:
        if not MODULE_NAME.match(module):
            raise KernelModuleConfigError("load: module name %r: use letters, digits, _ and -" % module)


def modprobe_text(options: Mapping[str, str]) -> Optional[str]:
    """The modprobe.d file: one ``options`` line per module, sorted; None (no file) without options."""
    if not options:
        return None
    lines = ["options %s %s\n" % (module, " ".join(options[module].split())) for module in sorted(options)]
    return MODPROBE_HEADER + "".join(lines)


def modules_load_text(load: Sequence[str]) -> Optional[str]:
    """The modules-load.d file: one module a line, in the order given, each once; None (no file) for none."""
    names = list(dict.fromkeys(load))
    if not names:
        return None
    return MODULES_LOAD_HEADER + "".join(name + "\n" for name in names)


def plan(host: HostRoot, modprobe_conf: str, modules_load_conf: str,
         options: Optional[Mapping[str, str]], load: Sequence[str]) -> List[FileChange]:
    """The changes that bring both files to their content; ``options`` None leaves the modprobe.d file alone."""
    check_inputs(modprobe_conf, modules_load_conf, options, load)
    wanted = {MODULES_LOAD_DIR + "/" + modules_load_conf: modules_load_text(load)}
    if options is not None:
        wanted[MODPROBE_DIR + "/" + modprobe_conf] = modprobe_text(options)
    changes = [host_files.plan_file(host, path, text, None if text is None else FILE_MODE, KernelModuleConfigError)
               for path, text in sorted(wanted.items())]
    return [change for change in changes if change is not None]


def manage(host: HostRoot, modprobe_conf: str, modules_load_conf: str,
           options: Optional[Mapping[str, str]], load: Sequence[str], check_mode: bool) -> Dict[str, Any]:
    """Plan, and outside check mode write, both files; the module's result."""
    changes = plan(host, modprobe_conf, modules_load_conf, options, load)
    if not check_mode:
        for change in changes:
            host_files.write_file(host, change, KernelModuleConfigError)
    return {"changed": bool(changes), "files": [change.host_path for change in changes],
            "modprobe_conf": MODPROBE_DIR + "/" + modprobe_conf,
            "modules_load_conf": MODULES_LOAD_DIR + "/" + modules_load_conf,
            "diff": [change.diff() for change in changes]}
