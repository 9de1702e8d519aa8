# Copyright: contributors to confidential_gpu.host
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Action for confidential_gpu.host.kata_runtime_config: a Kata shim's settings, written on the target.

Controller side, because Kata's configuration is TOML and the hosts' Python (3.8, standard library) has no TOML
parser: the shim's files are read and written through plugin_utils/remote_files.py (the ``copy`` action brings
check mode, diff mode and idempotence) and understood by plugin_utils/kata_model.py (the configuration model and
its merge rule); the PCIe plan is module_utils/kata_pcie_plan.py.
"""

from __future__ import annotations

import os
from typing import Any, Dict, List, Optional, Tuple

from ansible.plugins.action import ActionBase
from ansible.utils.display import Display

from ansible_collections.confidential_gpu.host.plugins.module_utils.kata_config import ARGUMENT_SPEC
from ansible_collections.confidential_gpu.host.plugins.module_utils.kata_pcie_plan import (
    PlanError,
    plan_lines,
    plan_pcie,
)
from ansible_collections.confidential_gpu.host.plugins.plugin_utils import root_paths
from ansible_collections.confidential_gpu.host.plugins.plugin_utils.kata_model import (
    DROPIN_NAME_RE,
    HEADER,
    KataConfigError,
    check_settings,
    choose_method,
    deep_merge,
    edit_copy,
    effective_config,
    hypervisor_name,
    kata_paths,
    leaf_paths,
    lookup,
    merge_kernel_params,
    overridden_later,
    parse,
    pcie_keys,
    render_dropin,
    tokens,
    vfio_mode,
)
from ansible_collections.confidential_gpu.host.plugins.plugin_utils.remote_files import RemoteFileError, RemoteFiles
from ansible_collections.confidential_gpu.host.plugins.plugin_utils.toml_file import TomlError

display = Display()


class ActionModule(ActionBase):
    TRANSFERS_FILES = True
    _requires_connection = True

    def run(self, tmp: Optional[str] = None, task_vars: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
        result = super().run(tmp, task_vars)
        del tmp
        task_vars = task_vars or {}
        validation, args = self.validate_argument_spec(argument_spec=ARGUMENT_SPEC)
        del validation
        try:
            result.update(self._apply(args, RemoteFiles(self, task_vars, args["root"]), task_vars))
        except (KataConfigError, PlanError, RemoteFileError, TomlError, root_paths.RootPathError) as error:
            result.update(failed=True, msg=str(error))
        finally:
            self._remove_tmp_path(self._connection._shell.tmpdir)
        return result

    def _dropins(self, files: RemoteFiles, config_d: str, ours: Tuple[str, ...]) -> List[Tuple[str, Any]]:
        """Every other entry of config.d (name, parsed TOML), in name order, as the runtime reads them."""
        dropins = []
        for entry in files.entries(config_d):
            name = os.path.basename(entry["path"])
            if name not in ours and not entry.get("isdir"):
                dropins.append((name, parse(files.read(entry["path"]), "config.d/" + name)))
        return dropins

    # -- the work -----------------------------------------------------------

    def _apply(self, args: Dict[str, Any], files: RemoteFiles, task_vars: Dict[str, Any]) -> Dict[str, Any]:
        shim, root = args["shim"], files.root
        if not DROPIN_NAME_RE.fullmatch(args["dropin_name"]) or args["dropin_name"].endswith(".toml"):
            raise KataConfigError("dropin_name %r must be a plain file name without .toml (letters, digits, '.', "
                                  "'_', '-'), e.g. 40-confidential-gpu" % args["dropin_name"])
        try:
            root_paths.normal_host_path(args["prefix"], "prefix")
        except root_paths.RootPathError as error:
            raise KataConfigError("%s; prefix is where Kata is installed, e.g. /opt/kata" % error) from None
        if args["pcie_mode"] != "none" and not args["topology"]:
            raise KataConfigError("pcie_mode %s needs topology: register the result of "
                                  "confidential_gpu.host.pci_topology_info and pass it" % args["pcie_mode"])
        paths = kata_paths(args["prefix"], shim)
        on_target = files.on_target
        if root.rstrip("/") and not files.stat(root).get("isdir"):
            raise KataConfigError("root %s does not exist on the target; pass / or the top of a tree" % root)
        outside = files.link_outside_root(on_target(paths["config_d"]))
        if outside:
            raise KataConfigError("prefix %r leads outside root %s: %s is a symbolic link to %s. Nothing was "
                                  "changed; fix or remove the link, or give the prefix below root"
                                  % (args["prefix"], root, outside[0], outside[1]))
        shipped = files.stat(on_target(paths["shipped"]))
        shim_config = files.stat(on_target(paths["shim_config"]))
        kata_deploy = bool(shipped.get("islnk")) and bool(shim_config.get("exists"))
        method, why = choose_method(args["method"], args["kata_version"], bool(shim_config.get("exists")))

        # The base: what Kata ships for the shim (or kata-deploy's per-shim copy of it).
        if method == "copy" and kata_deploy:
            raise KataConfigError("%s links into runtimes/%s/ (kata-deploy's per-shim layout, Kata >= 3.27): use "
                                  "method dropin" % (paths["shipped"], shim))
        if shipped.get("exists") and not kata_deploy:
            base_path, sync_copy = paths["shipped"], method == "dropin"
        elif shim_config.get("exists") and method == "dropin":
            base_path, sync_copy = paths["shim_config"], False
        else:
            raise KataConfigError("no configuration for shim %s: %s does not exist on the target; is Kata installed "
                                  "under prefix %s, and is %s one of its shims?"
                                  % (shim, paths["shipped"], args["prefix"], shim))
        base_text = files.read(on_target(base_path))
        base = parse(base_text, base_path)
        hypervisor = hypervisor_name(base, shim, base_path)
        warnings = check_settings(args["settings"], hypervisor, base, base_path)

        settings_name = args["dropin_name"] + ".toml"
        params_name = args["dropin_name"] + "-kernel-params.toml"
        others = self._dropins(files, on_target(paths["config_d"]), (settings_name, params_name)) \
            if method == "dropin" else []

        plan = None
        if args["pcie_mode"] != "none":
            plan = plan_pcie(args["topology"], args["devices"], args["pcie_mode"],
                             vfio_mode=vfio_mode(deep_merge(effective_config(base, others), args["settings"]),
                                                 hypervisor))
            if self._task.check_mode or plan["errors"]:
                display.display("%s: %s" % (task_vars.get("inventory_hostname", "?"), "\n  ".join(plan_lines(plan))))
            if plan["errors"]:
                return {"failed": True, "pcie_plan": plan, "msg": "PCIe plan for shim %s: %s"
                        % (shim, "; ".join(plan["errors"]))}
            warnings.extend(plan["warnings"])

        before_settings = effective_config(base, [(n, d) for n, d in others if n < settings_name])
        before_params = effective_config(base, [(n, d) for n, d in others if n < params_name])
        params_key = ("hypervisor", hypervisor, "kernel_params")
        base_params = tokens(lookup(before_params, params_key))
        params = merge_kernel_params(base_params, args["kernel_params"], args["kernel_params_absent"])
        settings = deep_merge(args["settings"], {"hypervisor": {hypervisor: pcie_keys(plan, before_settings,
                                                                                      hypervisor)}})
        settings = {section: tables for section, tables in settings.items() if leaf_paths({section: tables})}
        header = [HEADER % shim]

        outcome: Dict[str, Any] = {
            "method": method, "method_reason": why, "base_config": base_path, "config_path": paths["shim_config"],
            "hypervisor": hypervisor, "kernel_params": params, "settings": settings, "pcie_plan": plan, "files": [],
            "removed": []}
        if method == "dropin":
            changes = self._write_dropins(paths, files, base_text if sync_copy else None, settings, params,
                                          base_params, hypervisor, header, (settings_name, params_name), outcome)
            warnings.extend(overridden_later(settings, [(n, d) for n, d in others if n > settings_name]))
            if params != base_params:
                warnings.extend(overridden_later({"hypervisor": {hypervisor: {"kernel_params": params}}},
                                                 [(n, d) for n, d in others if n > params_name]))
        else:
            changes = self._write_copy(paths, files, base_text, settings, params, base_params, hypervisor,
                                       header, (settings_name, params_name), outcome)
        outcome["changed"] = any(change.get("changed") for change in changes)
        diffs = []
        for change in changes:
            diff = change.get("diff")
            diffs.extend(diff if isinstance(diff, list) else [diff] if diff else [])
        if diffs and self._task.diff:
            outcome["diff"] = diffs
        if warnings:
            outcome["warnings"] = warnings
        return outcome

    def _write_dropins(self, paths: Dict[str, str], files: RemoteFiles, copy_text: Optional[str],
                       settings: Dict[str, Any], params: List[str], base_params: List[str], hypervisor: str,
                       header: List[str], names: Tuple[str, str], outcome: Dict[str, Any]) -> List[Dict[str, Any]]:
        on_target = files.on_target
        changes = [files.directory(on_target(paths["shim_dir"])), files.directory(on_target(paths["config_d"]))]
        if copy_text is not None:
            changes.append(files.write(on_target(paths["shim_config"]), copy_text, "0644"))
            outcome["files"].append(paths["shim_config"])
        settings_path = "%s/%s" % (paths["config_d"], names[0])
        params_path = "%s/%s" % (paths["config_d"], names[1])
        if settings:
            changes.append(files.write(on_target(settings_path), render_dropin(settings, header), "0644"))
            outcome["files"].append(settings_path)
        else:
            self._remove(settings_path, files, outcome, changes)
        if params != base_params:
            note = ["Kata replaces kernel_params with the value of the last drop-in that sets it, so this one",
                    "repeats the parameters before it (base configuration, earlier drop-ins) and adds its own."]
            text = render_dropin({"hypervisor": {hypervisor: {"kernel_params": " ".join(params)}}}, header + note)
            changes.append(files.write(on_target(params_path), text, "0644"))
            outcome["files"].append(params_path)
        else:
            self._remove(params_path, files, outcome, changes)
        return changes

    def _write_copy(self, paths: Dict[str, str], files: RemoteFiles, base_text: str, settings: Dict[str, Any],
                    params: List[str], base_params: List[str], hypervisor: str, header: List[str],
                    names: Tuple[str, str], outcome: Dict[str, Any]) -> List[Dict[str, Any]]:
        changes = [files.directory(files.on_target(paths["shim_dir"]))]
        edits = settings
        if params != base_params:
            edits = deep_merge(settings, {"hypervisor": {hypervisor: {"kernel_params": " ".join(params)}}})
        note = ["A copy of %s with this module's settings; Kata releases before 2.5.0 read no" % paths["shipped"],
                "config.d/ drop-ins. Comments and all other values are upstream's."]
        text = edit_copy(base_text, edits, header + note, paths["shipped"])
        changes.append(files.write(files.on_target(paths["shim_config"]), text, "0644"))
        outcome["files"].append(paths["shim_config"])
        for name in names:
            self._remove("%s/%s" % (paths["config_d"], name), files, outcome, changes)
        return changes

    @staticmethod
    def _remove(path: str, files: RemoteFiles, outcome: Dict[str, Any], changes: List[Dict[str, Any]]) -> None:
        """Remove a drop-in of ours that is no longer wanted (a file left in config.d would still apply)."""
        out = files.absent(files.on_target(path))
        if out.get("changed"):
            outcome["removed"].append(path)
        changes.append(out)
