# Copyright: contributors to confidential_gpu.host
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""containerd's TOML configuration, edited on the controller with tomlkit (comments and layout kept).

Two edits, each touching only what it names:

- the top-level ``imports`` list (paths added or removed, the rest kept in order);
- runtime handler tables under ``plugins.<CRI plugin>.containerd.runtimes.<name>``, each replaced whole
  when it differs from the wanted table, or removed;
- single keys of other tables (``proxy_plugins.<name>``, a plugin's settings), set one by one with the rest of
  the table kept.
"""

from __future__ import annotations

import re
import typing as t

from ansible_collections.confidential_gpu.host.plugins.plugin_utils.toml_file import Table, TomlError, tomlkit
from ansible_collections.confidential_gpu.host.plugins.plugin_utils.toml_file import parse as parse_toml

# First line of every containerd file the collection writes in full; a main file that starts with it is ours.
MARKER = "# Managed by confidential_gpu.host"

# The CRI runtime plugin's id per configuration version (containerd 1.x reads version 2, 2.x reads 2 and 3).
CRI_PLUGIN_BY_VERSION = {2: "io.containerd.grpc.v1.cri", 3: "io.containerd.cri.v1.runtime"}

# A handler name is what a Kubernetes RuntimeClass's ``handler`` names, and Kubernetes requires it to be a
# lowercase RFC 1123 DNS label (kubernetes v1.30.0, staging/src/k8s.io/api/node/v1/types.go, RuntimeClass.Handler:
# "The Handler must be lowercase, conform to the DNS Label (RFC 1123) requirements"; checked by
# pkg/apis/node/validation/validation.go with NameIsDNSLabel): letters a-z, digits and '-', at most 63
# (apimachinery's dns1123LabelFmt and DNS1123LabelMaxLength, kept in tests/fixtures/kubernetes/ and checked against
# this pattern by tests/unit/test_kubernetes_names.py).
_HANDLER_NAME = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")
HANDLER_NAME_FIX = ("use a lowercase DNS label (a-z, 0-9 and '-', starting and ending with a letter or digit, "
                    "at most 63 characters), as a Kubernetes RuntimeClass handler must be")


class ConfigError(Exception):
    """The file or the request cannot be handled; the message names the file, the value and the fix."""


def parse(text: str, path: str) -> tomlkit.TOMLDocument:
    """Parse a containerd configuration file, or raise ConfigError naming the file and the position."""
    try:
        return parse_toml(text, path, "containerd")
    except TomlError as error:
        raise ConfigError(str(error)) from None


def is_ours(text: str) -> bool:
    """True when the file was written in full by this collection (it starts with MARKER)."""
    return text.startswith(MARKER)


def config_version(doc: tomlkit.TOMLDocument, path: str) -> int:
    """The file's ``version``; containerd reads a file without one as version 1."""
    value = doc.get("version", 1)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError("%s: version = %r is not an integer; containerd expects version = 2 or 3" % (path, value))
    return int(value)


def cri_plugin_id(version: int, path: str) -> str:
    """The CRI runtime plugin id for a configuration version."""
    try:
        return CRI_PLUGIN_BY_VERSION[version]
    except KeyError:
        raise ConfigError(
            "%s has configuration version %d; runtime handlers are written for versions 2 and 3 only. "
            "Set version = 2 (containerd 1.x) or run `containerd config migrate` (containerd 2.x)"
            % (path, version)) from None


def imports_of(doc: tomlkit.TOMLDocument) -> t.List[str]:
    """The top-level ``imports`` list as plain strings."""
    value = doc.get("imports", [])
    return [str(item) for item in value]


def _check_import(option: str, item: t.Any) -> None:
    """An import path goes into the file as a TOML string: refuse what containerd would never find (an empty
    path, control characters such as a newline). containerd resolves relative ones next to the file and
    expands globs (containerd v2.0.0, cmd/containerd/server/config/config.go, resolveImports), so those stay."""
    if not isinstance(item, str) or not item.strip():
        raise ConfigError("%s %r is not a path: give the file to import, e.g. /etc/containerd/conf.d/*.toml"
                          % (option, item))
    if any(ord(char) < 0x20 or char == "\x7f" for char in item):
        raise ConfigError("%s %r holds a control character (newline, tab, NUL): give the plain path" % (option, item))


def edit_imports(doc: tomlkit.TOMLDocument, present: t.Sequence[str], absent: t.Sequence[str], path: str) -> bool:
    """Add the ``present`` paths to the top-level ``imports`` (after the ones there) and take the ``absent``
    ones out. Returns whether the document changed."""
    for option, items in (("imports_present", present), ("imports_absent", absent)):
        for item in items:
            _check_import(option, item)
    clash = sorted(set(present) & set(absent))
    if clash:
        raise ConfigError("%s is asked to be both in and out of imports of %s" % (", ".join(clash), path))
    if "imports" in doc and not isinstance(doc["imports"], list):
        raise ConfigError("%s: imports is not a list of paths; make it one (imports = [\"/path.toml\"])" % path)
    current = imports_of(doc)
    wanted = [item for item in current if item not in absent]
    wanted += [item for item in present if item not in wanted]
    if wanted == current:
        return False
    if "imports" in doc:
        array = doc["imports"]
        for index in reversed(range(len(array))):
            if str(array[index]) in absent:
                del array[index]
        for item in wanted:
            if item not in [str(existing) for existing in array]:
                array.append(item)
    else:
        array = tomlkit.array()
        array.extend(wanted)
        doc["imports"] = array  # tomlkit puts a new plain key after the last one, before the first table
    return True


def runtimes_table(doc: tomlkit.TOMLDocument, plugin_id: str, path: str, create: bool) -> t.Optional[t.Any]:
    """The ``plugins.<plugin_id>.containerd.runtimes`` table, created (as super tables) when asked."""
    node: t.Any = doc
    trail = []
    for key in ("plugins", plugin_id, "containerd", "runtimes"):
        trail.append(key)
        if key not in node:
            if not create:
                return None
            node[key] = tomlkit.table(is_super_table=True)
        node = node[key]
        if not isinstance(node, (dict, Table)):
            raise ConfigError("%s: %s is not a table; containerd expects one there"
                              % (path, ".".join(_quote(part) for part in trail)))
    return node


def edit_runtimes(doc: tomlkit.TOMLDocument, plugin_id: str, runtimes: t.Mapping[str, t.Mapping[str, t.Any]],
                  absent: t.Sequence[str], path: str) -> t.List[str]:
    """Make each named runtime handler table equal to the one given (replaced whole when it differs) and
    remove the ``absent`` ones. Returns the names that changed."""
    for name in list(runtimes) + list(absent):
        if not isinstance(name, str) or not _HANDLER_NAME.fullmatch(name):
            raise ConfigError("runtime handler name %r is not valid: %s" % (name, HANDLER_NAME_FIX))
    for name, wanted in runtimes.items():
        if not isinstance(wanted, t.Mapping):
            raise ConfigError("runtimes.%s must be the handler's table (a mapping such as {runtime_type: "
                              "io.containerd.kata-qemu.v2, options: {ConfigPath: ...}}), not a %s (%r); nothing "
                              "was changed in %s" % (name, type(wanted).__name__.lstrip("_"), wanted, path))
    clash = sorted(set(runtimes) & set(absent))
    if clash:
        raise ConfigError("runtime handler(s) %s are asked to be both present and absent in %s"
                          % (", ".join(clash), path))
    changed: t.List[str] = []
    table = runtimes_table(doc, plugin_id, path, create=bool(runtimes))
    if table is None:
        return changed
    for name, wanted in runtimes.items():
        current = table.get(name)
        plain = current.unwrap() if hasattr(current, "unwrap") else current
        if plain == _plain(wanted):
            continue
        if name in table:
            del table[name]
        table[name] = _table(wanted)
        changed.append(name)
    for name in absent:
        if name in table:
            del table[name]
            changed.append(name)
    return changed


def edit_tables(doc: tomlkit.TOMLDocument, tables: t.Sequence[t.Mapping[str, t.Any]], path: str) -> t.List[str]:
    """Set the keys of each ``{"path": [...], "values": {...}}`` in the table at that path (created as needed),
    leaving the table's other keys alone. Returns the dotted names of the tables that changed."""
    changed = []
    for wanted in tables:
        keys = [str(key) for key in wanted["path"]]
        if not keys:
            raise ConfigError("a table path of %s is empty; name the table, e.g. [proxy_plugins, nydus]" % path)
        node: t.Any = doc
        for index, key in enumerate(keys):
            if key not in node:
                node[key] = tomlkit.table(is_super_table=index < len(keys) - 1)
            node = node[key]
            if not isinstance(node, (dict, Table)):
                raise ConfigError("%s: %s is not a table; containerd expects one there"
                                  % (path, ".".join(_quote(part) for part in keys[:index + 1])))
        touched = False
        for key, value in wanted["values"].items():
            current = node.get(key)
            plain = current.unwrap() if hasattr(current, "unwrap") else current
            if plain == _plain(value) and type(plain) is type(_plain(value)):
                continue
            node[str(key)] = _plain(value)
            touched = True
        if touched:
            changed.append(".".join(_quote(part) for part in keys))
    return changed


def runtimes_in(doc: tomlkit.TOMLDocument, plugin_id: str) -> t.Dict[str, t.Any]:
    """The runtime handler tables under the CRI plugin, as plain data."""
    table = runtimes_table(doc, plugin_id, "<document>", create=False)
    return {} if table is None else dict(table.unwrap())


def _plain(value: t.Any) -> t.Any:
    if isinstance(value, t.Mapping):
        return {str(key): _plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    return value


def _table(values: t.Mapping[str, t.Any]) -> Table:
    """A tomlkit table from plain data; nested mappings become sub-tables, written after the keys."""
    table = tomlkit.table()
    nested = []
    for key, value in values.items():
        if isinstance(value, t.Mapping):
            nested.append((key, value))
        else:
            table[str(key)] = _plain(value)
    for key, value in nested:
        table[str(key)] = _table(value)
    return table


def _quote(key: str) -> str:
    return key if re.match(r"^[A-Za-z0-9_-]+$", key) else '"%s"' % key
