"""File names as the operating system hands them over. On Linux a name is any bytes; Python holds the
bytes that are not UTF-8 as surrogate escapes (`os.fsdecode`), so `open()` and `os.rename()` get the
exact name back. Storage keeps that exact name (the catalog stores its `os.fsencode` bytes); text meant
for a person or a text file (tables, CSV, HTML, messages) shows the undecodable bytes as `\\xNN`."""

from __future__ import annotations


def printable(name: str) -> str:
    """`name` with every byte that is not UTF-8 written as `\\xNN`: a Latin-1 `caf\\xe9.png` prints as
    `caf\\xe9.png` (backslash, x, e, 9). A valid name comes back unchanged."""
    try:
        name.encode("utf-8")
        return name
    except UnicodeEncodeError:
        pass
    try:
        raw = name.encode("utf-8", "surrogateescape")  # the bytes the file system holds
    except UnicodeEncodeError:  # a lone surrogate that is no escaped byte (never from os.fsdecode)
        return name.encode("utf-8", "backslashreplace").decode("utf-8")
    return raw.decode("utf-8", "backslashreplace")
