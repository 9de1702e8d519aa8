# Copyright: contributors to confidential_gpu.host
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Kernel command line, the argument model (pure): a key/value model of a line and of a request.

A command line is a list of :class:`Arg` (key, value, the text as written),
split the way the kernel splits it.  A request says which arguments must be
present and which absent.  Present arguments are grouped in *units*: one key, or
keys whose relative order matters (``hugepagesz`` / ``hugepages``).  A unit is
satisfied when the configured line holds exactly its arguments in that order; a
unit that is not is rewritten as a whole (every occurrence of its keys removed,
the wanted ones put where the first one was).  Keys compare the way the kernel
compares them (``-`` and ``_`` are the same).  Standard library only (Python >= 3.8).
"""

from __future__ import annotations

import re
from typing import Any, Dict, Iterable, List, NamedTuple, Optional, Sequence, Set, Tuple

from ansible_collections.confidential_gpu.host.plugins.module_utils.cmdline_tokens import next_cmdline_token

# Keys whose values may repeat on one command line, each occurrence meaning something.
DEFAULT_MULTI_VALUE_KEYS = ("console", "hugepagesz", "hugepages", "memmap")

# Keys whose relative order matters: hugepages=N applies to the hugepagesz= before it.
ORDER_GROUPS = (("hugepagesz", "hugepages"),)

# Arguments a host needs to boot (or to be reached): never removed unless allowed.
PROTECTED_KEYS = ("root", "ro", "rw", "console", "rootflags", "rootfstype", "ostree")

# Set by the boot loader or by the deployment itself, not by configuration.
LOADER_KEYS = ("BOOT_IMAGE", "initrd", "ostree")

_KEY = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-]*$")
_FORBIDDEN_IN_VALUE = re.compile(r"[\"'\\$`\x00-\x1f\x7f]")
_NEEDS_QUOTES = re.compile(r"[\s;&|<>(){}#]")

# vfio-pci.ids: Linux drivers/vfio/pci/vfio_pci.c (torvalds/linux 01be83eea08d, the same after the v5.15 split;
# excerpt in tests/fixtures/linux-mainline/vfio-pci-ids.c) keeps the value in ``static char ids[1024]`` (1023
# characters), splits it at ',' (strsep) and reads each entry with sscanf("%x:%x:%x:%x:%x:%x"): vendor and device
# are required ("vendor:device[:subvendor[:subdevice[:class[:class_mask]]]]", its MODULE_PARM_DESC); an entry with
# fewer than two fields is skipped with only a kernel warning ("invalid id string"), so the device stays on its
# host driver. Vendor and device IDs are 16 bits, subvendor/subdevice/class/mask at most 32.
VFIO_PCI_IDS_MAX = 1023
_VFIO_PCI_ID = re.compile(r"[0-9a-fA-F]{1,4}:[0-9a-fA-F]{1,4}(:[0-9a-fA-F]{1,8}){0,4}")
VFIO_PCI_ID_FORMAT = "vendor:device[:subvendor[:subdevice[:class[:class_mask]]]] in hex, like 10de:2330"


class KernelCmdlineError(Exception):
    """The request cannot be carried out; the message names the value or file and the fix."""


class Arg(NamedTuple):
    """One kernel argument: ``key``, ``value`` (``None`` for a bare flag) and ``text`` as written."""

    key: str
    value: Optional[str]
    text: str

    @property
    def name(self) -> str:
        return norm_key(self.key)

    @property
    def pair(self) -> Tuple[str, Optional[str]]:
        return (self.name, self.value)


class Removal(NamedTuple):
    """An argument to remove: every value of ``key`` (``any_value``), or only ``key=value``."""

    key: str
    value: Optional[str]
    any_value: bool

    def matches(self, arg: Arg) -> bool:
        return arg.name == norm_key(self.key) and (self.any_value or arg.value == self.value)

    @property
    def text(self) -> str:
        return self.key if self.any_value else render(self.key, self.value)


class Unit(NamedTuple):
    """Present arguments whose keys are managed together, in the order asked for."""

    names: Tuple[str, ...]
    args: Tuple[Arg, ...]


class Request(NamedTuple):
    units: Tuple[Unit, ...]
    absent: Tuple[Removal, ...]
    multi_value: frozenset
    allow_removing: frozenset

    @property
    def present(self) -> List[Arg]:
        return [arg for unit in self.units for arg in unit.args]

    @property
    def names(self) -> Set[str]:
        return {name for unit in self.units for name in unit.names} | {norm_key(r.key) for r in self.absent}


def norm_key(key: str) -> str:
    """The kernel treats ``-`` and ``_`` in parameter names as the same character."""
    return key.replace("-", "_")


def render(key: str, value: Optional[str]) -> str:
    """Text of an argument; values with spaces or boot-loader script characters (``;``) in double quotes."""
    if value is None:
        return key
    if _NEEDS_QUOTES.search(value):
        return '%s="%s"' % (key, value)
    return "%s=%s" % (key, value)


def split_cmdline(text: Optional[str]) -> Tuple[List[Arg], str]:
    """A command line -> (arguments in order, the text after a bare ``--`` that belongs to init)."""
    args: List[Arg] = []
    text = text or ""
    pos = 0
    while True:
        while pos < len(text) and text[pos].isspace():
            pos += 1
        if pos >= len(text):
            return args, ""
        key, value, end = next_cmdline_token(text, pos)
        if key == "--" and value is None:
            return args, text[end:].strip()
        args.append(Arg(key, value, text[pos:end]))
        pos = end


def split_configured(text: Optional[str], where: str, fix: str) -> Tuple[List[Arg], str]:
    """A line read from the boot configuration, split; refused when editing it would change its meaning.

    The checks are those :func:`parse_item` applies to a requested argument that
    can apply to a whole line: with an unbalanced double quote the kernel takes
    everything after it as one value, so an argument appended would land inside
    that value.  ``where`` names what was read, ``fix`` says how to repair it.
    """
    if text and text.count('"') % 2:
        at = text.rfind('"')
        raise KernelCmdlineError(
            "%s holds an unbalanced double quote (%r): the kernel would take everything after it, an added "
            "argument too, as one value; %s, then run again; nothing was changed"
            % (where, text[max(0, at - 30):at + 30].strip(), fix))
    return split_cmdline(text)


def join_args(args: Iterable[Arg], init: str = "") -> str:
    line = " ".join(arg.text for arg in args)
    return "%s -- %s" % (line, init) if init else line


def values_of(args: Sequence[Arg], name: str) -> List[Optional[str]]:
    return [arg.value for arg in args if arg.name == name]


def parse_item(item: Any, field: str) -> Arg:
    """One argument of the request, validated; its text is re-rendered canonically."""
    text = str(item).strip() if item is not None else ""
    if not text:
        raise KernelCmdlineError("%s: empty argument; give one kernel argument per item (key or key=value)" % field)
    args, init = split_cmdline(text)
    if init or len(args) != 1 or args[0].text != text:
        raise KernelCmdlineError(
            "%s: %r is not one kernel argument; give one argument per list item (key or key=value)" % (field, text))
    arg = args[0]
    if text.count('"') % 2:
        raise KernelCmdlineError("%s: %r has an unbalanced double quote" % (field, text))
    if not _KEY.fullmatch(arg.key):  # fullmatch: '$' alone lets a trailing newline through
        raise KernelCmdlineError(
            "%s: %r has no valid key: a key is letters, digits, '_', '-' and '.', like intel_iommu or vfio-pci.ids"
            % (field, text))
    if arg.value is not None and _FORBIDDEN_IN_VALUE.search(arg.value):
        raise KernelCmdlineError(
            "%s: the value of %r holds a quote, backslash, '$', backtick or control character, which the kernel "
            "cannot take or boot loaders expand; drop it" % (field, text))
    if field == "present" and norm_key(arg.key) == "vfio_pci.ids":
        check_vfio_pci_ids(arg.value, text)
    return Arg(arg.key, arg.value, render(arg.key, arg.value))


def check_vfio_pci_ids(value: Optional[str], text: str) -> None:
    """Refuse a ``vfio-pci.ids`` value that vfio-pci would skip or cut (see VFIO_PCI_IDS_MAX)."""
    if not value:
        raise KernelCmdlineError("present: %r gives vfio-pci no IDs; write vfio-pci.ids=%s (comma-separated for "
                                 "several)" % (text, VFIO_PCI_ID_FORMAT.rsplit(" ", 1)[-1]))
    if len(value) > VFIO_PCI_IDS_MAX:
        raise KernelCmdlineError("present: the value of vfio-pci.ids is %d characters; vfio-pci keeps only %d "
                                 "(ids[1024] in drivers/vfio/pci/vfio_pci.c): give fewer IDs"
                                 % (len(value), VFIO_PCI_IDS_MAX))
    for entry in value.split(","):
        if not _VFIO_PCI_ID.fullmatch(entry):
            raise KernelCmdlineError(
                "present: vfio-pci.ids entry %r (in %r) is not %s; vfio-pci would skip it and leave the device on "
                "its host driver" % (entry, text if len(text) <= 80 else text[:77] + "...", VFIO_PCI_ID_FORMAT))


def check_key_names(option: str, names: Sequence[Any]) -> None:
    """``multi_value_keys`` and ``allow_removing`` name kernel parameters: a key (letters, digits, '_', '-', '.'),
    never an argument (``=``), whitespace, quotes or a pattern."""
    for name in names:
        if not isinstance(name, str) or not _KEY.fullmatch(name):
            raise KernelCmdlineError(
                "%s: %r is not a kernel parameter name; give the key alone, letters, digits, '_', '-' and '.', "
                "like console or hugepagesz (no '=', spaces or quotes)" % (option, name))


def _group_of(name: str) -> Tuple[str, ...]:
    for group in ORDER_GROUPS:
        if name in group:
            return group
    return (name,)


def _present_units(present: List[Arg], multi: frozenset) -> Tuple[Unit, ...]:
    by_name: Dict[str, List[Arg]] = {}
    order: List[Tuple[str, ...]] = []
    for arg in present:
        values = by_name.setdefault(arg.name, [])
        if arg.name not in multi and values:
            if values[0].value != arg.value:
                raise KernelCmdlineError(
                    "present: conflicting values for %s: %s and %s; give one value, or add %s to multi_value_keys "
                    "if the kernel takes it several times" % (arg.key, values[0].text, arg.text, arg.key))
            continue
        values.append(arg)
        group = _group_of(arg.name)
        if group not in order:
            order.append(group)
    units = []
    for group in order:
        names = tuple(name for name in group if name in by_name)
        args = tuple(arg for arg in present if arg.name in names and any(arg is a for a in by_name[arg.name]))
        units.append(Unit(names, args))
    return tuple(units)


def build_request(present: Sequence[Any], absent: Sequence[Any],
                  multi_value_keys: Sequence[str] = DEFAULT_MULTI_VALUE_KEYS,
                  allow_removing: Sequence[str] = ()) -> Request:
    """Validate the module's input; every problem is a :class:`KernelCmdlineError` before anything is read."""
    check_key_names("multi_value_keys", multi_value_keys)
    check_key_names("allow_removing", allow_removing)
    multi = frozenset(norm_key(str(key)) for key in multi_value_keys)
    wanted = [parse_item(item, "present") for item in present or []]
    removals = []
    for item in absent or []:
        arg = parse_item(item, "absent")
        removals.append(Removal(arg.key, arg.value, arg.value is None))
    for removal in removals:
        for arg in wanted:
            if removal.matches(arg):
                raise KernelCmdlineError("%s is both present and absent (absent %s); drop it from one of the lists"
                                         % (arg.text, removal.text))
    return Request(_present_units(wanted, multi), tuple(removals), multi,
                   frozenset(norm_key(str(key)) for key in allow_removing))


def _unit_sequence(args: Sequence[Arg], names: Tuple[str, ...]) -> List[Tuple[str, Optional[str]]]:
    return [arg.pair for arg in args if arg.name in names]


def unit_satisfied(args: Sequence[Arg], unit: Unit) -> bool:
    return _unit_sequence(args, unit.names) == [arg.pair for arg in unit.args]


def changed_units(args: Sequence[Arg], request: Request) -> List[Unit]:
    return [unit for unit in request.units if not unit_satisfied(args, unit)]


def absent_matches(args: Sequence[Arg], request: Request) -> List[Arg]:
    return [arg for arg in args if any(removal.matches(arg) for removal in request.absent)]


def satisfied(args: Sequence[Arg], request: Request) -> bool:
    return not changed_units(args, request) and not absent_matches(args, request)


def unmet(args: Sequence[Arg], request: Request) -> List[str]:
    """What ``args`` lack or hold against the request, for error messages."""
    problems = ["%s (has %s)" % (" ".join(a.text for a in unit.args),
                                 " ".join(a.text for a in args if a.name in unit.names) or "none")
                for unit in changed_units(args, request)]
    problems += ["%s must be absent" % arg.text for arg in absent_matches(args, request)]
    return problems


Tagged = Tuple[Arg, str]


def rewrite(items: List[Tagged], request: Request, append_tag: str = "") -> List[Tagged]:
    """Apply the request to tagged arguments (the tag says which variable or file holds each one).

    Absent arguments go; each unit that is not satisfied loses every occurrence
    of its keys and gets its arguments where the first occurrence was (taking
    its tag), or after the last argument tagged ``append_tag``.
    """
    args = [arg for arg, _tag in items]
    units = changed_units(args, request)
    result = [item for item in items if not any(removal.matches(item[0]) for removal in request.absent)]
    for unit in units:
        at = next((i for i, (arg, _tag) in enumerate(result) if arg.name in unit.names), None)
        if at is None:
            tagged = [i for i, (_arg, tag) in enumerate(result) if tag == append_tag]
            at, tag = (tagged[-1] + 1 if tagged else len(result)), append_tag
        else:
            tag = result[at][1]
        kept = [item for item in result[:at] if item[0].name not in unit.names]
        rest = [item for item in result[at:] if item[0].name not in unit.names]
        result = kept + [(arg, tag) for arg in unit.args] + rest
    if units:
        check_line_length([arg for arg, _tag in result])
    return result


# x86 Linux keeps at most COMMAND_LINE_SIZE - 1 bytes of the command line (arch/x86/include/asm/setup.h:
# COMMAND_LINE_SIZE 2048) and cuts the rest, so an argument past it is silently lost at boot.
COMMAND_LINE_SIZE = 2048


def check_line_length(args: Sequence[Arg]) -> None:
    """Refuse a configured line the kernel would cut (before anything is written)."""
    size = len(" ".join(arg.text for arg in args).encode("utf-8"))
    if size >= COMMAND_LINE_SIZE:
        raise KernelCmdlineError(
            "the kernel command line would be %d bytes, and x86 Linux keeps only %d (COMMAND_LINE_SIZE %d, "
            "arch/x86/include/asm/setup.h), cutting what comes after: shorten or drop arguments; nothing was "
            "changed" % (size, COMMAND_LINE_SIZE - 1, COMMAND_LINE_SIZE))


def apply_request(args: List[Arg], request: Request) -> List[Arg]:
    return [arg for arg, _tag in rewrite([(arg, "") for arg in args], request)]


def removed_args(before: Sequence[Arg], after: Sequence[Arg]) -> List[Arg]:
    """Arguments of ``before`` that ``after`` no longer holds (as key/value pairs, counting repeats)."""
    remaining = [arg.pair for arg in after]
    removed = []
    for arg in before:
        if arg.pair in remaining:
            remaining.remove(arg.pair)
        else:
            removed.append(arg)
    return removed


def check_protected(before: Sequence[Arg], after: Sequence[Arg], request: Request, where: str) -> None:
    for arg in removed_args(before, after):
        if arg.name in PROTECTED_KEYS and arg.name not in request.allow_removing:
            raise KernelCmdlineError(
                "refusing to remove %s from %s: the host needs it to boot or to be reached; add %s to "
                "allow_removing if you mean it" % (arg.text, where, arg.key))


def _dedup(values: List[Optional[str]]) -> List[Optional[str]]:
    seen: List[Optional[str]] = []
    for value in values:
        if value not in seen:
            seen.append(value)
    return seen


def pending_changes(configured: Sequence[Arg], active: Sequence[Arg], request: Request) -> List[Dict[str, Any]]:
    """Keys whose configured values differ from the running kernel's.

    Every key of the configured line counts, and every key of the request (a
    removed argument still active counts too).  Keys only the running kernel has
    (``root=`` and ``ro`` added by GRUB, ``BOOT_IMAGE``) do not.  Values of
    multi-value keys compare as sequences, others as sets.
    """
    names: List[str] = []
    shown: Dict[str, str] = {}
    for arg in list(configured) + request.present + [Arg(r.key, r.value, r.text) for r in request.absent]:
        if arg.name not in shown and arg.key not in LOADER_KEYS:
            names.append(arg.name)
            shown[arg.name] = arg.key
    pending = []
    for name in names:
        want, have = values_of(configured, name), values_of(active, name)
        if name not in request.multi_value:
            want, have = _dedup(want), _dedup(have)
        if want != have:
            pending.append({"key": shown[name], "configured": want, "active": have})
    return pending
