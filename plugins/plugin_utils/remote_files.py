# Copyright: contributors to confidential_gpu.host
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The one way action plugins reach files on the target: below ``root``, through stat, find, slurp, file and copy.

Reads run the ``stat``, ``find`` and ``slurp`` modules; writes go through the ``copy`` action (check mode, diff
mode, idempotence and backups as copy has them) and the ``file`` module. Paths are mapped below ``root`` by
root_paths, and a link on the way that resolves outside ``root`` is found before anything is written.
"""

from __future__ import annotations

import base64
import typing as t

from ansible_collections.confidential_gpu.host.plugins.plugin_utils import root_paths


class RemoteFileError(Exception):
    """A file on the target that cannot be read or written; the message names it and why."""


class RemoteFiles:
    """The files of one action's target below ``root``."""

    def __init__(self, action: t.Any, task_vars: t.Dict[str, t.Any], root: t.Optional[str]) -> None:
        self.action = action
        self.task_vars = task_vars
        self.root = root or "/"

    def on_target(self, path: t.Any, option: str = "path") -> str:
        """Host path ``path`` as the target's path below root (RootPathError for '..', relative paths)."""
        return root_paths.below_root(self.root, path, option)

    def _module(self, name: str, args: t.Dict[str, t.Any], verb: str, target: t.Any) -> t.Dict[str, t.Any]:
        out: t.Dict[str, t.Any] = self.action._execute_module(module_name="ansible.legacy." + name,
                                                              module_args=args, task_vars=self.task_vars)
        if out.get("failed"):
            raise RemoteFileError("cannot %s %s: %s" % (verb, target, out.get("msg", out)))
        return out

    def stat(self, target: str) -> t.Dict[str, t.Any]:
        """The stat module's result for ``target``, links not followed (``lnk_source`` is where one resolves)."""
        return dict(self._module("stat", {"path": target, "follow": False, "get_checksum": False, "get_mime": False,
                                          "get_attributes": False}, "read", target)["stat"])

    def read(self, target: str) -> str:
        """The text of ``target``; a link that leads nowhere (a loop, a missing file) is named as such."""
        try:
            content = self._module("slurp", {"src": target}, "read", target)["content"]
        except RemoteFileError:
            found = self.stat(target)
            if found.get("islnk"):
                raise RemoteFileError("%s is a symbolic link that leads to no readable file (to %s: a loop, or a "
                                      "target that is missing); point it at the file, or remove it"
                                      % (target, found.get("lnk_target") or "?")) from None
            raise
        try:
            return base64.b64decode(content).decode("utf-8")
        except UnicodeDecodeError as error:
            raise RemoteFileError("%s is not UTF-8 text (%s), so not a configuration file: fix or replace the file"
                                  % (target, error)) from None

    def read_regular(self, target: str, fix: str) -> t.Optional[str]:
        """The text of regular file ``target``, None when there is none; another kind of file is refused with
        ``fix`` (what to point the path at)."""
        found = self.stat(target)
        if not found.get("exists"):
            return None
        if not found.get("isreg"):
            raise RemoteFileError("%s is not a regular file; %s" % (target, fix))
        return self.read(target)

    def entries(self, directory: str) -> t.List[t.Dict[str, t.Any]]:
        """Every entry of ``directory`` (hidden ones too, no recursion) as find reports it, by path; [] when
        ``directory`` is not a directory."""
        if not self.stat(directory).get("isdir"):
            return []
        found = self._module("find", {"paths": [directory], "hidden": True, "file_type": "any", "recurse": False},
                             "read", directory)
        return sorted(found.get("files", []), key=lambda entry: str(entry["path"]))

    def directory(self, target: str, mode: str = "0755") -> t.Dict[str, t.Any]:
        return self._module("file", {"path": target, "state": "directory", "mode": mode}, "create directory", target)

    def absent(self, target: str) -> t.Dict[str, t.Any]:
        return self._module("file", {"path": target, "state": "absent"}, "remove", target)

    def write(self, target: str, content: str, mode: t.Optional[str] = None,
              backup: bool = False) -> t.Dict[str, t.Any]:
        """Write ``content`` to ``target`` through the copy action; its diffs carry ``target`` as their header."""
        action = self.action
        new_task = action._task.copy()
        new_task.args = {"content": content, "dest": target, "backup": backup}
        if mode is not None:
            new_task.args["mode"] = mode
        copy_action = action._shared_loader_obj.action_loader.get(
            "ansible.legacy.copy", task=new_task, connection=action._connection, play_context=action._play_context,
            loader=action._loader, templar=action._templar, shared_loader_obj=action._shared_loader_obj)
        out: t.Dict[str, t.Any] = copy_action.run(task_vars=self.task_vars)
        if out.get("failed"):
            raise RemoteFileError("cannot write %s: %s" % (target, out.get("msg", out)))
        diffs = out.get("diff") or []  # copy gives a list of diffs when it changed the file, one dict when not
        for diff in [diffs] if isinstance(diffs, dict) else diffs:
            diff["before_header"] = diff["after_header"] = target
        return out

    def link_outside_root(self, target: str) -> t.Optional[t.Tuple[str, str]]:
        """The first link on the way from root to ``target`` that resolves outside root, as (link, where)."""
        return root_paths.link_outside_root(self.root, target, self.stat)
