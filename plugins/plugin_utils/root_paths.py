# Copyright: contributors to confidential_gpu.host
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Host paths below a ``root`` prefix, for action plugins that read and write files on a target.

A path option names a file as the host sees it (``/etc/containerd/config.toml``); with ``root`` other than
``/`` the file is ``<root>/etc/containerd/config.toml``. A plain join lets ``/../../tmp/x.toml`` or a link on
the target lead out of ``root``: :func:`below_root` refuses ``..`` and control characters, and
:func:`link_outside_root` finds the first link on the way that resolves outside ``root``.
"""

from __future__ import annotations

import posixpath
import typing as t


class RootPathError(ValueError):
    """A path option that would lead outside ``root``, or that is not a plain absolute path."""


def normal_host_path(path: t.Any, option: str) -> str:
    """``path`` as a normalised absolute host path; refuses relative paths, '..' and control characters."""
    if not isinstance(path, str) or not path.startswith("/"):
        raise RootPathError("%s %r must be an absolute path as the host sees it (e.g. /etc/containerd/config.toml)"
                            % (option, path))
    if any(ord(char) < 0x20 or char == "\x7f" for char in path):
        raise RootPathError("%s %r holds a control character (newline, tab, NUL): give the plain path"
                            % (option, path))
    if ".." in path.split("/"):
        raise RootPathError("%s %r has a '..' component, which could lead outside root: give the path without "
                            "'..' (the file as the host sees it, e.g. /etc/containerd/config.toml)" % (option, path))
    return "/" + posixpath.normpath(path).lstrip("/")


def below_root(root: t.Optional[str], path: t.Any, option: str) -> str:
    """The target's path of host path ``path`` below ``root`` (``path`` itself when root is / or empty)."""
    normal = normal_host_path(path, option)
    if not root or root.rstrip("/") == "":
        return normal
    return root.rstrip("/") + normal


def ancestors_below_root(root: t.Optional[str], target: str) -> t.List[str]:
    """Every path from the first component below ``root`` down to ``target`` (a path made by below_root)."""
    top = (root or "/").rstrip("/")
    rest = target[len(top):].strip("/").split("/") if target.startswith(top + "/") else []
    return [top + "/" + "/".join(rest[:count]) for count in range(1, len(rest) + 1)]


def link_outside_root(root: t.Optional[str], target: str,
                      stat: t.Callable[[str], t.Dict[str, t.Any]]) -> t.Optional[t.Tuple[str, str]]:
    """The first symbolic link on the way from ``root`` to ``target`` that resolves outside ``root``, as
    (link, where it resolves), or None. ``stat`` is the stat module's ``stat`` result of a path, not followed
    (its ``lnk_source`` is the link's fully resolved path). With root / nothing is outside."""
    if not root or root.rstrip("/") == "":
        return None
    top = root.rstrip("/")
    top_stat = stat(top)
    top_real: str = (top_stat.get("lnk_source") or top) if top_stat.get("islnk") else posixpath.normpath(top)
    for path in ancestors_below_root(root, target):
        found = stat(path)
        if not found.get("exists"):
            return None
        if found.get("islnk"):
            resolved = found.get("lnk_source") or ""
            if resolved != top_real and not resolved.startswith(top_real.rstrip("/") + "/"):
                return path, resolved
    return None
