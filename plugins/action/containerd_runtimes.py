# Copyright: contributors to confidential_gpu.host
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Action plugin: edit a containerd configuration file that is not ours, only where needed.

The file is read from the host and written back through plugin_utils/remote_files.py (the copy action: check
mode, diff mode and backups as copy has them), edited on the controller with tomlkit (comments and layout kept).
"""

from __future__ import annotations

import typing as t

from ansible.plugins.action import ActionBase

from ansible_collections.confidential_gpu.host.plugins.module_utils.containerd_spec import ARGUMENT_SPEC
from ansible_collections.confidential_gpu.host.plugins.plugin_utils import containerd_config as cc
from ansible_collections.confidential_gpu.host.plugins.plugin_utils import root_paths
from ansible_collections.confidential_gpu.host.plugins.plugin_utils.remote_files import RemoteFileError, RemoteFiles
from ansible_collections.confidential_gpu.host.plugins.plugin_utils.toml_file import dumps


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
            result.update(self._edit(args, RemoteFiles(self, task_vars, args["root"])))
        except (cc.ConfigError, root_paths.RootPathError, RemoteFileError) as exc:
            result.update(failed=True, msg=str(exc))
        finally:
            self._remove_tmp_path(self._connection._shell.tmpdir)
        return result

    @staticmethod
    def _edit(args: t.Dict[str, t.Any], files: RemoteFiles) -> t.Dict[str, t.Any]:
        path = args["path"]
        target = files.on_target(path)
        outside = files.link_outside_root(target)
        if outside:  # a link below root on the way to the file that resolves outside root: the edit would land there
            raise root_paths.RootPathError(
                "path %r leads outside root %s: %s is a symbolic link to %s. Nothing was changed; fix or remove "
                "the link, or give the path of the file below root" % (path, files.root, outside[0], outside[1]))
        text = files.read_regular(target, "point the path at containerd's config.toml")
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
        written = files.write(target, dumps(doc), backup=args["backup"])
        info.update(changed=written.get("changed", True))
        for key in ("diff", "backup_file"):
            if key in written:
                info[key] = written[key]
        return info
