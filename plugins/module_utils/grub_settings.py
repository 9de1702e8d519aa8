# Copyright: contributors to confidential_gpu.host
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Read GRUB's settings files (``/etc/default/grub``, ``grub.d/*.cfg``) without a shell.

``grub-mkconfig`` sources these files with ``/bin/sh`` (Debian 12's grub2
2.06, ``/usr/sbin/grub-mkconfig``: ``. ${sysconfdir}/default/grub``, then
``. "${x}"`` for each ``${sysconfdir}/default/grub.d/*.cfg`` that exists), so
they may hold any shell code.  A tree captured from another host must never
run on the machine that reads it: this parser reads the subset of ``sh`` those
files hold in practice, and says so when a file holds anything else.

What it reads, as POSIX ``sh`` does:

- comments, blank lines, ``;`` between statements, ``\\``-newline continuations;
- assignments ``VAR=word`` (several on one line, optionally after ``export``)
  where ``word`` joins unquoted text (``\\c`` is ``c``), ``'...'`` (literal)
  and ``"..."`` (``\\`` escapes only ``$ ` " \\`` and newline), with
  ``$VAR``, ``${VAR}``, ``${VAR-}`` and ``${VAR:-}`` replaced by earlier values
  (unset: empty, the process environment is not consulted);
- ``if [ word = word ]; then`` / ``!=`` / ``else`` / ``fi`` and ``echo ...``
  (output dropped), the shape of the drop-in ``kernel_cmdline`` writes.

Command substitution (``$(...)``, backticks) and arithmetic are never run: the
variable assigned that way is *unknown*, and reading an unknown value where it
matters (``GRUB_CMDLINE_LINUX``, ``GRUB_CMDLINE_LINUX_DEFAULT``, or a condition
that decides them) is an error naming the file and line.  Debian's stock
``GRUB_DISTRIBUTOR=`lsb_release ...``` is therefore read without being run
and without being refused.  Any other statement is refused with its file and
line.  Standard library only.
"""

from __future__ import annotations

import re
from typing import Dict, List, NamedTuple, Optional, Tuple, Union

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_WORD_END = " \t\n;&|<>()"
_GLOB = "*?["


class GrubSettingsError(Exception):
    """A settings file this parser cannot read safely; the message names the file and line."""


class Unknown(NamedTuple):
    """A value only a shell could compute (command substitution): where, and what."""

    where: str
    what: str


Value = Union[str, Unknown]


class Word(NamedTuple):
    value: Value
    unquoted_expansion: bool  # an unquoted $VAR or glob character: sh would split or expand it in a command


class _Reader:
    """One file: statements of words, with the line each started on."""

    def __init__(self, text: str, name: str, variables: Dict[str, Value]) -> None:
        self.text = text
        self.name = name
        self.pos = 0
        self.line = 1
        self.variables = variables

    def where(self, line: Optional[int] = None) -> str:
        return "%s line %d" % (self.name, line or self.line)

    def refuse(self, what: str, line: Optional[int] = None) -> GrubSettingsError:
        return GrubSettingsError("%s: %s" % (self.where(line), what))

    def peek(self, offset: int = 0) -> str:
        at = self.pos + offset
        return self.text[at] if at < len(self.text) else ""

    def advance(self, count: int = 1) -> str:
        chunk = self.text[self.pos:self.pos + count]
        self.line += chunk.count("\n")
        self.pos += count
        return chunk

    def skip_blanks(self) -> None:
        """Spaces, tabs, line continuations and comments (not the newline that ends a comment)."""
        while self.pos < len(self.text):
            char = self.peek()
            if char in " \t":
                self.advance()
            elif char == "\\" and self.peek(1) == "\n":
                self.advance(2)
            elif char == "#":
                while self.peek() not in ("", "\n"):
                    self.advance()
            else:
                return

    def start(self) -> Optional[int]:
        """Move to the next statement; its line, or None at the end of the file."""
        while True:
            self.skip_blanks()
            if self.pos >= len(self.text):
                return None
            if self.peek() in "\n;":
                self.advance()
                continue
            return self.line

    def next_word(self) -> Optional[Tuple[Word, str]]:
        """The statement's next word and its raw text; None at its end.

        Words are expanded one at a time, so an assignment earlier on the line is
        seen by a later word, as in sh.
        """
        self.skip_blanks()
        char = self.peek()
        if char in ("", "\n", ";"):
            if char == ";" and self.peek(1) == ";":
                raise self.refuse("';;' is not a statement this parser reads")
            return None
        for redirect in (">&2", "1>&2"):
            if self.text.startswith(redirect, self.pos):
                return Word("", False), self.advance(len(redirect))
        if char in "&|<>()":
            raise self.refuse("%r (a pipe, redirection, subshell or background job) cannot be read without "
                              "running a shell" % char)
        start = self.pos
        word = self.word()
        return word, self.text[start:self.pos]

    def word(self) -> Word:
        parts: List[str] = []
        unknown: Optional[Unknown] = None
        unquoted = False
        while True:
            char = self.peek()
            if char == "" or char in _WORD_END:
                break
            if char == "\\":
                self.advance()
                following = self.advance()
                if following != "\n":
                    parts.append(following)
            elif char == "'":
                self.advance()
                end = self.text.find("'", self.pos)
                if end < 0:
                    raise self.refuse("a single quote is not closed")
                parts.append(self.advance(end - self.pos))
                self.advance()
            elif char == '"':
                self.advance()
                value = self.double_quoted()
                if isinstance(value, Unknown):
                    unknown = unknown or value
                else:
                    parts.append(value)
            elif char == "`" or (char == "$" and self.peek(1) == "("):
                unknown = unknown or self.substitution()
            elif char == "$":
                value = self.expansion(quoted=False)
                unquoted = True
                if isinstance(value, Unknown):
                    unknown = unknown or value
                else:
                    parts.append(value)
            else:
                unquoted = unquoted or char in _GLOB or char == "~" and not parts
                parts.append(self.advance())
        return Word(unknown if unknown else "".join(parts), unquoted)

    def double_quoted(self) -> Value:
        parts: List[str] = []
        unknown: Optional[Unknown] = None
        while True:
            char = self.peek()
            if char == "":
                raise self.refuse("a double quote is not closed")
            if char == '"':
                self.advance()
                return unknown if unknown else "".join(parts)
            if char == "\\":
                following = self.peek(1)
                self.advance(2)
                if following in '$`"\\':
                    parts.append(following)
                elif following != "\n":
                    parts.append("\\" + following)
            elif char == "`" or (char == "$" and self.peek(1) == "("):
                unknown = unknown or self.substitution()
            elif char == "$":
                value = self.expansion(quoted=True)
                if isinstance(value, Unknown):
                    unknown = unknown or value
                else:
                    parts.append(value)
            else:
                parts.append(self.advance())

    def substitution(self) -> Unknown:
        """Skip a command substitution (never run); what it would have computed is unknown."""
        line = self.line
        if self.peek() == "`":
            self.advance()
            end = self.text.find("`", self.pos)
            if end < 0:
                raise self.refuse("a backtick is not closed", line)
            body = self.advance(end - self.pos)
            self.advance()
            return Unknown(self.where(line), "command substitution `%s`" % body.strip())
        if self.peek(2) == "(":
            raise self.refuse("arithmetic expansion $((...)) is not read by this parser")
        self.advance(2)
        depth, start = 1, self.pos
        while depth:
            char = self.peek()
            if char == "":
                raise self.refuse("a command substitution $( is not closed", line)
            depth += 1 if char == "(" else -1 if char == ")" else 0
            self.advance()
        return Unknown(self.where(line), "command substitution $(%s)" % self.text[start:self.pos - 1].strip())

    def expansion(self, quoted: bool) -> Value:
        """``$NAME``, ``${NAME}``, ``${NAME-}``, ``${NAME:-}``; ``$`` before anything else is a literal ``$``."""
        self.advance()
        if self.peek() == "{":
            end = self.text.find("}", self.pos)
            body = self.text[self.pos + 1:end] if end >= 0 else ""
            match = re.fullmatch(r"([A-Za-z_][A-Za-z0-9_]*)(:?-)?", body)
            if not match:
                raise self.refuse("${%s} is a parameter expansion this parser does not read (it reads $VAR, "
                                  "${VAR}, ${VAR-} and ${VAR:-})" % body)
            self.advance(end + 1 - self.pos)
            return self.variables.get(match.group(1), "")
        match = _NAME.match(self.text, self.pos)
        if match:
            self.advance(match.end() - self.pos)
            return self.variables.get(match.group(0), "")
        char = self.peek()
        if char and (char.isdigit() or char in "@*#?-$!" or (not quoted and char in "'\"")):
            raise self.refuse("$%s is a special parameter or quoting form this parser does not read" % char)
        return "$"


def _is_assignment(raw: str) -> Optional[str]:
    match = re.match(r"([A-Za-z_][A-Za-z0-9_]*)=", raw)
    return match.group(1) if match else None


class SettingsState:
    """Variables after the files read so far."""

    def __init__(self) -> None:
        self.variables: Dict[str, Value] = {}

    def value(self, name: str) -> str:
        """A variable's value; an error naming where it was set when only a shell could compute it."""
        value = self.variables.get(name, "")
        if isinstance(value, Unknown):
            raise GrubSettingsError("%s: %s is set by %s, which is not run when reading a tree (root is not /); "
                                    "replace it with a plain assignment, or run on the host itself"
                                    % (value.where, name, value.what))
        return value

    def read(self, text: str, name: str) -> None:
        """Apply one file's statements, as sourcing it would."""
        reader = _Reader(text, name, self.variables)
        branches: List[bool] = []  # per open if: does its current branch run
        taken: List[bool] = []
        while True:
            line = reader.start()
            if line is None:
                break
            words: List[Word] = []
            raws: List[str] = []
            while True:
                item = reader.next_word()
                if item is None:
                    break
                if not raws and item[1] in ("then", "else", "fi"):
                    self._keyword(reader, line, item[1], branches, taken)
                    continue
                words.append(item[0])
                raws.append(item[1])
                self._assign_as_read(words, raws, all(branches))
            if not words:
                continue
            active = all(branches)
            if raws[0] == "if":
                result = self._condition(reader, line, words[1:], raws[1:]) if active else False
                branches.append(active and result)
                taken.append(result)
            elif raws[0] == "echo":
                continue
            else:
                if raws[0] == "export" and len(raws) > 1:
                    words, raws = words[1:], raws[1:]
                if not all(_is_assignment(raw) for raw in raws):
                    raise reader.refuse("%r is a command, not an assignment: this parser reads assignments only "
                                        "(VAR=value), so that no code from the tree runs" % " ".join(raws), line)
        if branches:
            raise reader.refuse("an if is not closed with fi")

    @staticmethod
    def _keyword(reader: _Reader, line: int, keyword: str, branches: List[bool], taken: List[bool]) -> None:
        if not branches:
            raise reader.refuse("%s without if" % keyword, line)
        if keyword == "else":
            branches[-1] = not taken[-1] and all(branches[:-1])
        elif keyword == "fi":
            branches.pop()
            taken.pop()

    def _assign_as_read(self, words: List[Word], raws: List[str], active: bool) -> None:
        """Assign the word just read when the statement so far is assignments (after an optional export).

        A statement that turns out to be a command is refused afterwards, which
        discards everything read, so an early assignment never outlives it.
        """
        start = 1 if raws[0] == "export" and len(raws) > 1 else 0
        variable = _is_assignment(raws[-1])
        if not active or len(raws) <= start or not variable or not all(_is_assignment(r) for r in raws[start:]):
            return
        value = words[-1].value
        self.variables[variable] = value[len(variable) + 1:] if isinstance(value, str) else value

    def _condition(self, reader: _Reader, line: int, words: List[Word], raws: List[str]) -> bool:
        if len(raws) != 5 or raws[0] != "[" or raws[4] != "]" or raws[2] not in ("=", "!="):
            raise reader.refuse("only 'if [ word = word ]' and 'if [ word != word ]' are read, not %r"
                                % " ".join(raws), line)
        values = []
        for word in (words[1], words[3]):
            if isinstance(word.value, Unknown):
                raise GrubSettingsError("%s: the condition depends on %s (set at %s), which is not run when reading "
                                        "a tree" % (reader.where(line), word.value.what, word.value.where))
            if word.unquoted_expansion:
                raise reader.refuse("quote the expansions in %r: unquoted, sh would split them" % " ".join(raws),
                                    line)
            values.append(word.value)
        return (values[0] == values[1]) == (raws[2] == "=")
