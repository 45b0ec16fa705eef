"""Files that commands write for a person (`--output`, `--report`): checked before the work starts, so a
long run never ends in a traceback or a lost result, and written atomically (moco.checkpoint)."""

from __future__ import annotations

import os
from pathlib import Path

from plumbing.atomic import atomic_write_bytes
from plumbing.errors import InputError


def check_output_file(path: Path, option: str) -> None:
    """InputError (one line) unless `path` can be created or replaced: its folder exists, is a folder and
    is writable, and `path` itself is not a folder."""
    path = Path(path)
    folder = path.parent
    if path.is_dir():
        raise InputError(f"{path}: {option} names a folder; give a file name")
    if not folder.is_dir():
        what = "does not exist" if not os.path.lexists(folder) else "is not a folder"
        raise InputError(f"{path}: cannot write {option} here ({folder} {what})")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise InputError(f"{path}: cannot write {option} here ({folder} is not writable)")


def write_text_file(path: Path, text: str) -> None:
    """Write `text` (UTF-8) via a temporary file in the same folder and rename: a reader never sees half a
    file, and a failure is one InputError that names the file."""
    data = text.encode("utf-8")
    try:
        atomic_write_bytes(Path(path), lambda f: f.write(data))
    except OSError as e:
        raise InputError(f"{path}: cannot write ({e.strerror or e})") from None
