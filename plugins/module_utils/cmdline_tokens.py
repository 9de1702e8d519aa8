# Copyright: contributors to confidential_gpu.host
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The kernel command line split into parameters, as the kernel splits it at boot.

The rule follows Linux ``next_arg()`` in ``lib/cmdline.c`` (torvalds/linux 0ea09083116d), the splitter that
``parse_args()`` applies to the boot command line.  Used by the
readiness facts (``cc_host``), the boot-argument editor (``kernel_cmdline``) and ``pcie_acs``.

Standard library only: this runs on target hosts with Python >= 3.8.
"""

from __future__ import annotations


def next_cmdline_token(text: str, pos: int) -> tuple[str, str | None, int]:
    """One kernel parameter starting at ``pos``: (key, value, end), as the kernel's next_arg() splits it.

    Double quotes group spaces; a value that starts with a quote loses it and
    its closing quote (``foo="a b"`` -> ``a b``), and so does a whole
    argument in quotes (``"foo=a b"``).  Inner quotes are kept as written.
    """
    quoted = text[pos] == '"'
    if quoted:
        pos += 1
    in_quote = quoted
    equals = -1
    end = pos
    while end < len(text):
        char = text[end]
        if char.isspace() and not in_quote:
            break
        if equals < 0 and char == "=":
            equals = end
        if char == '"':
            in_quote = not in_quote
        end += 1
    if equals < 0:
        key, value = text[pos:end], None
        if quoted and key.endswith('"'):
            key = key[:-1]
        return key, value, end
    key, value = text[pos:equals], text[equals + 1:end]
    if value.startswith('"'):
        closed = len(value) > 1 and value.endswith('"')
        value = value[1:-1] if closed else value[1:]
    elif quoted and value.endswith('"'):
        value = value[:-1]
    return key, value, end


def parse_cmdline(text: str | None) -> tuple[list[dict[str, str | None]], list[str]]:
    """Kernel command line -> (``[{key, value}]`` in order with repeats, init arguments after ``--``).

    A bare flag has value ``None``; ``key=`` has value ``""``.
    """
    args: list[dict[str, str | None]] = []
    if not text:
        return args, []
    pos = 0
    while True:
        while pos < len(text) and text[pos].isspace():
            pos += 1
        if pos >= len(text):
            return args, []
        key, value, pos = next_cmdline_token(text, pos)
        if key == "--" and value is None:
            return args, text[pos:].split()
        args.append({"key": key, "value": value})
