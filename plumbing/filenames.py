"""File names as the operating system hands them over. On Linux a name is any bytes; Python holds the
bytes that are not UTF-8 as surrogate escapes (`os.fsdecode`), so `open()` and `os.rename()` get the
exact name back. Storage keeps that exact name (the catalog stores its `os.fsencode` bytes); text meant
for a person or a text file (tables, CSV, HTML, log lines, messages) goes through `printable`, which shows
the undecodable bytes as `\\xNN` and the characters a terminal would act on (newline, escape sequences,
bidirectional overrides) escaped the same way, so a name can neither add a row to a table nor drive the
terminal."""

from __future__ import annotations

import re

# What `printable` escapes: the surrogates that hold undecodable bytes (and lone ones), C0 controls and DEL,
# C1 controls (U+0080..U+009F: 8-bit CSI and friends), the line and paragraph separators, and the
# bidirectional marks, embeddings, overrides and isolates that reorder what a terminal shows.
_SHOWN_ESCAPED = re.compile("[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028-\u202e\u2066-\u2069\ud800-\udfff]")


def _escape(match: re.Match[str]) -> str:
    code = ord(match.group())
    if 0xDC80 <= code <= 0xDCFF:  # a byte that is not UTF-8, as os.fsdecode holds it
        return f"\\x{code - 0xDC00:02x}"
    if code < 0x80:  # C0 controls and DEL: the byte itself
        return f"\\x{code:02x}"
    return f"\\u{code:04x}"  # a valid character that a terminal acts on (or a lone surrogate)


def printable(name: str) -> str:
    """`name` as a person may see it on one line: every byte that is not UTF-8 written as `\\xNN` (a Latin-1
    `caf\\xe9.png` prints as backslash, x, e, 9), a control character as `\\xNN` (a newline as `\\x0a`, ESC
    as `\\x1b`), C1 controls, line separators and bidirectional overrides as `\\uNNNN`. Any other name comes
    back unchanged (accents, CJK, emoji, spaces)."""
    return _SHOWN_ESCAPED.sub(_escape, name)
