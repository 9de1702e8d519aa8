# Copyright: contributors to confidential_gpu.host
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Kernel command line: a key/value model and the boot-loader backends that persist it.

The model (pure): a command line is a list of :class:`Arg` (key, value, the
text as written), split the way the kernel splits it.  A request says which
arguments must be present and which absent.  Present arguments are grouped in
*units*: one key, or keys whose relative order matters (``hugepagesz`` /
``hugepages``).  A unit is satisfied when the configured line holds exactly
its arguments in that order; a unit that is not is rewritten as a whole (every
occurrence of its keys removed, the wanted ones put where the first one was).
Keys compare the way the kernel compares them (``-`` and ``_`` are the same).

Backends read the *configured* line (what the boot loader will give the default
kernel next boot) and change it:

- ``grub`` (Debian, Ubuntu): one drop-in in ``/etc/default/grub.d/`` that
  re-assigns ``GRUB_CMDLINE_LINUX`` (and ``GRUB_CMDLINE_LINUX_DEFAULT`` when an
  argument to remove lives there), then ``update-grub``.  The configured line is
  computed by sourcing ``/etc/default/grub`` and the drop-ins with ``/bin/sh``,
  as ``grub-mkconfig`` does, when the root is ``/``; below any other root the
  files are read by :mod:`grub_settings`, a parser that runs nothing from them.
- ``grubby`` (EL, Fedora): ``grubby --update-kernel=ALL``; every entry is checked.
- ``systemd_boot`` (kernel-install): ``/etc/kernel/cmdline``, then
  ``kernel-install add`` for every installed kernel.
- ``rpm_ostree``: ``rpm-ostree kargs --delete=... --append=...``.

Commands run through a :class:`Runner` (check mode records them without running
them); files are read and written below a :class:`HostRoot` prefix.

Standard library only: this runs on target hosts with Python >= 3.8.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from typing import Any, Dict, Iterable, List, NamedTuple, Optional, Sequence, Set, Tuple

from ansible_collections.confidential_gpu.host.plugins.module_utils.cmdline_tokens import next_cmdline_token
from ansible_collections.confidential_gpu.host.plugins.module_utils.grub_settings import (
    GrubSettingsError,
    SettingsState,
)
from ansible_collections.confidential_gpu.host.plugins.module_utils.host_write import CommandRunner
from ansible_collections.confidential_gpu.host.plugins.module_utils import host_files
from ansible_collections.confidential_gpu.host.plugins.module_utils.host_files import FileChange
from ansible_collections.confidential_gpu.host.plugins.module_utils.sysfs import HostRoot, os_release_ids

BACKENDS = ("grub", "grubby", "systemd_boot", "rpm_ostree")

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


# --------------------------------------------------------------------------
# The model (pure)
# --------------------------------------------------------------------------

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


# --------------------------------------------------------------------------
# Commands and files
# --------------------------------------------------------------------------

class Runner(CommandRunner):
    """Boot-loader tools, failures as :class:`KernelCmdlineError`."""

    error = KernelCmdlineError
    missing_hint = "install it or pass command_path"


def read_file(host: HostRoot, host_path: str) -> Optional[str]:
    """Content of a configuration file; ``None`` when it does not exist; an error when it cannot be read."""
    return host_files.read_file(host, host_path, KernelCmdlineError)[0]


def write_file(host: HostRoot, host_path: str, content: Optional[str]) -> None:
    """Replace a file atomically (keeping its mode, 0644 when new), or remove it when ``content`` is None."""
    host_files.write_file(host, FileChange(host_path, None, content), KernelCmdlineError)


def restore_after_failure(host: HostRoot, change: Optional[FileChange], error: KernelCmdlineError,
                          check_mode: bool) -> KernelCmdlineError:
    """A tool failed after ``change`` was written: put the file back; the error to raise says whether it was."""
    if change is None or check_mode:
        return error
    try:
        write_file(host, change.host_path, change.before)
    except KernelCmdlineError as restore_error:
        return KernelCmdlineError("%s; restoring %s failed too (%s): put it back by hand"
                                  % (error, change.host_path, restore_error))
    return KernelCmdlineError("%s; %s was restored to what it was before this run" % (error, change.host_path))


def line_diff(header: str, before: Sequence[Arg], after: Sequence[Arg]) -> Dict[str, str]:
    return {"before": "\n".join(a.text for a in before) + "\n", "after": "\n".join(a.text for a in after) + "\n",
            "before_header": header, "after_header": header}


class Outcome(NamedTuple):
    """What a backend found and did (or would do, in check mode)."""

    changed: bool
    before: List[Arg]
    configured: List[Arg]
    files: List[str]
    diff: List[Dict[str, str]]


def _sh_quote(text: str) -> str:
    return "'%s'" % text.replace("'", "'\"'\"'")


# --------------------------------------------------------------------------
# Backends
# --------------------------------------------------------------------------

class Backend:
    name = ""

    def __init__(self, host: HostRoot, runner: Runner) -> None:
        self.host = host
        self.runner = runner

    def apply(self, request: Request) -> Outcome:
        raise NotImplementedError

    def _single_line_values(self, request: Request) -> None:
        """grubby and ostree split arguments on spaces: a value with one cannot pass through them."""
        for arg in request.present:
            if arg.value is not None and re.search(r"\s", arg.value):
                raise KernelCmdlineError("%s: the %s backend cannot set a value that holds a space (grubby and "
                                         "rpm-ostree split arguments on spaces)" % (arg.text, self.name))


class GrubBackend(Backend):
    """Debian/Ubuntu GRUB: a drop-in in /etc/default/grub.d/, update-grub when it changed."""

    name = "grub"
    DEFAULTS = "/etc/default/grub"
    DROPINS = "/etc/default/grub.d"
    GRUB_CFG = "/boot/grub/grub.cfg"
    VARIABLES = ("GRUB_CMDLINE_LINUX", "GRUB_CMDLINE_LINUX_DEFAULT")
    _SOURCE = r"""
main=$1 dir=$2 ours=$3 seen=
[ -r "$main" ] && . "$main" >&2
for f in "$dir"/*.cfg; do
    [ -e "$f" ] || continue
    if [ "${f##*/}" = "$ours" ]; then
        base_l=${GRUB_CMDLINE_LINUX-} base_d=${GRUB_CMDLINE_LINUX_DEFAULT-} seen=1
    fi
    . "$f" >&2
done
[ -n "$seen" ] || base_l=${GRUB_CMDLINE_LINUX-} base_d=${GRUB_CMDLINE_LINUX_DEFAULT-}
printf '%s\0%s\0%s\0%s\0' "$base_l" "$base_d" "${GRUB_CMDLINE_LINUX-}" "${GRUB_CMDLINE_LINUX_DEFAULT-}"
"""

    def __init__(self, host: HostRoot, runner: Runner, dropin_name: str) -> None:
        super().__init__(host, runner)
        if not re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_.\-]*\.cfg", dropin_name or ""):
            raise KernelCmdlineError("grub_dropin_name %r: give a file name ending in .cfg (grub-mkconfig reads "
                                     "only /etc/default/grub.d/*.cfg), like 99-confidential-gpu.cfg" % dropin_name)
        self.dropin = "%s/%s" % (self.DROPINS, dropin_name)
        self.dropin_name = dropin_name
        # Debian's grub-mkconfig sources the files with sh (grub2 2.06, /usr/sbin/grub-mkconfig); on the host
        # itself that is what update-grub will do anyway.  A tree (a capture from another host) is parsed, never run.
        self.reader = "sh" if host.root == "/" else "parser"

    def source(self, dropin_text: Optional[str]) -> Tuple[Tuple[str, str], Tuple[str, str]]:
        """(values before our drop-in, values after every file), read as grub-mkconfig sources them.

        ``dropin_text`` stands in for our drop-in (``None``: the drop-in as it is on disk).
        """
        if self.reader == "parser":
            return self._parse(dropin_text)
        return self._source_with_sh(dropin_text)

    def _parse(self, dropin_text: Optional[str]) -> Tuple[Tuple[str, str], Tuple[str, str]]:
        """The same chain as :meth:`_source_with_sh`, through :class:`SettingsState` (no shell, nothing run)."""
        state = SettingsState()
        base: Optional[Tuple[str, str]] = None
        try:
            names = {name for name in self.host.listdir(self.DROPINS) if name.endswith(".cfg")
                     and not name.startswith(".") and os.path.exists(self.host.path("%s/%s" % (self.DROPINS, name)))}
            names |= {self.dropin_name} if dropin_text else set()
            files = [self.DEFAULTS] + ["%s/%s" % (self.DROPINS, name) for name in sorted(names)]
            for host_path in files:
                ours = host_path == self.dropin and dropin_text != ""
                if ours:
                    base = self._values(state)
                text = dropin_text if ours and dropin_text is not None else read_file(self.host, host_path)
                if text:
                    state.read(text, host_path)
            return base or self._values(state), self._values(state)
        except GrubSettingsError as error:
            raise KernelCmdlineError("reading the GRUB settings below root %s without a shell (a tree is never run): "
                                     "%s; nothing was changed" % (self.host.root, error)) from None

    def _values(self, state: SettingsState) -> Tuple[str, str]:
        return state.value(self.VARIABLES[0]), state.value(self.VARIABLES[1])

    def _source_with_sh(self, dropin_text: Optional[str]) -> Tuple[Tuple[str, str], Tuple[str, str]]:
        scratch = tempfile.mkdtemp(prefix="kernel_cmdline.grub.")
        try:
            for name in self.host.listdir(self.DROPINS):
                if name.endswith(".cfg") and not (dropin_text is not None and name == self.dropin_name):
                    os.symlink(os.path.abspath(self.host.path("%s/%s" % (self.DROPINS, name))),
                               os.path.join(scratch, name))
            if dropin_text:
                with open(os.path.join(scratch, self.dropin_name), "w", encoding="utf-8") as handle:
                    handle.write(dropin_text)
            out = self.runner.read(["/bin/sh", "-c", self._SOURCE, "sh",
                                    self.host.path(self.DEFAULTS), scratch, self.dropin_name])
        except KernelCmdlineError as error:
            raise KernelCmdlineError("sourcing %s and %s/*.cfg as grub-mkconfig does failed, so update-grub would "
                                     "fail too; fix the file it names: %s"
                                     % (self.DEFAULTS, self.DROPINS, error)) from None
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        fields = out.split("\0")
        return (fields[0], fields[1]), (fields[2], fields[3])

    def _tagged(self, values: Tuple[str, str]) -> List[Tagged]:
        items: List[Tagged] = []
        for variable, text in zip(self.VARIABLES, values):
            args, init = split_configured(
                text, "%s (as %s and %s/*.cfg set it)" % (variable, self.DEFAULTS, self.DROPINS),
                "close or remove the quote in the file that assigns %s" % variable)
            if init:
                raise KernelCmdlineError("%s holds '--' (arguments for init), which this backend does not edit; "
                                         "move them out of %s" % (variable, variable))
            items += [(arg, variable) for arg in args]
        return items

    def render_dropin(self, base: Tuple[str, str], new: Tuple[List[Arg], List[Arg]]) -> Optional[str]:
        blocks = []
        for variable, base_text, args in zip(self.VARIABLES, base, new):
            base_args = split_cmdline(base_text)[0]
            if [a.text for a in base_args] == [a.text for a in args]:
                continue
            base_texts = [a.text for a in base_args]
            added = [a.text for a in args if a.text not in base_texts]
            lines = ['if [ "${%s-}" = %s ]; then' % (variable, _sh_quote(base_text)),
                     "    %s=%s" % (variable, _sh_quote(" ".join(a.text for a in args))),
                     "else",
                     "    echo %s >&2" % _sh_quote(
                         "%s: %s changed since this file was written; only its added arguments apply: run "
                         "confidential_gpu.host.kernel_cmdline (role kernel_args) again" % (self.dropin, variable))]
            if added:
                lines.append('    %s="${%s-}"%s' % (variable, variable, _sh_quote(" " + " ".join(added))))
            lines.append("fi")
            blocks.append("\n".join(lines))
        if not blocks:
            return None
        header = (
            "# Managed by confidential_gpu.host.kernel_cmdline (Ansible): changes here are overwritten.\n"
            "# grub-mkconfig (update-grub) sources this file after %s and the drop-ins that sort\n"
            "# before it. It sets the kernel arguments asked for on top of the values it was written\n"
            "# for; when those have changed since, it only adds its arguments and says so.\n" % self.DEFAULTS)
        return header + "\n".join(blocks) + "\n"

    def _regenerate_command(self) -> List[str]:
        if self.runner.find("update-grub"):
            return ["update-grub"]
        if self.runner.find("grub-mkconfig"):
            return ["grub-mkconfig", "-o", self.GRUB_CFG]
        raise KernelCmdlineError("neither update-grub nor grub-mkconfig is in %s: install grub2-common (Debian, "
                                 "Ubuntu) or choose the backend that boots this host"
                                 % ":".join(self.runner.search_path))

    def _grub_cfg_stale(self) -> bool:
        try:
            return os.stat(self.host.path(self.GRUB_CFG)).st_mtime < os.stat(self.host.path(self.dropin)).st_mtime
        except OSError:
            return False

    def apply(self, request: Request) -> Outcome:
        base, final_before = self.source(None)
        items = self._tagged(base)
        new_items = rewrite(items, request, append_tag=self.VARIABLES[0])
        base_args = [arg for arg, _tag in items]
        check_protected(base_args, [arg for arg, _tag in new_items], request,
                        "the GRUB configuration (%s, %s/*.cfg)" % (self.DEFAULTS, self.DROPINS))
        linux, linux_default = ([arg for arg, tag in new_items if tag == variable] for variable in self.VARIABLES)
        content = self.render_dropin(base, (linux, linux_default))
        current = read_file(self.host, self.dropin)
        final = final_before if content == current else self.source(content or "")[1]
        configured = self._tagged(final)
        if not satisfied([arg for arg, _tag in configured], request):
            later = [n for n in self.host.listdir(self.DROPINS) if n.endswith(".cfg") and n > self.dropin_name]
            raise KernelCmdlineError(
                "%s would not take effect: %s still lacks %s after it; files sourced later (%s) set the variables "
                "again: give grub_dropin_name a name that sorts after them"
                % (self.dropin, " ".join(self.VARIABLES), "; ".join(unmet([a for a, _t in configured], request)),
                   ", ".join(later) or "none found"))
        change = FileChange(self.dropin, current, content)
        changed = current != content
        if changed or self._grub_cfg_stale():
            self._write_and_regenerate(change, self._regenerate_command())
            changed = True
        return Outcome(changed, [a for a, _t in self._tagged(final_before)], [a for a, _t in configured],
                       [self.dropin] if current != content else [], [change.diff()] if current != content else [])

    def _write_and_regenerate(self, change: FileChange, regenerate: List[str]) -> None:
        if not self.runner.check_mode:
            write_file(self.host, change.host_path, change.after)
        try:
            self.runner.change(regenerate)
        except KernelCmdlineError as error:
            raise restore_after_failure(self.host, change, error, self.runner.check_mode) from None


class GrubbyBackend(Backend):
    """EL/Fedora: grubby --update-kernel=ALL (every boot entry), and /etc/kernel/cmdline when it exists."""

    name = "grubby"
    KERNEL_CMDLINE = "/etc/kernel/cmdline"

    def entries(self) -> List[Dict[str, Any]]:
        """``grubby --info=ALL``: index, kernel, args (root= is printed apart; put back first)."""
        entries: List[Dict[str, Any]] = []
        for line in self.runner.read(["grubby", "--info=ALL"]).splitlines():
            key, sep, value = line.partition("=")
            if not sep:
                continue
            value = value[1:-1] if len(value) >= 2 and value[0] == value[-1] == '"' else value
            if key == "index":
                entries.append({"index": int(value), "kernel": "", "args": "", "root": None})
            elif entries and key in ("kernel", "args", "root"):
                entries[-1][key] = value
        if not entries:
            raise KernelCmdlineError("grubby --info=ALL lists no boot entry: install a kernel, or choose the "
                                     "backend that boots this host")
        for entry in entries:
            where = "grubby entry %s (grubby --info=ALL)" % entry["kernel"]
            fix = "correct its options (grubby --update-kernel=%s --remove-args/--args, or its file in " \
                  "/boot/loader/entries)" % entry["kernel"]
            args = [arg for arg in split_configured(entry["args"], where, fix)[0] if not arg.text.startswith("$")]
            if entry["root"]:
                args.insert(0, Arg("root", entry["root"], "root=%s" % entry["root"]))
            entry["parsed"] = args
        return entries

    def default_index(self) -> int:
        text = self.runner.read(["grubby", "--default-index"]).strip()
        try:
            return int(text)
        except ValueError:
            raise KernelCmdlineError("grubby --default-index printed %r, not an entry index" % text) from None

    def _default(self, entries: List[Dict[str, Any]]) -> Dict[str, Any]:
        index = self.default_index()
        return next((e for e in entries if e["index"] == index), entries[0])

    def command(self, entries: List[Dict[str, Any]], request: Request) -> Optional[List[str]]:
        """One grubby call: --remove-args (every key of a unit to rewrite, each absent one), --args."""
        remove: List[str] = []
        rewritten: List[Unit] = []
        for entry in entries:
            args = entry["parsed"]
            for unit in changed_units(args, request):
                rewritten += [unit] if unit not in rewritten else []
                remove += self._removals([a for a in args if a.name in unit.names], remove, by_key=True)
            remove += self._removals(absent_matches(args, request), remove, by_key=False)
        add = [arg.text for unit in request.units if unit in rewritten for arg in unit.args]
        if not remove and not add:
            return None
        argv = ["grubby", "--update-kernel=ALL"]
        if remove:
            argv.append("--remove-args=%s" % " ".join(remove))
        if add:
            argv.append("--args=%s" % " ".join(add))
        return argv

    @staticmethod
    def _removals(args: List[Arg], already: List[str], by_key: bool) -> List[str]:
        """Words for --remove-args: a key removes every value of it, key=value one occurrence.

        A word is repeated as often as it occurs in one entry (grubby removes one
        match per word when occurrences touch).
        """
        words = [arg.key if by_key else arg.text for arg in args]
        out: List[str] = []
        for word in words:
            if words.count(word) > already.count(word) + out.count(word):
                out.append(word)
        for arg in args:
            if re.search(r"\s", arg.text):
                raise KernelCmdlineError("%s holds a space: grubby cannot remove it; edit the boot entries by hand"
                                         % arg.text)
        return out

    def apply(self, request: Request) -> Outcome:
        self._single_line_values(request)
        entries = self.entries()
        default = self._default(entries)
        before = default["parsed"]
        for entry in entries:
            check_protected(entry["parsed"], apply_request(entry["parsed"], request), request,
                            "boot entry %s" % entry["kernel"])
        file_change = self._kernel_cmdline_change(request)
        argv = self.command(entries, request)
        diff = [line_diff("grubby entry %s" % e["kernel"], e["parsed"], apply_request(e["parsed"], request))
                for e in entries if not satisfied(e["parsed"], request)]
        if file_change:
            diff.append(file_change.diff())
            if not self.runner.check_mode:
                write_file(self.host, file_change.host_path, file_change.after)
        if argv:
            try:
                self.runner.change(argv)
            except KernelCmdlineError as error:
                raise restore_after_failure(self.host, file_change, error, self.runner.check_mode) from None
        configured = apply_request(before, request)
        if argv and not self.runner.check_mode:
            entries = self.entries()
            stale = [e for e in entries if not satisfied(e["parsed"], request)]
            if stale:
                raise KernelCmdlineError("grubby ran but these entries still differ from the request: %s (%s)"
                                         % (", ".join(e["kernel"] for e in stale),
                                            "; ".join(unmet(stale[0]["parsed"], request))))
            configured = self._default(entries)["parsed"]
        return Outcome(bool(argv or file_change), before, configured,
                       [self.KERNEL_CMDLINE] if file_change else [], diff)

    def _kernel_cmdline_change(self, request: Request) -> Optional[FileChange]:
        """Kernels installed later take their arguments from /etc/kernel/cmdline when it exists: keep it in step."""
        return _cmdline_file_change(self.host, self.KERNEL_CMDLINE, read_file(self.host, self.KERNEL_CMDLINE),
                                    request, create=False)


def _cmdline_file_change(host: HostRoot, host_path: str, text: Optional[str], request: Request,
                         create: bool, fallback: str = "") -> Optional[FileChange]:
    if text is None and not create:
        return None
    args, init = split_configured(text if text is not None else fallback, host_path,
                                  "close or remove the quote in %s" % host_path)
    new = apply_request(args, request)
    check_protected(args, new, request, host_path)
    if text is not None and satisfied(args, request):
        return None
    content = join_args(new, init) + "\n"
    return None if content == text else FileChange(host_path, text, content)


class SystemdBootBackend(Backend):
    """systemd-boot / kernel-install: /etc/kernel/cmdline, then kernel-install add for every installed kernel."""

    name = "systemd_boot"
    KERNEL_CMDLINE = "/etc/kernel/cmdline"
    FALLBACK = "/usr/lib/kernel/cmdline"
    ENTRY_DIRS = ("/efi/loader/entries", "/boot/efi/loader/entries", "/boot/loader/entries")
    MODULE_DIRS = ("/usr/lib/modules", "/lib/modules")

    def source_line(self) -> Tuple[Optional[str], str]:
        """(/etc/kernel/cmdline or None, the line kernel-install uses).

        kernel-install reads /etc/kernel/cmdline, else /usr/lib/kernel/cmdline, else /proc/cmdline.
        """
        text = read_file(self.host, self.KERNEL_CMDLINE)
        if text is not None:
            split_configured(text, self.KERNEL_CMDLINE, "close or remove the quote in %s" % self.KERNEL_CMDLINE)
            return text, text
        fix = "write the line every kernel should get to %s by hand" % self.KERNEL_CMDLINE
        fallback = read_file(self.host, self.FALLBACK)
        if fallback is None:
            args, _init = split_configured(self.host.read_text("/proc/cmdline"), "/proc/cmdline", fix)
            fallback = join_args(a for a in args if a.key not in LOADER_KEYS)
        split_configured(fallback, self.FALLBACK, fix)
        return None, fallback

    def entries(self) -> List[Tuple[str, str, List[Arg]]]:
        """Type #1 boot loader entries with a Linux kernel: (path, version, options)."""
        found = []
        for directory in self.ENTRY_DIRS:
            for name in self.host.listdir(directory):
                if not name.endswith(".conf"):
                    continue
                path = "%s/%s" % (directory, name)
                fields: Dict[str, List[str]] = {}
                for line in (read_file(self.host, path) or "").splitlines():
                    key, _sep, value = line.strip().partition(" ")
                    fields.setdefault(key, []).append(value.strip())
                if "linux" in fields:
                    version = (fields.get("version") or [""])[0]
                    found.append((path, version, split_cmdline(" ".join(fields.get("options", [])))[0]))
        return found

    def kernels(self) -> List[Tuple[str, str]]:
        """Installed kernels: (version, image) from /usr/lib/modules/<v>/vmlinuz or /boot/vmlinuz-<v>."""
        kernels: Dict[str, str] = {}
        for directory in self.MODULE_DIRS:
            for version in self.host.listdir(directory):
                for image in ("%s/%s/vmlinuz" % (directory, version), "/boot/vmlinuz-%s" % version):
                    if version not in kernels and self.host.exists(image):
                        kernels[version] = image
        if not kernels:
            raise KernelCmdlineError("no installed kernel found (looked for /usr/lib/modules/<version>/vmlinuz and "
                                     "/boot/vmlinuz-<version>), so kernel-install has nothing to write entries for")
        return sorted(kernels.items())

    def apply(self, request: Request) -> Outcome:
        text, line = self.source_line()
        before = split_cmdline(line)[0]
        change = _cmdline_file_change(self.host, self.KERNEL_CMDLINE, text, request, create=True, fallback=line)
        configured = split_cmdline(change.after if change else line)[0]
        stale = [path for path, _version, args in self.entries() if not satisfied(args, request)]
        if not change and not stale:
            return Outcome(False, before, configured, [], [])
        files, diff = ([self.KERNEL_CMDLINE], [change.diff()]) if change else ([], [])
        if change and not stale and [a.pair for a in configured] == [a.pair for a in before]:
            # Only pins what kernel-install already uses (its fallback) in /etc/kernel/cmdline.
            if not self.runner.check_mode:
                write_file(self.host, change.host_path, change.after)
            return Outcome(True, before, configured, files, diff)
        if not self.runner.find("kernel-install"):
            raise KernelCmdlineError("kernel-install is not in %s: install systemd (it ships kernel-install) or "
                                     "choose the backend that boots this host" % ":".join(self.runner.search_path))
        kernels = self.kernels()
        if change and not self.runner.check_mode:
            write_file(self.host, change.host_path, change.after)
        try:
            for version, image in kernels:
                self.runner.change(["kernel-install", "add", version, image])
        except KernelCmdlineError as error:
            raise restore_after_failure(self.host, change, error, self.runner.check_mode) from None
        if not self.runner.check_mode:
            left = [path for path, _v, args in self.entries() if not satisfied(args, request)]
            if left:
                raise KernelCmdlineError("kernel-install ran but these entries still differ from %s: %s; they may "
                                         "belong to kernels that are no longer installed: remove them"
                                         % (self.KERNEL_CMDLINE, ", ".join(left)))
        return Outcome(True, before, configured, files, diff)


class RpmOstreeBackend(Backend):
    """rpm-ostree kargs: the default deployment's arguments (the one the next boot uses)."""

    name = "rpm_ostree"

    def read(self) -> List[Arg]:
        lines = [line for line in self.runner.read(["rpm-ostree", "kargs"]).splitlines() if line.strip()]
        if not lines:
            raise KernelCmdlineError("rpm-ostree kargs printed nothing: is this an rpm-ostree host?")
        return split_configured(lines[-1], "rpm-ostree kargs (the default deployment)",
                                "correct it with rpm-ostree kargs --editor")[0]

    def apply(self, request: Request) -> Outcome:
        self._single_line_values(request)
        before = self.read()
        configured = apply_request(before, request)
        check_protected(before, configured, request, "the default rpm-ostree deployment")
        units = changed_units(before, request)
        deletes = absent_matches(before, request) + [a for a in before if any(a.name in u.names for u in units)]
        argv = ["rpm-ostree", "kargs"]
        argv += ["--delete=%s" % a.text for a in before if any(a is d for d in deletes)]
        argv += ["--append=%s" % a.text for unit in units for a in unit.args]
        if len(argv) == 2:
            return Outcome(False, before, before, [], [])
        self.runner.change(argv)
        if not self.runner.check_mode:
            configured = self.read()
            if not satisfied(configured, request):
                raise KernelCmdlineError("rpm-ostree kargs ran but the default deployment still differs: %s"
                                         % "; ".join(unmet(configured, request)))
        return Outcome(True, before, configured, [], [line_diff("rpm-ostree kargs", before, configured)])


# --------------------------------------------------------------------------
# Detection and the one entry point
# --------------------------------------------------------------------------

def detect_backend(host: HostRoot) -> str:
    """The backend that boots this host, from files below the root; an error that lists what was seen."""
    if host.exists("/run/ostree-booted"):
        return "rpm_ostree"
    if any(host.exists(d + "/loader/loader.conf") for d in ("/efi", "/boot/efi", "/boot")):
        return "systemd_boot"
    family = os_release_ids(host)
    if family & {"rhel", "fedora", "centos"}:
        return "grubby"
    if family & {"debian", "ubuntu"} and host.exists(GrubBackend.DEFAULTS):
        return "grub"
    raise KernelCmdlineError(
        "unknown boot setup: no /run/ostree-booted (rpm-ostree), no loader/loader.conf in /efi, /boot/efi or /boot "
        "(systemd-boot), /etc/os-release ID/ID_LIKE %s is neither EL/Fedora (grubby) nor Debian/Ubuntu with %s "
        "(GRUB); pass backend explicitly if one of them applies"
        % (" ".join(sorted(family)) or "unreadable", GrubBackend.DEFAULTS))


def make_backend(name: str, host: HostRoot, runner: Runner, grub_dropin_name: str) -> Backend:
    if name == "auto":
        name = detect_backend(host)
    if name == "grub":
        return GrubBackend(host, runner, grub_dropin_name)
    classes = {"grubby": GrubbyBackend, "systemd_boot": SystemdBootBackend, "rpm_ostree": RpmOstreeBackend}
    if name not in classes:
        raise KernelCmdlineError("unknown backend %r: use auto or one of %s" % (name, ", ".join(BACKENDS)))
    return classes[name](host, runner)


def read_active(host: HostRoot) -> Optional[List[Arg]]:
    text = host.read_text("/proc/cmdline")
    return None if text is None else split_cmdline(text)[0]


def manage(host: HostRoot, runner: Runner, backend_name: str, request: Request,
           grub_dropin_name: str = "99-confidential-gpu.cfg") -> Dict[str, Any]:
    """Bring the boot configuration to the request; the module's result (without ``diff``) plus ``diff``."""
    backend = make_backend(backend_name, host, runner, grub_dropin_name)
    outcome = backend.apply(request)
    active = read_active(host)
    pending = pending_changes(outcome.configured, active, request) if active is not None else []
    return {
        "changed": outcome.changed,
        "backend": backend.name,
        "configured": [a.text for a in outcome.configured],
        "configured_before": [a.text for a in outcome.before],
        "active": None if active is None else [a.text for a in active],
        "pending": pending,
        "reboot_required": bool(pending) if active is not None else outcome.changed,
        "commands": runner.commands,
        "files": outcome.files,
        "grub_reader": getattr(backend, "reader", None),
        "diff": outcome.diff,
    }
