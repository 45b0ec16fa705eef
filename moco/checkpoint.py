"""Atomic save and safe load of the full training state (`runs/NAME/checkpoint.pt`).

Written with `plumbing.atomic.atomic_write_bytes` (a temporary file in the same folder, fsynced, then
`os.replace`d over the old one), so a SIGKILL at any moment leaves the previous or the new checkpoint,
never a torn one. Loaded with
`weights_only=True`: tensors, numbers, strings, lists and dicts only, never arbitrary pickles.
"""

from __future__ import annotations

import pickle
import warnings
from pathlib import Path
from typing import Any

import torch

from plumbing.atomic import atomic_write_bytes
from plumbing.errors import FormatVersionError, InputError

CHECKPOINT_VERSION = 1


IMAGE_ROOT = "image_root"  # the training folder as an absolute path, resolved when the checkpoint is written


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """Write `state` atomically. A state whose config names the training images (`config["images"]`, kept as
    the person gave it) also records that folder as an absolute path (`image_root`), so the dictionary view
    finds the pictures from any working directory (`moco.dictionary.resolve_image_root`)."""
    state = {"version": CHECKPOINT_VERSION, **state}
    images = (state.get("config") or {}).get("images") if isinstance(state.get("config"), dict) else None
    if images and IMAGE_ROOT not in state:
        state[IMAGE_ROOT] = str(Path(images).expanduser().resolve())
    atomic_write_bytes(path, lambda f: torch.save(state, f))


START_AFRESH = "to start afresh, rerun with --no-resume (or choose another --out)"


def first_line(exc: BaseException, limit: int = 160) -> str:
    """The first non-empty line of an exception's message, shortened: libraries' multi-line advice
    (torch's suggests `weights_only=False`) never reaches the person."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    text = lines[0] if lines else type(exc).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


def load_checkpoint(path: Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """The state saved by `save_checkpoint`. InputError (one line naming the file) for anything else: a file
    holding Python objects besides tensors and plain values is refused as unsafe and never unpickled."""
    try:
        with warnings.catch_warnings():  # torch warns (two lines) about the pickle protocol of foreign files
            warnings.simplefilter("ignore", UserWarning)
            state = torch.load(path, map_location=map_location, weights_only=True)
    except FileNotFoundError:
        raise
    except pickle.UnpicklingError:  # the weights-only unpickler met something it will not build
        raise InputError(
            f"{path}: refused as unsafe: not a checkpoint of plain tensors, so it is never unpickled"
            f" (it could run code); {START_AFRESH}"
        ) from None
    except Exception as e:
        raise InputError(f"{path}: not a readable checkpoint ({first_line(e)}); {START_AFRESH}") from None
    version = state.get("version") if isinstance(state, dict) else None
    if not isinstance(version, int):
        raise InputError(f"{path}: not a retrieval checkpoint")
    if version > CHECKPOINT_VERSION:
        raise FormatVersionError(
            f"{path}: checkpoint format {version} is newer than this program reads ({CHECKPOINT_VERSION}); upgrade"
        )
    return state
