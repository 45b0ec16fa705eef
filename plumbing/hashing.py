"""Content hashes of files: the identity of an image's bytes, whatever its name or place."""

from __future__ import annotations

import hashlib
from pathlib import Path

CHUNK_BYTES = 1 << 20  # 1 MiB: large enough to stream at disk speed, small enough to never matter in RAM


def content_hash(path: Path) -> str:
    """Hex sha256 of the bytes of `path`, streamed in 1 MiB chunks. OSError propagates."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()
