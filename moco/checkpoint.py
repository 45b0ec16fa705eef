"""Atomic save and safe load of the full training state (`runs/NAME/checkpoint.pt`).

Written to a temporary file in the same folder, fsynced, then `os.replace`d over the old one, so a
SIGKILL at any moment leaves the previous or the new checkpoint, never a torn one. Loaded with
`weights_only=True`: tensors, numbers, strings, lists and dicts only, never arbitrary pickles.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from moco.errors import FormatVersionError, InputError

CHECKPOINT_VERSION = 1


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


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    state = {"version": CHECKPOINT_VERSION, **state}
    atomic_write_bytes(path, lambda f: torch.save(state, f))


def load_checkpoint(path: Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except FileNotFoundError:
        raise
    except Exception as e:
        raise InputError(f"{path}: not a readable checkpoint ({type(e).__name__}: {e})") from e
    version = state.get("version") if isinstance(state, dict) else None
    if not isinstance(version, int):
        raise InputError(f"{path}: not a retrieval checkpoint")
    if version > CHECKPOINT_VERSION:
        raise FormatVersionError(
            f"{path}: checkpoint format {version} is newer than this program reads ({CHECKPOINT_VERSION}); upgrade"
        )
    return state
