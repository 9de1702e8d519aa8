# Copyright: contributors to confidential_gpu.host
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Credentials out of URLs before they are shown: in messages, debug lines, diffs and failure results.

A download URL can carry a secret in its user-info (``https://user:token@host/...``) or in its query
(a signed URL: ``?X-Amz-Credential=...&X-Amz-Signature=...``, ``?sig=...``, ``?token=...``). Every URL found in a
text keeps its scheme, host and path (so that the user sees which file) and loses the rest: the user-info
becomes ``***@``, each query value ``***`` (the names stay), a fragment ``***``.
"""

from __future__ import annotations

import re
import typing as t

# A URL as it appears in running text: a scheme, '://', then everything up to white space or a quote.
URL_IN_TEXT = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^\s\"'<>`]*")
MASK = "***"
# Punctuation that ends a sentence after a URL rather than belonging to it.
TRAILING = ".,;:!?)]}"


def redact_one_url(url: str) -> str:
    """``url`` with its user-info, query values and fragment masked."""
    scheme, _sep, rest = url.partition("://")
    end = min((index for index in (rest.find(c) for c in "/?#") if index >= 0), default=len(rest))
    authority, tail = rest[:end], rest[end:]
    if "@" in authority:
        authority = MASK + "@" + authority.rsplit("@", 1)[1]
    tail, hash_sep, fragment = tail.partition("#")
    path, query_sep, query = tail.partition("?")
    if query:
        query = "&".join(name + "=" + MASK if has_value else MASK if name else ""
                         for name, has_value, _value in (part.partition("=") for part in query.split("&")))
    return scheme + "://" + authority + path + query_sep + query + hash_sep + (MASK if fragment else "")


def redact_in_text(found: str) -> str:
    """A URL found in running text, redacted, with the punctuation that ends its sentence kept after it."""
    url = found.rstrip(TRAILING)
    return redact_one_url(url) + found[len(url):]


def redact_urls(value: t.Any) -> t.Any:
    """Every URL in ``value`` redacted: a string's URLs, a mapping's or a list's strings (keys kept)."""
    if isinstance(value, str):
        return URL_IN_TEXT.sub(lambda match: redact_in_text(match.group(0)), value)
    if isinstance(value, t.Mapping):
        return {key: redact_urls(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [redact_urls(item) for item in value]
    return value
