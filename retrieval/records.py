"""The catalog's view of one file, shared by index, search and dedup."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class FileRecord:
    """One indexed file. `id` is the FAISS id and the row id in `catalog.sqlite`."""

    id: int
    path: str  # relative to the indexed root, POSIX separators
    size: int  # bytes
    mtime_ns: int
    content_hash: str  # hex sha256 of the file bytes
    width: int
    height: int

    @property
    def pixels(self) -> int:
        return self.width * self.height
