# Copyright: contributors to confidential_gpu.host
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The Kata configuration model of the controller side: one shim's files, versions, the drop-in merge, the checks.

Used by the action ``kata_runtime_config`` (which writes a shim's drop-ins), the filters
``kata_measurement_inputs`` / ``kata_kernel_cmdline`` (role ``attestation``) and ``kata_pod_overhead`` (role
``kata``), so that each reads a configuration and its drop-ins the way the runtime does, by one rule:

- where a shim's configuration lives: ``<prefix>/share/defaults/kata-containers/configuration-<shim>.toml``, and
  the action's own copy of it in ``runtimes/<shim>/configuration-<shim>.toml`` beside a ``config.d/`` directory
  (the per-shim layout kata-deploy uses since Kata 3.27, so that each shim has a ``config.d/`` of its own:
  drop-ins beside the shared file would apply to every shim);
- how the Go runtime merges drop-ins: kata-containers ``src/runtime/pkg/katautils/config.go`` at tag 2.5.0
  (commit 0f9856c465 brought it; ``decodeDropIns`` and ``updateFromDropIn`` read the same at 3.32.0 and 4.1.0
  but for ``ioutil.ReadDir`` becoming ``os.ReadDir``). ``decodeDropIns`` reads every entry of the ``config.d/``
  beside the (symlink-resolved) configuration file in ``ReadDir`` order, that is by file name, whatever the
  name; ``updateFromDropIn`` decodes each over the configuration so that every key it sets replaces the value
  before it (arrays and strings alike, so a ``kernel_params`` drop-in must repeat the base parameters) and the
  ``[hypervisor.<name>]`` / ``[agent.<name>]`` tables keep the keys it does not set (``applyKey``);
- the checks a user's ``settings`` must pass before anything is written, and the TOML the action writes
  (parsed and dumped through plugin_utils/toml_file.py only).
"""

from __future__ import annotations

import copy
import posixpath
import re
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from ansible_collections.confidential_gpu.host.plugins.plugin_utils import toml_file

# The Go runtime reads config.d/ beside its (resolved) configuration file from this release on:
# kata-containers src/runtime/pkg/katautils/config.go decodeDropIns(), first in tag 2.5.0 (commit 0f9856c465,
# "runtime: Scan drop-in directory, read files and decode them"; not in 2.4.3).
DROPINS_SINCE = (2, 5, 0)
# kata-deploy installs each shim as runtimes/<shim>/ with its own config.d/ from this release on; only the
# layout is new there (the shipped configuration-<shim>.toml becomes a link into it), not the drop-ins.
KATA_DEPLOY_PER_SHIM_LAYOUT_SINCE = (3, 27, 0)
SECTIONS = ("hypervisor", "agent", "runtime", "factory")
# Keys this module sets itself: the user's settings may not set them.
OWN_KEYS = ("kernel_params", "cold_plug_vfio", "hot_plug_vfio", "pcie_root_port", "pcie_switch_port")
SHIM_RE = re.compile(r"^[a-z0-9][a-z0-9.-]*$")
DROPIN_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
VERSION_RE = re.compile(r"(\d+)\.(\d+)(?:\.(\d+))?")
HEADER = ("Managed by confidential_gpu.host.kata_runtime_config (shim %s): edits here are overwritten; "
          "change the task instead.")


class KataConfigError(ValueError):
    """Input that cannot be applied; the message names the value and the fix."""


def parse_version(text: Optional[str]) -> Optional[Tuple[int, int, int]]:
    """(major, minor, patch) from ``3.27.0`` or ``kata-runtime --version`` output (first version on it)."""
    if not text:
        return None
    match = VERSION_RE.search(str(text))
    if not match:
        return None
    return int(match.group(1)), int(match.group(2)), int(match.group(3) or 0)


def runs_on_runtime_rs(shim: str) -> bool:
    """Whether a shim is one of runtime-rs (Rust) rather than of the Go runtime."""
    return shim.endswith("-runtime-rs") or shim in ("dragonball", "cloud-hypervisor")


def kata_paths(prefix: str, shim: str) -> Dict[str, str]:
    """Host paths of a shim's configuration files (below no root)."""
    if not SHIM_RE.fullmatch(shim):  # fullmatch: '$' alone lets a trailing newline through
        raise KataConfigError("shim %r is not a Kata shim name (lower-case letters, digits, '-', e.g. "
                              "qemu-nvidia-gpu-snp)" % shim)
    if runs_on_runtime_rs(shim):
        raise KataConfigError("shim %s runs on runtime-rs, whose configuration and PCIe handling this module does "
                              "not manage; use the Go runtime's shim (%s)" % (shim, shim.replace("-runtime-rs", "")))
    defaults = prefix.rstrip("/") + "/share/defaults/kata-containers"
    per_shim = "%s/runtimes/%s" % (defaults, shim)
    return {
        "defaults_dir": defaults,
        "shipped": "%s/configuration-%s.toml" % (defaults, shim),
        "shim_dir": per_shim,
        "shim_config": "%s/configuration-%s.toml" % (per_shim, shim),
        "config_d": per_shim + "/config.d",
    }


def choose_method(method: str, version_text: Optional[str], per_shim_layout: bool) -> Tuple[str, str]:
    """``dropin`` or ``copy``, and why."""
    if method in ("dropin", "copy"):
        return method, "asked for"
    version = parse_version(version_text)
    if version_text and version is None:
        raise KataConfigError("kata_version %r holds no version number; pass e.g. 3.27.0 or the output of "
                              "kata-runtime --version" % version_text)
    since = ".".join(str(part) for part in DROPINS_SINCE)
    if version is not None:
        if version >= DROPINS_SINCE:
            return "dropin", "Kata %d.%d.%d reads config.d/ drop-ins (since %s)" % (version + (since,))
        return "copy", "Kata %d.%d.%d predates config.d/ drop-ins (%s): managed copy" % (version + (since,))
    if per_shim_layout:
        return "dropin", "per-shim directory runtimes/<shim>/ present (kata-deploy >= %s)" % ".".join(
            str(part) for part in KATA_DEPLOY_PER_SHIM_LAYOUT_SINCE)
    raise KataConfigError("cannot tell which Kata release is installed: pass kata_version (the output of "
                          "kata-runtime --version), or method dropin (Kata >= %s) or copy" % since)


def tokens(kernel_params: Any) -> List[str]:
    """Kernel parameters of a ``kernel_params`` string, split the way Kata splits them (whitespace)."""
    return str(kernel_params or "").split()


# What a guest kernel parameter must not hold: '"' opens a quoted value in the kernel's own parser (Linux
# lib/cmdline.c next_arg()), so one stray quote swallows every parameter after it; backslashes and non-printable
# or non-ASCII characters have no reliable reading through TOML, Kata and QEMU's -append.
_UNSAFE_KERNEL_PARAM = re.compile(r'["\\]|[^\x21-\x7e]')


def merge_kernel_params(base: Sequence[str], present: Sequence[str], absent: Sequence[str]) -> List[str]:
    """Base parameters in their order, minus ``absent``, then each of ``present`` not there yet.

    ``absent`` items are exact parameters (``pci=nocrs``) or bare keys (``pci``, every value of it).
    """
    for item in list(present) + list(absent):
        if not item or len(item.split()) != 1:
            raise KataConfigError("kernel parameter %r must be one word without spaces (Kata splits "
                                  "kernel_params on whitespace)" % item)
        if _UNSAFE_KERNEL_PARAM.search(item):
            raise KataConfigError("kernel parameter %r holds a double quote, a backslash or a character outside "
                                  "printable ASCII: the guest kernel reads a double quote as the start of a quoted "
                                  "value that swallows the parameters after it (lib/cmdline.c next_arg), and the "
                                  "rest cannot be read back reliably; drop it" % item)
    conflict = sorted(set(present) & set(absent))
    if conflict:
        raise KataConfigError("kernel parameter %s is both in kernel_params and kernel_params_absent"
                              % ", ".join(conflict))

    def removed(param: str) -> bool:
        return any(param == item or ("=" not in item and param.split("=", 1)[0] == item) for item in absent)

    result: List[str] = []
    for param in list(base) + list(present):
        if param not in result and not removed(param):
            result.append(param)
    return result


def deep_merge(base: Mapping[str, Any], overlay: Mapping[str, Any]) -> Dict[str, Any]:
    """``base`` with ``overlay`` on top as updateFromDropIn applies a drop-in: tables merge key by key, every
    other value (arrays too) replaces."""
    merged = copy.deepcopy(dict(base))
    for key, value in overlay.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def apply_dropins(base: Mapping[str, Any], layers: Sequence[Tuple[str, Mapping[str, Any]]]) -> Dict[str, Any]:
    """The base with each (name, data) layer merged over it, in the order given."""
    merged = dict(base)
    for _name, data in layers:
        merged = deep_merge(merged, data)
    return merged


def effective_config(base: Mapping[str, Any], dropins: Sequence[Tuple[str, Mapping[str, Any]]]) -> Dict[str, Any]:
    """What the runtime reads: the base, then the drop-ins in file-name order (decodeDropIns, os.ReadDir)."""
    return apply_dropins(base, sorted(dropins, key=lambda item: item[0]))


def parse(text: Any, where: str) -> Dict[str, Any]:
    """A Kata configuration file (or drop-in) as plain data; toml_file.TomlError names ``where``."""
    return toml_file.plain(text, where, "Kata")


def dropins_beside(files: Mapping[str, str], config: str) -> List[Tuple[str, str]]:
    """(name, text) of the files of ``files`` (path -> text) in the config.d/ beside ``config``, by name."""
    config_d = posixpath.join(posixpath.dirname(config), "config.d")
    return sorted((posixpath.basename(path), text) for path, text in files.items()
                  if posixpath.dirname(path) == config_d)


def leaf_paths(tree: Dict[str, Any], prefix: Tuple[str, ...] = ()) -> List[Tuple[Tuple[str, ...], Any]]:
    """(dotted path, value) of every non-table value."""
    leaves: List[Tuple[Tuple[str, ...], Any]] = []
    for key, value in tree.items():
        if isinstance(value, dict):
            leaves.extend(leaf_paths(value, prefix + (key,)))
        else:
            leaves.append((prefix + (key,), value))
    return leaves


def lookup(tree: Dict[str, Any], path: Sequence[str]) -> Any:
    """Value at a path, None when absent."""
    node: Any = tree
    for key in path:
        if not isinstance(node, dict) or key not in node:
            return None
        node = node[key]
    return node


def hypervisor_name(base: Dict[str, Any], shim: str, where: str) -> str:
    """The one ``[hypervisor.<name>]`` table of a shim's configuration."""
    tables = base.get("hypervisor")
    names = sorted(tables) if isinstance(tables, dict) else []
    if len(names) != 1:
        raise KataConfigError("%s (shim %s) should hold exactly one [hypervisor.<name>] table, found %s; is it "
                              "a Kata configuration file?" % (where, shim, ", ".join(names) or "none"))
    return names[0]


def kind(value: Any) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "a %s" % type(value).__name__


def check_value(path: str, value: Any) -> None:
    if value is None:
        raise KataConfigError("settings %s is null; TOML has no null: give a value or leave the key out" % path)
    if isinstance(value, list):
        for item in value:
            if isinstance(item, (dict, list)) or item is None:
                raise KataConfigError("settings %s: array items must be strings, numbers or booleans" % path)
    elif not isinstance(value, (str, int, float, bool)):
        raise KataConfigError("settings %s: %s cannot be written as a TOML value" % (path, kind(value)))


def check_settings(settings: Dict[str, Any], hypervisor: str, base: Dict[str, Any],
                   where: str) -> List[str]:
    """Refuse settings Kata would not read as meant; returns warnings for keys the base does not have."""
    warnings: List[str] = []
    for section, tables in settings.items():
        if section not in SECTIONS:
            raise KataConfigError("settings section %r is not one of Kata's (%s)" % (section, ", ".join(SECTIONS)))
        if not isinstance(tables, dict):
            raise KataConfigError("settings %s must be a mapping of keys (or of tables) to values" % section)
    tables = {"hypervisor": hypervisor, "agent": (sorted(base.get("agent") or {}) or ["kata"])[0]}
    for section, wanted in tables.items():
        for name, table in (settings.get(section) or {}).items():
            if not isinstance(table, dict):
                raise KataConfigError("settings %s.%s must be a table of keys, e.g. settings: {%s: {%s: {key: value}}}"
                                      % (section, name, section, wanted))
            if name != wanted:
                raise KataConfigError("settings %s.%s: %s has [%s.%s]; Kata reads only that table"
                                      % (section, name, where, section, wanted))
    for path, value in leaf_paths(settings):
        dotted = ".".join(path)
        if len(path) > (3 if path[0] in ("hypervisor", "agent") else 2):
            raise KataConfigError("settings %s is nested too deep: Kata's tables are [hypervisor.<name>], "
                                  "[agent.<name>], [runtime] and [factory]" % dotted)
        check_value(dotted, value)
        if path[-1] in OWN_KEYS:
            raise KataConfigError("settings %s is set by this module: use the kernel_params, kernel_params_absent "
                                  "and pcie_mode options instead" % dotted)
        current = lookup(base, path)
        if current is None:
            warnings.append("settings %s: %s has no such key; Kata ignores unknown keys (with a warning in its "
                            "log), check the spelling" % (dotted, where))
        elif kind(current) != kind(value):
            raise KataConfigError("settings %s: %s holds %s (%r), the value given is %s (%r)"
                                  % (dotted, where, kind(current), current, kind(value), value))
    return warnings


def pcie_keys(plan: Optional[Dict[str, Any]], effective: Dict[str, Any], hypervisor: str) -> Dict[str, Any]:
    """The hypervisor keys a PCIe plan sets (and hot-plug off, since Kata allows one of the two)."""
    if plan is None:
        return {}
    keys: Dict[str, Any] = {
        "cold_plug_vfio": plan["cold_plug_vfio"],
        "pcie_root_port": plan["pcie_root_port"],
        "pcie_switch_port": plan["pcie_switch_port"],
    }
    hot = lookup(effective, ("hypervisor", hypervisor, "hot_plug_vfio"))
    if hot not in (None, "", "no-port"):
        keys["hot_plug_vfio"] = "no-port"
    return keys


def overridden_later(ours: Dict[str, Any], later: Sequence[Tuple[str, Dict[str, Any]]]) -> List[str]:
    """Warnings for keys of ours that a drop-in sorting after ours sets again (it wins)."""
    warnings = []
    our_paths = {path for path, _value in leaf_paths(ours)}
    for name, data in sorted(later, key=lambda item: item[0]):
        for path, value in leaf_paths(data):
            if path in our_paths:
                warnings.append("config.d/%s sets %s = %r after this module's drop-in, so that value wins; "
                                "rename one of them or drop the key there" % (name, ".".join(path), value))
    return warnings


def shims_for_host(cc_host: Dict[str, Any], gpu: bool = True) -> List[str]:
    """Runtime classes for a host from its readiness verdicts: the -snp ones on SNP, the -tdx ones on TDX."""
    verdicts = (cc_host or {}).get("verdicts") or {}
    if verdicts.get("snp_ready"):
        return ["qemu-nvidia-gpu-snp", "qemu-snp"] if gpu else ["qemu-snp"]
    if verdicts.get("tdx_ready"):
        return ["qemu-nvidia-gpu-tdx", "qemu-tdx"] if gpu else ["qemu-tdx"]
    return ["qemu-nvidia-gpu"] if gpu else ["qemu"]


def vfio_mode(config: Dict[str, Any], hypervisor: str) -> str:
    """How Kata hands the pod's devices to the guest: ``iommufd`` for a confidential guest (Kata refuses the
    legacy VFIO group path for confidential guests from 3.26.0, src/runtime/virtcontainers/qemu.go:
    "ConfidentialGuest needs IOMMUFD"), ``group`` otherwise; kata_pcie_plan counts ports accordingly."""
    return "iommufd" if lookup(config, ("hypervisor", hypervisor, "confidential_guest")) is True else "group"


def comment_block(lines: List[str]) -> str:
    return "".join("# %s\n" % line if line else "#\n" for line in lines)


def render_dropin(tree: Dict[str, Any], header: List[str]) -> str:
    """A drop-in holding ``tree`` (section -> key -> value, or section -> table -> key -> value)."""
    tomlkit = toml_file.tomlkit
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
    return comment_block(header) + "\n" + toml_file.dumps(doc)


def edit_copy(base_text: str, changes: Dict[str, Any], header: List[str], where: str) -> str:
    """The base configuration with ``changes`` set in place; comments and every other line kept."""
    doc = toml_file.parse(base_text, where, "Kata")
    for path, value in leaf_paths(changes):
        node: Any = doc
        for key in path[:-1]:
            if key not in node:
                node.add(key, toml_file.tomlkit.table(is_super_table=key in ("hypervisor", "agent")))
            node = node[key]
        node[path[-1]] = value
    return comment_block(header) + "\n" + toml_file.dumps(doc)
