"""A cache of verification thumbnails beside an index, so that rerunning `retrieval dedup` (another
threshold, another keeper rule) does not decode the same files again.

`indexes/NAME/verify-thumbs.sqlite` maps a file's content hash to its canonical thumbnail
(`retrieval.verify.canonical_thumbnail`, THUMB_SIDE squared bytes), tagged with the version of the
thumbnail's making (its side, the decoding size, the trim and straighten revisions): a thumbnail made
another way is never used. `BlobCache` is the table logic; a second table holds each file's ORB keypoints
(`retrieval.dedup.verify.keypoints.FeatureCache`). The cache is only an accelerator: a cache that cannot be
opened, read or written (damaged, read-only folder) is skipped with one warning and dedup goes on reading
the files.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from moco.preprocess import TRIM_REVISION
from moco.straighten import STRAIGHTEN_REVISION
from retrieval.dedup.verify.align import LOAD_SIDE, THUMB_SIDE

logger = logging.getLogger(__name__)

CACHE_NAME = "verify-thumbs.sqlite"
VERSION = f"side {THUMB_SIDE}, decoded at {LOAD_SIDE}, trim {TRIM_REVISION}, straighten {STRAIGHTEN_REVISION}"
_CHUNK = 500  # hashes per SELECT (SQLite's limit on bound parameters is 999 in old builds)


class BlobCache:
    """content hash -> one record per picture, in one table of an SQLite file, tagged with the version of its
    making (`version()`); `decode` turns a stored blob back into the record, or None for one of the wrong form."""

    table = "blobs"

    def __init__(self, path: Path) -> None:
        self.path = path
        self._db: sqlite3.Connection | None = None
        try:
            db = sqlite3.connect(path)
            db.execute(f"CREATE TABLE IF NOT EXISTS {self.table} (hash TEXT PRIMARY KEY, version TEXT, data BLOB)")
            db.commit()
            self._db = db
        except sqlite3.Error as e:
            self._skip(e)

    def version(self) -> str:
        raise NotImplementedError

    def encode(self, item: Any) -> bytes:
        raise NotImplementedError

    def decode(self, data: bytes) -> Any | None:
        raise NotImplementedError

    def _skip(self, e: Exception) -> None:
        logger.warning("%s: not used (%s); the files are read instead", self.path, e)
        if self._db is not None:
            self._db.close()
        self._db = None

    def get_many(self, hashes: Sequence[str]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        unique = list(dict.fromkeys(hashes))
        for s in range(0, len(unique), _CHUNK):
            if self._db is None:
                break
            chunk = unique[s : s + _CHUNK]
            try:
                rows = self._db.execute(
                    f"SELECT hash, data FROM {self.table} WHERE version = ? AND hash IN ({','.join('?' * len(chunk))})",
                    [self.version(), *chunk],
                ).fetchall()
            except sqlite3.Error as e:
                self._skip(e)
                break
            for h, data in rows:
                item = self.decode(data) if isinstance(data, bytes) else None
                if item is not None:
                    out[h] = item
        return out

    def put_many(self, items: dict[str, Any]) -> None:
        if self._db is None or not items:
            return
        try:
            with self._db:  # one transaction: all or nothing
                self._db.executemany(
                    f"INSERT OR REPLACE INTO {self.table} (hash, version, data) VALUES (?, ?, ?)",
                    [(h, self.version(), self.encode(t)) for h, t in items.items()],
                )
        except sqlite3.Error as e:
            self._skip(e)

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None


class ThumbnailCache(BlobCache):
    """content hash -> canonical thumbnail."""

    table = "thumbs"

    def version(self) -> str:
        return VERSION

    def encode(self, item: np.ndarray) -> bytes:
        return np.ascontiguousarray(item, dtype=np.uint8).tobytes()

    def decode(self, data: bytes) -> np.ndarray | None:
        if len(data) != THUMB_SIDE * THUMB_SIDE:
            return None
        return np.frombuffer(data, dtype=np.uint8).reshape(THUMB_SIDE, THUMB_SIDE).copy()


def cached_loads(
    load: Callable[[int], Any | None], hashes: Sequence[str], cache: BlobCache, ids: Sequence[int]
) -> tuple[Callable[[int], Any | None], Callable[[], None]]:
    """(get, save): `get(id)` is the record of hashes[id] from the cache (looked up once for all `ids`) or, when
    missing, `load(id)`; `save()` adds what was loaded to the cache. `get` may be called from threads."""
    known = cache.get_many([hashes[i] for i in ids])
    loaded: dict[str, Any] = {}

    def get(i: int) -> Any | None:
        t = known.get(hashes[i])
        if t is None:
            t = load(i)
            if t is not None:
                loaded[hashes[i]] = t
        return t

    def save() -> None:
        cache.put_many(loaded)
        logger.info("%s: %d from %s, %d read from files", cache.table, len(known), cache.path, len(loaded))

    return get, save
