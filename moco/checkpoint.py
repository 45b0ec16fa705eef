"""Atomic save and safe load of the full training state (`runs/NAME/checkpoint.pt`).

Written with `moco.atomic.atomic_write_bytes` (a temporary file in the same folder, fsynced, then
`os.replace`d over the old one), so a SIGKILL at any moment leaves the previous or the new checkpoint,
never a torn one. Loaded with
`weights_only=True`: tensors, numbers, strings, lists and dicts only, never arbitrary pickles.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from moco.atomic import atomic_write_bytes
from moco.errors import FormatVersionError, InputError

CHECKPOINT_VERSION = 1


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
