"""Names in a multipart part's ``Content-Disposition`` header, decoded as clients mean them.

Browsers send a raw UTF-8 ``filename``; some clients send Latin-1; RFC 5987 clients add
``filename*=UTF-8''caf%C3%A9.txt``, which then wins (RFC 6266 §4.3). The header's bytes
are kept as bytes until here, so no name is garbled or makes the parser fail.
"""

from __future__ import annotations

import re
from urllib.parse import unquote_to_bytes

from python_multipart.multipart import parse_options_header

__all__ = ["disposition_names"]

_EXTENDED_FILENAME = re.compile(rb"""filename\*\s*=\s*"?([^;"]*)"?""", re.IGNORECASE)


def _text(raw: bytes) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("latin-1")


def _extended(value: bytes) -> str | None:
    charset, sep, rest = value.partition(b"'")
    _, sep2, encoded = rest.partition(b"'")
    if not (sep and sep2):
        return None
    try:
        return unquote_to_bytes(encoded).decode(charset.decode("ascii") or "utf-8")
    except (LookupError, UnicodeDecodeError):
        return None


def disposition_names(header: bytes) -> tuple[str, str | None]:
    """The part's field ``name`` and its ``filename`` (None when absent)."""
    _, params = parse_options_header(header)
    name = _text(params.get(b"name", b""))
    found = _EXTENDED_FILENAME.search(header)
    extended = _extended(found.group(1).strip()) if found else None
    if extended:
        return name, extended
    raw = params.get(b"filename")
    return name, _text(raw) if raw else None
