# Copyright: contributors to confidential_gpu.host
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Action for confidential_gpu.host.kata_runtime_config: a Kata shim's settings, written on the target.

Controller side, because Kata's configuration is TOML and the hosts' Python
(3.8, standard library) has no TOML parser: the shim's base configuration and
its ``config.d/`` drop-ins are read from the target (``stat``, ``find``,
``slurp``), parsed here with tomlkit, and the files are written back through
the ``copy`` action and the ``file`` module, which bring check mode, diff mode
and idempotence.  The planning and the merge rules are plain functions in
``module_utils`` (``kata_pcie_plan``, ``kata_config``).
"""

from __future__ import annotations

import base64
import os
import shutil
import tempfile
from typing import Any, Dict, List, Optional, Tuple

from ansible import constants as C
from ansible.plugins.action import ActionBase
from ansible.utils.display import Display

from ansible_collections.confidential_gpu.host.plugins.module_utils.kata_config import (
    ARGUMENT_SPEC,
    DROPIN_NAME_RE,
    HEADER,
    KataConfigError,
    check_settings,
    choose_method,
    deep_merge,
    effective_config,
    hypervisor_name,
    kata_paths,
    leaf_paths,
    lookup,
    merge_kernel_params,
    overridden_later,
    pcie_keys,
    tokens,
)
from ansible_collections.confidential_gpu.host.plugins.module_utils.kata_pcie_plan import (
    PlanError,
    plan_lines,
    plan_pcie,
)
from ansible_collections.confidential_gpu.host.plugins.plugin_utils import root_paths

try:
    import tomlkit
    from tomlkit.exceptions import TOMLKitError
except ImportError:  # reported by run()
    tomlkit = None
    TOMLKitError = Exception

display = Display()


class RemoteError(Exception):
    """A module run on the target failed; the message says which and why."""


# ---------------------------------------------------------------------------
# TOML on the controller (tomlkit keeps comments and layout of what it edits)


def parse_toml(text: str, where: str) -> Any:
    """A tomlkit document; KataConfigError naming the file when it is not TOML."""
    try:
        return tomlkit.parse(text)
    except TOMLKitError as error:
        raise KataConfigError("%s is not valid TOML (%s); Kata would refuse it too: fix or remove it"
                              % (where, error)) from None


def comment_block(lines: List[str]) -> str:
    return "".join("# %s\n" % line if line else "#\n" for line in lines)


def render_dropin(tree: Dict[str, Any], header: List[str]) -> str:
    """A drop-in holding ``tree`` (section -> key -> value, or section -> table -> key -> value)."""
    doc = tomlkit.document()
    for section in sorted(tree):
        content = tree[section]
        if section in ("hypervisor", "agent"):
            outer = tomlkit.table(is_super_table=True)
            for name in sorted(content):
                inner = tomlkit.table()
                for key in sorted(content[name]):
                    inner.add(key, content[name][key])
                outer.add(name, inner)
            doc.add(section, outer)
        else:
            table = tomlkit.table()
            for key in sorted(content):
                table.add(key, content[key])
            doc.add(section, table)
    return comment_block(header) + "\n" + tomlkit.dumps(doc)


def edit_copy(base_text: str, changes: Dict[str, Any], header: List[str], where: str) -> str:
    """The base configuration with ``changes`` set in place; comments and every other line kept."""
    doc = parse_toml(base_text, where)
    for path, value in leaf_paths(changes):
        node = doc
        for key in path[:-1]:
            if key not in node:
                node.add(key, tomlkit.table(is_super_table=key in ("hypervisor", "agent")))
            node = node[key]
        node[path[-1]] = value
    return comment_block(header) + "\n" + tomlkit.dumps(doc)


def plain(doc: Any) -> Dict[str, Any]:
    """A tomlkit document as plain Python values."""
    return doc.unwrap()


# ---------------------------------------------------------------------------
# The action


def vfio_mode(config: Dict[str, Any], hypervisor: str) -> str:
    """How Kata hands the pod's devices to the guest: ``iommufd`` for a confidential guest (Kata refuses the
    legacy VFIO group path for confidential guests from 3.26.0, src/runtime/virtcontainers/qemu.go:
    "ConfidentialGuest needs IOMMUFD"), ``group`` otherwise; kata_pcie_plan counts ports accordingly."""
    return "iommufd" if lookup(config, ("hypervisor", hypervisor, "confidential_guest")) is True else "group"


class ActionModule(ActionBase):
    TRANSFERS_FILES = True
    _requires_connection = True

    def run(self, tmp: Optional[str] = None, task_vars: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
        result = super().run(tmp, task_vars)
        del tmp
        task_vars = task_vars or {}
        if tomlkit is None:
            result.update(failed=True, msg="kata_runtime_config needs the Python library tomlkit on the controller: "
                                           "pip install tomlkit")
            return result
        validation, args = self.validate_argument_spec(argument_spec=ARGUMENT_SPEC)
        del validation
        try:
            result.update(self._apply(args, task_vars))
        except (KataConfigError, PlanError, RemoteError) as error:
            result.update(failed=True, msg=str(error))
        finally:
            self._remove_tmp_path(self._connection._shell.tmpdir)
        return result

    # -- target access -----------------------------------------------------

    def _module(self, name: str, module_args: Dict[str, Any], task_vars: Dict[str, Any]) -> Dict[str, Any]:
        out = self._execute_module(module_name=name, module_args=module_args, task_vars=task_vars)
        if out.get("failed"):
            raise RemoteError("%s on the target failed for %s: %s"
                              % (name.rsplit(".", 1)[-1], module_args.get("path") or module_args.get("src")
                                 or module_args.get("paths"), out.get("msg", out)))
        return out

    def _stat(self, path: str, task_vars: Dict[str, Any]) -> Dict[str, Any]:
        out = self._module("ansible.legacy.stat", {"path": path, "follow": False, "get_checksum": False,
                                                   "get_mime": False, "get_attributes": False}, task_vars)
        return out["stat"]

    def _slurp(self, path: str, task_vars: Dict[str, Any]) -> str:
        try:
            out = self._module("ansible.legacy.slurp", {"src": path}, task_vars)
        except RemoteError:
            found = self._stat(path, task_vars)
            if found.get("islnk"):
                raise KataConfigError("%s is a symbolic link that leads to no readable file (to %s: a loop, or a "
                                      "target that is missing); point it at the Kata configuration, or remove it "
                                      "and reinstall Kata" % (path, found.get("lnk_target") or "?")) from None
            raise
        return base64.b64decode(out["content"]).decode("utf-8")

    def _dropins(self, config_d: str, ours: Tuple[str, ...], task_vars: Dict[str, Any]) -> List[Tuple[str, Any]]:
        """Every other file of config.d (name, parsed TOML), in name order, as the runtime reads them."""
        if not self._stat(config_d, task_vars).get("isdir"):
            return []
        found = self._module("ansible.legacy.find", {"paths": [config_d], "hidden": True, "file_type": "any",
                                                     "recurse": False}, task_vars)
        dropins = []
        for entry in sorted(found.get("files", []), key=lambda item: item["path"]):
            name = os.path.basename(entry["path"])
            if name in ours or entry.get("isdir"):
                continue
            dropins.append((name, plain(parse_toml(self._slurp(entry["path"], task_vars), "config.d/" + name))))
        return dropins

    def _directory(self, path: str, task_vars: Dict[str, Any]) -> Dict[str, Any]:
        return self._module("ansible.legacy.file", {"path": path, "state": "directory", "mode": "0755"}, task_vars)

    def _absent(self, path: str, task_vars: Dict[str, Any]) -> Dict[str, Any]:
        return self._module("ansible.legacy.file", {"path": path, "state": "absent"}, task_vars)

    def _write(self, dest: str, text: str, task_vars: Dict[str, Any]) -> Dict[str, Any]:
        """Write through the copy action: check mode, diff and idempotence as copy has them."""
        local_dir = tempfile.mkdtemp(dir=C.DEFAULT_LOCAL_TMP)
        try:
            source = os.path.join(local_dir, os.path.basename(dest))
            with open(source, "w", encoding="utf-8") as handle:
                handle.write(text)
            new_task = self._task.copy()
            new_task.args.clear()
            new_task.args.update({"src": source, "dest": dest, "mode": "0644", "backup": False})
            copy_action = self._shared_loader_obj.action_loader.get(
                "ansible.legacy.copy", task=new_task, connection=self._connection, play_context=self._play_context,
                loader=self._loader, templar=self._templar, shared_loader_obj=self._shared_loader_obj)
            out = copy_action.run(task_vars=task_vars)
        finally:
            shutil.rmtree(local_dir, ignore_errors=True)
        if out.get("failed"):
            raise RemoteError("writing %s failed: %s" % (dest, out.get("msg", out)))
        # copy returns a list of diffs when it changed the file and a single dict when it did not
        diffs = out.get("diff") or []
        for diff in [diffs] if isinstance(diffs, dict) else diffs:
            diff["before_header"] = diff["after_header"] = dest
        return out

    # -- the work -----------------------------------------------------------

    def _apply(self, args: Dict[str, Any], task_vars: Dict[str, Any]) -> Dict[str, Any]:
        shim, root = args["shim"], args["root"] or "/"
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

        def on_target(path: str) -> str:
            return path if root in ("/", "") else root.rstrip("/") + path

        if root not in ("/", "") and not self._stat(root, task_vars).get("isdir"):
            raise KataConfigError("root %s does not exist on the target; pass / or the top of a tree" % root)
        outside = root_paths.link_outside_root(root, on_target(paths["config_d"]),
                                               lambda where: self._stat(where, task_vars))
        if outside:
            raise KataConfigError("prefix %r leads outside root %s: %s is a symbolic link to %s. Nothing was "
                                  "changed; fix or remove the link, or give the prefix below root"
                                  % (args["prefix"], root, outside[0], outside[1]))
        shipped = self._stat(on_target(paths["shipped"]), task_vars)
        shim_config = self._stat(on_target(paths["shim_config"]), task_vars)
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
        base_text = self._slurp(on_target(base_path), task_vars)
        base = plain(parse_toml(base_text, base_path))
        hypervisor = hypervisor_name(base, shim, base_path)
        warnings = check_settings(args["settings"], hypervisor, base, base_path)

        settings_name = args["dropin_name"] + ".toml"
        params_name = args["dropin_name"] + "-kernel-params.toml"
        others = self._dropins(on_target(paths["config_d"]), (settings_name, params_name), task_vars) \
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

        outcome = {"method": method, "method_reason": why, "base_config": base_path,
                   "config_path": paths["shim_config"], "hypervisor": hypervisor, "kernel_params": params,
                   "settings": settings, "pcie_plan": plan, "files": [], "removed": []}
        if method == "dropin":
            changes = self._write_dropins(paths, on_target, base_text if sync_copy else None, settings, params,
                                          base_params, hypervisor, header, (settings_name, params_name), outcome,
                                          task_vars)
            warnings.extend(overridden_later(settings, [(n, d) for n, d in others if n > settings_name]))
            if params != base_params:
                warnings.extend(overridden_later({"hypervisor": {hypervisor: {"kernel_params": params}}},
                                                 [(n, d) for n, d in others if n > params_name]))
        else:
            changes = self._write_copy(paths, on_target, base_text, settings, params, base_params, hypervisor,
                                       header, (settings_name, params_name), outcome, task_vars)
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

    def _write_dropins(self, paths: Dict[str, str], on_target: Any, copy_text: Optional[str],
                       settings: Dict[str, Any], params: List[str], base_params: List[str], hypervisor: str,
                       header: List[str], names: Tuple[str, str], outcome: Dict[str, Any],
                       task_vars: Dict[str, Any]) -> List[Dict[str, Any]]:
        changes = [self._directory(on_target(paths["shim_dir"]), task_vars),
                   self._directory(on_target(paths["config_d"]), task_vars)]
        if copy_text is not None:
            changes.append(self._write(on_target(paths["shim_config"]), copy_text, task_vars))
            outcome["files"].append(paths["shim_config"])
        settings_path = "%s/%s" % (paths["config_d"], names[0])
        params_path = "%s/%s" % (paths["config_d"], names[1])
        if settings:
            changes.append(self._write(on_target(settings_path), render_dropin(settings, header), task_vars))
            outcome["files"].append(settings_path)
        else:
            self._remove(settings_path, on_target, outcome, changes, task_vars)
        if params != base_params:
            note = ["Kata replaces kernel_params with the value of the last drop-in that sets it, so this one",
                    "repeats the parameters before it (base configuration, earlier drop-ins) and adds its own."]
            text = render_dropin({"hypervisor": {hypervisor: {"kernel_params": " ".join(params)}}}, header + note)
            changes.append(self._write(on_target(params_path), text, task_vars))
            outcome["files"].append(params_path)
        else:
            self._remove(params_path, on_target, outcome, changes, task_vars)
        return changes

    def _write_copy(self, paths: Dict[str, str], on_target: Any, base_text: str, settings: Dict[str, Any],
                    params: List[str], base_params: List[str], hypervisor: str, header: List[str],
                    names: Tuple[str, str], outcome: Dict[str, Any], task_vars: Dict[str, Any]) -> List[Dict[str, Any]]:
        changes = [self._directory(on_target(paths["shim_dir"]), task_vars)]
        edits = settings
        if params != base_params:
            edits = deep_merge(settings, {"hypervisor": {hypervisor: {"kernel_params": " ".join(params)}}})
        note = ["A copy of %s with this module's settings; Kata releases before 2.5.0 read no" % paths["shipped"],
                "config.d/ drop-ins. Comments and all other values are upstream's."]
        text = edit_copy(base_text, edits, header + note, paths["shipped"])
        changes.append(self._write(on_target(paths["shim_config"]), text, task_vars))
        outcome["files"].append(paths["shim_config"])
        for name in names:
            self._remove("%s/%s" % (paths["config_d"], name), on_target, outcome, changes, task_vars)
        return changes

    def _remove(self, path: str, on_target: Any, outcome: Dict[str, Any], changes: List[Dict[str, Any]],
                task_vars: Dict[str, Any]) -> None:
        """Remove a drop-in of ours that is no longer wanted (a file left in config.d would still apply)."""
        out = self._absent(on_target(path), task_vars)
        if out.get("changed"):
            outcome["removed"].append(path)
        changes.append(out)
