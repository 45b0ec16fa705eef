"""The rows an index run assembles: `Row`, one file of the new generation (kept, resumed or embedded), and
`Todo`, one file still to decode and embed. Shared by the plan, the embedding stream and the resume cache."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class Row:
    """One file of the generation being assembled. `vector` is a row of the old or the new vectors."""

    path: str
    size: int
    mtime_ns: int
    content_hash: str | None
    width: int = 0
    height: int = 0
    error: str | None = None  # None: ok
    vector: np.ndarray | None = None


@dataclass(frozen=True)
class Todo:
    """One file to decode and embed."""

    abspath: str
    path: str  # relative, POSIX
    size: int
    mtime_ns: int
    content_hash: str | None  # known when it was hashed while planning
