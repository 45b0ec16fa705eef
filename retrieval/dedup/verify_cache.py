"""A cache of verification thumbnails beside an index, so that rerunning `retrieval dedup` (another
threshold, another keeper rule) does not decode the same files again.

`indexes/NAME/verify-thumbs.sqlite` maps a file's content hash to its canonical thumbnail
(`retrieval.verify.canonical_thumbnail`, THUMB_SIDE squared bytes), tagged with the version of the
thumbnail's making (its side, the decoding size, the trim and straighten revisions): a thumbnail made
another way is never used. The cache is only an accelerator: a cache that cannot be opened, read or
written (damaged, read-only folder) is skipped with one warning and dedup goes on reading the files.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from moco.preprocess import TRIM_REVISION
from moco.straighten import STRAIGHTEN_REVISION
from retrieval.dedup.verify import LOAD_SIDE, THUMB_SIDE

logger = logging.getLogger(__name__)

CACHE_NAME = "verify-thumbs.sqlite"
VERSION = f"side {THUMB_SIDE}, decoded at {LOAD_SIDE}, trim {TRIM_REVISION}, straighten {STRAIGHTEN_REVISION}"
_CHUNK = 500  # hashes per SELECT (SQLite's limit on bound parameters is 999 in old builds)


class ThumbnailCache:
    """content hash -> canonical thumbnail, in one SQLite file."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._db: sqlite3.Connection | None = None
        try:
            db = sqlite3.connect(path)
            db.execute("CREATE TABLE IF NOT EXISTS thumbs (hash TEXT PRIMARY KEY, version TEXT, data BLOB)")
            db.commit()
            self._db = db
        except sqlite3.Error as e:
            self._skip(e)

    def _skip(self, e: Exception) -> None:
        logger.warning("%s: not used (%s); the files are read instead", self.path, e)
        if self._db is not None:
            self._db.close()
        self._db = None

    def get_many(self, hashes: Sequence[str]) -> dict[str, np.ndarray]:
        out: dict[str, np.ndarray] = {}
        size = THUMB_SIDE * THUMB_SIDE
        unique = list(dict.fromkeys(hashes))
        for s in range(0, len(unique), _CHUNK):
            if self._db is None:
                break
            chunk = unique[s : s + _CHUNK]
            try:
                rows = self._db.execute(
                    f"SELECT hash, data FROM thumbs WHERE version = ? AND hash IN ({','.join('?' * len(chunk))})",
                    [VERSION, *chunk],
                ).fetchall()
            except sqlite3.Error as e:
                self._skip(e)
                break
            for h, data in rows:
                if isinstance(data, bytes) and len(data) == size:
                    out[h] = np.frombuffer(data, dtype=np.uint8).reshape(THUMB_SIDE, THUMB_SIDE).copy()
        return out

    def put_many(self, items: dict[str, np.ndarray]) -> None:
        if self._db is None or not items:
            return
        try:
            with self._db:  # one transaction: all or nothing
                self._db.executemany(
                    "INSERT OR REPLACE INTO thumbs (hash, version, data) VALUES (?, ?, ?)",
                    [(h, VERSION, np.ascontiguousarray(t, dtype=np.uint8).tobytes()) for h, t in items.items()],
                )
        except sqlite3.Error as e:
            self._skip(e)

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None


def cached_verifier(
    align: Callable[[Callable[[int], np.ndarray | None], np.ndarray, np.ndarray], np.ndarray],
    load: Callable[[int], np.ndarray | None],
    hashes: Sequence[str],
    cache: ThumbnailCache,
) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    """find_groups' `verify`: `align(thumbs, src, dst)` with each id's thumbnail taken from the cache (by
    hashes[id]) or, when missing, from `load(id)`; what was loaded is added to the cache afterwards."""

    def verify(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
        ids = np.unique(np.concatenate([np.asarray(src), np.asarray(dst)])).tolist()
        known = cache.get_many([hashes[i] for i in ids])
        loaded: dict[str, np.ndarray] = {}

        def thumb(i: int) -> np.ndarray | None:
            t = known.get(hashes[i])
            if t is None:
                t = load(i)
                if t is not None:
                    loaded[hashes[i]] = t
            return t

        out = align(thumb, src, dst)
        cache.put_many(loaded)
        logger.info("verification thumbnails: %d from %s, %d read from files", len(known), cache.path, len(loaded))
        return out

    return verify
