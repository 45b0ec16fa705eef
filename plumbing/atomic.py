"""Atomic file writes: the one place in the project that writes a file aside and renames it into place.

A reader sees the old file or the new one, never a torn one, even after a SIGKILL or a power cut:
the data is written to a temporary file beside the target, fsynced, `os.replace`d over the target,
and the folder is fsynced so that the rename itself is durable.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any


def fsync_dir(path: Path) -> None:
    """Make a rename inside `path` durable. A no-op where directories cannot be opened (Windows)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write_bytes(path: Path, write: Any) -> None:
    """Call `write(file_object)` on a temp file beside `path`, fsync it, and rename it over `path`."""
    for stale in path.parent.glob(f".{path.name}.tmp-*"):  # left by a killed writer
        stale.unlink(missing_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    fsync_dir(path.parent)
