# Copyright: contributors to confidential_gpu.host
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""A systemd unit's whole life on the host, for the modules that install one with its boot program.

The unit and the program are files of the collection (``files/``) that the module's action plugin hands over
(``_shipped_files``); :func:`shipped_text` takes one and fills its ``@NAME@`` placeholders.  Enabling is what
``systemctl enable`` does for a unit in /etc/systemd/system: one symlink ``<target>.wants/<unit>`` (or
``.requires``) per ``WantedBy=`` (``RequiredBy=``) of the ``[Install]`` section, pointing at the unit's path
(systemd man/systemd.unit.xml and src/shared/install.c, v252), so it works below any root, as
``systemctl --root`` does.  After a change on the running host, :func:`daemon_reload` has systemd read the units
again.  Standard library only.
"""

from __future__ import annotations

import os
import re
from typing import Callable, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

from ansible_collections.confidential_gpu.host.plugins.module_utils import host_files
from ansible_collections.confidential_gpu.host.plugins.module_utils.host_files import ErrorType, FileChange
from ansible_collections.confidential_gpu.host.plugins.module_utils.sysfs import HostRoot

UNIT_DIR = "/etc/systemd/system"
INSTALL_LINK_DIRS = {"WantedBy": ".wants", "RequiredBy": ".requires"}
_PLACEHOLDER = re.compile(r"@[A-Z_]+@")
LinkChange = Tuple[str, Optional[str], Optional[str]]  # link, its target now, the target wanted (None: absent)
# The internal option the action plugin fills (plugin_utils/shipped_files.py; doc fragment shipped_files).
SHIPPED_FILES_OPTION = {"_shipped_files": {"type": "dict", "default": {}}}
LINK = 0o120000  # FileChange.mode of an enablement link (S_IFLNK): before and after are its targets


def shipped_text(texts: Mapping[str, str], name: str, values: Optional[Mapping[str, str]] = None) -> str:
    """File ``name`` of the collection with its placeholders filled; ValueError when it did not come or a
    placeholder is left (the file and this code out of step)."""
    if name not in texts:
        raise ValueError("the collection's file %s did not reach the module: run it as a task (its action plugin "
                         "hands the file over), not as a bare module" % name)
    text = texts[name]
    for key, value in (values or {}).items():
        text = text.replace("@%s@" % key, value)
    left = _PLACEHOLDER.findall(text)
    if left:
        raise ValueError("the collection's file %s still has %s after rendering" % (name, ", ".join(left)))
    return text


def install_links(unit_name: str, unit_text: str) -> Dict[str, str]:
    """The links ``systemctl enable`` makes for the unit (link path -> target), from its ``[Install]`` section."""
    links = {}
    section = ""
    unit_path = "%s/%s" % (UNIT_DIR, unit_name)
    for line in unit_text.splitlines():
        line = line.strip()
        if line.startswith("[") and line.endswith("]"):
            section = line[1:-1]
        elif section == "Install" and "=" in line and not line.startswith(("#", ";")):
            key, value = (part.strip() for part in line.split("=", 1))
            for target in value.split() if key in INSTALL_LINK_DIRS else []:
                links["%s/%s%s/%s" % (UNIT_DIR, target, INSTALL_LINK_DIRS[key], unit_name)] = unit_path
    return links


def present_links(host: HostRoot, unit_name: str) -> List[str]:
    """``/etc/systemd/system/*.wants/<unit>`` and ``*.requires/<unit>`` links there now."""
    links = []
    for entry in host.listdir(UNIT_DIR):
        if entry.endswith(tuple(INSTALL_LINK_DIRS.values())):
            link = "%s/%s/%s" % (UNIT_DIR, entry, unit_name)
            if os.path.islink(host.path(link)):
                links.append(link)
    return links


def link_changes(host: HostRoot, unit_name: str, unit_text: Optional[str]) -> List[LinkChange]:
    """(link, target now, target wanted) for each enablement link to make, fix or remove (unit_text None)."""
    wanted = install_links(unit_name, unit_text) if unit_text is not None else {}
    changes = []
    for link in sorted(set(wanted) | set(present_links(host, unit_name))):
        now = host.readlink(link)
        if now != wanted.get(link):
            changes.append((link, now, wanted.get(link)))
    return changes


def unit_changes(host: HostRoot, unit_name: str, unit_text: Optional[str],
                 files: Iterable[Tuple[str, Optional[str], int]], error: ErrorType) -> List[FileChange]:
    """The files (host path, content or None to remove, mode) and the unit's enablement links (mode ``LINK``;
    removed when ``unit_text`` is None) that differ from what they should be."""
    changes = [host_files.plan_file(host, path, after, mode, error) for path, after, mode in files]
    return [change for change in changes if change is not None] + [
        FileChange(link, now, target, LINK) for link, now, target in link_changes(host, unit_name, unit_text)]


def write_changes(host: HostRoot, changes: Iterable[FileChange], error: ErrorType) -> None:
    """Carry out :func:`unit_changes`: files through host_files, links pointed at their target or removed."""
    for change in changes:
        if change.mode != LINK:
            host_files.write_file(host, change, error)
            continue
        path = host.path(change.host_path)
        try:
            if os.path.lexists(path):
                os.unlink(path)
            if change.after is not None:
                host_files.make_directories(os.path.dirname(path))
                os.symlink(change.after, path)
        except OSError as failure:
            raise error("cannot %s %s: %s" % ("link" if change.after else "remove", change.host_path,
                                              failure)) from None


def change_diff(change: FileChange) -> Dict[str, str]:
    """Ansible's diff of a change of :func:`unit_changes`; a link shows as ``symlink -> target``."""
    if change.mode != LINK:
        return change.diff()
    return {"before_header": change.host_path, "after_header": change.host_path + ("" if change.after else " (absent)"),
            "before": "symlink -> %s\n" % change.before if change.before else "",
            "after": "symlink -> %s\n" % change.after if change.after else ""}


def daemon_reload(run_command: Callable[[Sequence[str]], Tuple[int, str, str]], root: str) -> Optional[str]:
    """``systemctl daemon-reload`` on the running host (root /, systemd booted: /run/systemd/system, as
    sd_booted(3) tells); the error text when it fails, None otherwise or when there is nothing to reload."""
    if os.path.realpath(root) != "/" or not os.path.isdir("/run/systemd/system"):
        return None
    code, out, err = run_command(["systemctl", "daemon-reload"])
    return None if code == 0 else "systemctl daemon-reload failed (%d): %s" % (code, (err or out).strip())
