# Copyright: contributors to confidential_gpu.host
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Action plugin: edit a containerd configuration file that is not ours, only where needed.

The file is read from the host (slurp), edited on the controller with tomlkit (comments and layout
kept) and written back through the copy action (check mode, diff mode and backups as copy has them).
"""

from __future__ import annotations

import base64
import typing as t

from ansible.plugins.action import ActionBase

from ansible_collections.confidential_gpu.host.plugins.module_utils.containerd_spec import ARGUMENT_SPEC
from ansible_collections.confidential_gpu.host.plugins.plugin_utils import containerd_config as cc
from ansible_collections.confidential_gpu.host.plugins.plugin_utils import root_paths


class ActionModule(ActionBase):
    """See plugins/modules/containerd_runtimes.py for the documentation."""

    TRANSFERS_FILES = True
    _requires_connection = True

    def run(self, tmp: t.Any = None, task_vars: t.Optional[t.Dict[str, t.Any]] = None) -> t.Dict[str, t.Any]:
        task_vars = task_vars or {}
        result = super().run(tmp, task_vars)
        del tmp
        _validation, args = self.validate_argument_spec(argument_spec=ARGUMENT_SPEC)
        try:
            result.update(self._edit(args, task_vars))
        except (cc.ConfigError, root_paths.RootPathError) as exc:
            result.update(failed=True, msg=str(exc))
        finally:
            self._remove_tmp_path(self._connection._shell.tmpdir)
        return result

    def _edit(self, args: t.Dict[str, t.Any], task_vars: t.Dict[str, t.Any]) -> t.Dict[str, t.Any]:
        path = args["path"]
        target = root_paths.below_root(args["root"], path, "path")
        self._refuse_links_outside_root(args["root"], path, target, task_vars)
        text = self._read(target, task_vars)
        wants_edit = bool(args["imports_present"] or args["imports_absent"]
                          or args["runtimes"] or args["runtimes_absent"] or args["tables"])
        if text is None:
            if wants_edit:
                raise cc.ConfigError(
                    "%s does not exist; this action edits an existing containerd configuration only "
                    "(the kata role writes a main file of its own when there is none)" % target)
            return {"changed": False, "path": path, "exists": False, "ours": False, "version": None,
                    "imports": [], "runtimes": {}, "plugin_id": None}

        doc = cc.parse(text, target)
        version = cc.config_version(doc, target)
        plugin_id = args["plugin_id"]
        if not plugin_id and (args["runtimes"] or args["runtimes_absent"]):
            plugin_id = cc.cri_plugin_id(version, target)  # fails on versions without a known CRI plugin
        elif not plugin_id:
            plugin_id = cc.CRI_PLUGIN_BY_VERSION.get(version)
        changed_imports = cc.edit_imports(doc, args["imports_present"], args["imports_absent"], target)
        changed_runtimes = cc.edit_runtimes(doc, plugin_id, args["runtimes"], args["runtimes_absent"], target) \
            if plugin_id else []
        changed_tables = cc.edit_tables(doc, args["tables"], target)
        info = {
            "path": path,
            "exists": True,
            "ours": cc.is_ours(text),
            "version": version,
            "plugin_id": plugin_id,
            "imports": cc.imports_of(doc),
            "runtimes": cc.runtimes_in(doc, plugin_id) if plugin_id else {},
            "changed_runtimes": changed_runtimes,
            "changed_tables": changed_tables,
        }
        if not (changed_imports or changed_runtimes or changed_tables):
            return dict(info, changed=False)
        written = self._write(target, cc.dumps(doc), args["backup"], task_vars)
        if written.get("failed"):
            return written
        info.update(changed=written.get("changed", True))
        for key in ("diff", "backup_file"):
            if key in written:
                info[key] = written[key]
        return info

    def _refuse_links_outside_root(self, root: str, path: str, target: str, task_vars: t.Dict[str, t.Any]) -> None:
        """A link below root on the way to the file that resolves outside root would make the edit land there."""
        def stat(where: str) -> t.Dict[str, t.Any]:
            out = self._execute_module(module_name="ansible.legacy.stat",
                                       module_args={"path": where, "follow": False, "get_checksum": False},
                                       task_vars=task_vars)
            if out.get("failed"):
                raise cc.ConfigError("cannot read %s: %s" % (where, out.get("msg", out)))
            return out["stat"]

        outside = root_paths.link_outside_root(root, target, stat)
        if outside:
            raise root_paths.RootPathError(
                "path %r leads outside root %s: %s is a symbolic link to %s. Nothing was changed; fix or remove "
                "the link, or give the path of the file below root" % (path, root, outside[0], outside[1]))

    def _read(self, target: str, task_vars: t.Dict[str, t.Any]) -> t.Optional[str]:
        stat = self._execute_module(module_name="ansible.legacy.stat",
                                    module_args={"path": target, "get_checksum": False},
                                    task_vars=task_vars)
        if stat.get("failed"):
            raise cc.ConfigError("cannot read %s: %s" % (target, stat.get("msg", stat)))
        if not stat["stat"]["exists"]:
            return None
        if not stat["stat"].get("isreg", False):
            raise cc.ConfigError("%s is not a regular file; point the path at containerd's config.toml" % target)
        slurped = self._execute_module(module_name="ansible.legacy.slurp", module_args={"src": target},
                                       task_vars=task_vars)
        if slurped.get("failed"):
            raise cc.ConfigError("cannot read %s: %s" % (target, slurped.get("msg", slurped)))
        try:
            return base64.b64decode(slurped["content"]).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise cc.ConfigError("%s is not UTF-8 text (%s); it is not a containerd configuration: fix or replace "
                                 "the file" % (target, exc)) from None

    def _write(self, target: str, content: str, backup: bool, task_vars: t.Dict[str, t.Any]) -> t.Dict[str, t.Any]:
        new_task = self._task.copy()
        new_task.args = {"content": content, "dest": target, "backup": backup}
        copy_action = self._shared_loader_obj.action_loader.get(
            "ansible.legacy.copy", task=new_task, connection=self._connection, play_context=self._play_context,
            loader=self._loader, templar=self._templar, shared_loader_obj=self._shared_loader_obj)
        return copy_action.run(task_vars=task_vars)
