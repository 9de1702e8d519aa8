# Copyright: contributors to confidential_gpu.host
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The one tomlkit entry point of the controller side: parse a file's text (an error names the file), dump it.
Editors (containerd_config, kata_model) build tables with ``toml_file.tomlkit`` once a file has parsed.

tomlkit keeps the comments and layout of what it edits; the hosts' Python (3.8, standard library) has no TOML
parser, so every TOML file (containerd's, Kata's) is parsed here, on the controller.
"""

from __future__ import annotations

import typing as t

# What editors import from here (the one tomlkit entry point): tomlkit itself and its Table type too.
__all__ = ["Table", "TomlError", "dumps", "parse", "plain", "tomlkit"]

try:
    import tomlkit
    from tomlkit.exceptions import TOMLKitError
    from tomlkit.items import Table
except ImportError as exc:  # the controller lacks it: say so when a file is parsed, not at import time
    TOMLKIT_IMPORT_ERROR: t.Optional[ImportError] = exc
    TOMLKitError = Table = ()  # type: ignore[assignment,misc]
    tomlkit = None  # type: ignore[assignment]  # editors import the name; parse() says what is missing
else:
    TOMLKIT_IMPORT_ERROR = None


class TomlError(ValueError):
    """A file that is not TOML, or no tomlkit on the controller; the message names the file and the fix."""


def parse(text: t.Any, where: str, reader: str = "its program") -> tomlkit.TOMLDocument:
    """``text`` as a tomlkit document; TomlError naming ``where`` (and that ``reader`` cannot read it either)."""
    if TOMLKIT_IMPORT_ERROR is not None:
        raise TomlError("reading %s needs the tomlkit Python library on the controller (pip install tomlkit): %s"
                        % (where, TOMLKIT_IMPORT_ERROR))
    if not isinstance(text, str):
        raise TomlError("%s must be TOML text, got %s" % (where, type(text).__name__))
    try:
        return tomlkit.parse(text)
    except TOMLKitError as error:
        raise TomlError("%s is not valid TOML (%s); fix the file, %s cannot read it either"
                        % (where, error, reader)) from None


def plain(text: t.Any, where: str, reader: str = "its program") -> t.Dict[str, t.Any]:
    """``text`` parsed into plain Python values (dicts, lists, strings, numbers)."""
    return dict(parse(text, where, reader).unwrap())


def dumps(doc: t.Any) -> str:
    """A tomlkit document (or container) as text, with everything not edited as it was."""
    return tomlkit.dumps(doc)
