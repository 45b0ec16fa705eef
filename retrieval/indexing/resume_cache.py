"""The resume cache of `index_folder`: rows embedded by a run that has not finished yet (`work/`)."""

from __future__ import annotations

import json
import logging
import shutil
import time
import uuid
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from plumbing.atomic import atomic_write_bytes
from retrieval.indexing.rows import Row

logger = logging.getLogger(__name__)


class WorkCache:
    """Rows embedded by a run that has not finished yet, in `work/` beside the generations.

    Each flush is one `.npz` shard (written to a temp name, then renamed), keyed by (path, size, mtime).
    Shards from another encoder are dropped. The folder is removed once a generation is live."""

    def __init__(self, folder: Path, encoder_sha256: str, dim: int, rank: int, *, create: bool = True) -> None:
        self.folder = folder
        self.encoder_sha256 = encoder_sha256
        self.dim = dim
        self.rank = rank
        self._rows: dict[tuple[str, int, int], Row] = {}
        self._by_hash: dict[str, Row] = {}
        self.sizes: set[int] = set()
        self._save_failed = False  # warned once already
        if create:
            self._open()

    def _open(self) -> None:
        meta_path = self.folder / "meta.json"
        meta = {"encoder_sha256": self.encoder_sha256, "dim": self.dim}
        try:
            found = json.loads(meta_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            found = None
        if found != meta:
            if self.folder.exists():
                logger.info("discarding the work cache of another encoder in %s", self.folder)
                shutil.rmtree(self.folder, ignore_errors=True)
            self.folder.mkdir(parents=True, exist_ok=True)
            meta_path.write_text(json.dumps(meta), encoding="utf-8")
            return
        for shard in sorted(self.folder.glob("*.npz")):
            try:
                for row in _read_shard(shard, self.dim):
                    self._rows[(row.path, row.size, row.mtime_ns)] = row
                    if row.error is None and row.content_hash:
                        self._by_hash[row.content_hash] = row
                        self.sizes.add(row.size)
            except (OSError, ValueError, KeyError) as exc:
                logger.warning("ignoring unreadable work shard %s: %s", shard, exc)
        if self._rows:
            logger.info("resuming: %d files already embedded by an interrupted run", len(self._rows))

    def get(self, path: str, size: int, mtime_ns: int) -> Row | None:
        return self._rows.get((path, size, mtime_ns))

    def by_hash(self, digest: str) -> Row | None:
        return self._by_hash.get(digest)

    def save(self, rows: Sequence[Row]) -> None:
        if not rows:
            return
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            name = f"r{self.rank}-{time.time_ns()}-{uuid.uuid4().hex[:8]}.npz"
            vectors = np.zeros((len(rows), self.dim), dtype=np.float32)  # (m, d), zero rows for bad files
            for i, r in enumerate(rows):
                if r.vector is not None:
                    vectors[i] = r.vector
            atomic_write_bytes(
                self.folder / name,
                lambda f: np.savez(
                    f,
                    paths=np.array([r.path for r in rows], dtype=str),
                    sizes=np.array([r.size for r in rows], dtype=np.int64),
                    mtimes=np.array([r.mtime_ns for r in rows], dtype=np.int64),
                    hashes=np.array([r.content_hash or "" for r in rows], dtype=str),
                    widths=np.array([r.width for r in rows], dtype=np.int64),
                    heights=np.array([r.height for r in rows], dtype=np.int64),
                    errors=np.array([r.error or "" for r in rows], dtype=str),
                    ok=np.array([r.error is None for r in rows], dtype=bool),
                    vectors=vectors,
                ),
            )
        except OSError as exc:  # the cache only saves time; never fail a run over it
            if not self._save_failed:  # one line, not one per batch
                logger.warning("could not save resume data to %s: %s (the run goes on without it)", self.folder, exc)
            self._save_failed = True

    def remove(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)


def _read_shard(path: Path, dim: int) -> list[Row]:
    with np.load(path, allow_pickle=False) as z:
        # Each z[name] reads that array from the zip again: read every array once, not once per row.
        a = {name: z[name] for name in ("paths", "sizes", "mtimes", "hashes", "widths", "heights", "errors", "ok")}
        vectors = z["vectors"]
    if vectors.ndim != 2 or vectors.shape[1] != dim:
        raise ValueError(f"vectors of shape {vectors.shape}")
    if any(len(v) != vectors.shape[0] for v in a.values()):
        raise ValueError("arrays of different lengths")
    rows = []
    for i in range(vectors.shape[0]):
        ok = bool(a["ok"][i])
        rows.append(
            Row(
                path=str(a["paths"][i]),
                size=int(a["sizes"][i]),
                mtime_ns=int(a["mtimes"][i]),
                content_hash=str(a["hashes"][i]) or None,
                width=int(a["widths"][i]),
                height=int(a["heights"][i]),
                error=None if ok else str(a["errors"][i]),
                vector=vectors[i].copy() if ok else None,
            )
        )
    return rows
