"""plumbing.filenames.printable: the one escaping of a name shown to a person (#25 item 6). Control characters
and undecodable bytes come out as `\\xNN`, terminal-driving Unicode as `\\uNNNN`, every other name unchanged."""

from __future__ import annotations

import os
import unicodedata

import pytest

from plumbing.filenames import printable


@pytest.mark.parametrize(
    ("name", "shown"),
    [
        ("a\nb.png", "a\\x0ab.png"),  # a newline would add a row to a table
        ("a\rb.png", "a\\x0db.png"),
        ("\x1b[2J\x1b[H.png", "\\x1b[2J\\x1b[H.png"),  # clear screen, cursor home
        ("\x1b]0;pwned\x07.png", "\\x1b]0;pwned\\x07.png"),  # set the window title
        ("tab\there.png", "tab\\x09here.png"),
        ("del\x7f.png", "del\\x7f.png"),
        ("nul\x00.png", "nul\\x00.png"),
        ("c1\x9b31m.png", "c1\\u009b31m.png"),  # 8-bit CSI
        ("gnp.\u202eevil.exe", "gnp.\\u202eevil.exe"),  # right-to-left override
        ("line\u2028sep.png", "line\\u2028sep.png"),
        (os.fsdecode(b"caf\xe9.png"), "caf\\xe9.png"),  # a Latin-1 byte, as os.fsdecode holds it
        (os.fsdecode(b"\xff\xfe\n.png"), "\\xff\\xfe\\x0a.png"),
    ],
)
def test_control_characters_and_undecodable_bytes_are_escaped(name, shown):
    assert printable(name) == shown
    assert not any(unicodedata.category(c) in ("Cc", "Cs") for c in printable(name))  # nothing a terminal acts on


@pytest.mark.parametrize("name", ["plain.png", "café.png", "写真 1.jpg", "🙂.webp", "a b/c-d_e.png", "back\\slash"])
def test_ordinary_names_come_back_unchanged(name):
    assert printable(name) == name


def test_every_character_below_0x100_either_shows_as_itself_or_as_an_escape():
    for code in range(0x100):
        ch = chr(code)
        shown = printable(ch)
        assert shown == ch or shown in (f"\\x{code:02x}", f"\\u{code:04x}"), code
        assert unicodedata.category(shown[0]) != "Cc", code  # no control character gets through
