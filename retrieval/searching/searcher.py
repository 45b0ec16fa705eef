"""Nearest-neighbour search over one loaded index: open once, query many times (the CLI and the app)."""

from __future__ import annotations

import logging
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from itertools import chain, repeat
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from retrieval.errors import EncoderMismatchError
from retrieval.indexing.catalog import BadFile
from retrieval.indexing.faiss_index import searcher
from retrieval.indexing.generations import Generation, Manifest, load_generation
from retrieval.records import FileRecord
from retrieval.searching.score import BACKGROUND_RANK, IDENTICAL, band, rank_background, scores

if TYPE_CHECKING:
    import faiss
    from PIL import Image

    from retrieval.embed import Embedder

logger = logging.getLogger(__name__)


@dataclass(slots=True)
class Hit:
    """One result: `rank` from 1, `id` the catalog/FAISS id, `path` relative to the index root, `cosine` the raw
    cosine similarity of the query and result embeddings, `score` the neighbour-normalised score a person
    reads (0 = as close as a typical neighbour, 1 = identical; `retrieval.searching.score`) and `band` that
    score in words ("same picture", "near copy", "similar", "unrelated").

    A slotted, non-frozen dataclass because one is built per result on every query: a frozen dataclass's
    `__init__` goes through `object.__setattr__` per field (~1.7 us per hit, ~17 us of a 10-hit query);
    this one costs ~0.3 us, less than a NamedTuple (~0.45 us), and unlike a NamedTuple
    still works with `dataclasses.replace` (retrieval.searching.query uses it). Treat hits as read-only."""

    rank: int
    id: int
    path: str
    cosine: float
    score: float = float("nan")
    band: str = ""


class SearchIndex:
    """A verified index generation held in memory: manifest, catalog records, vectors and FAISS index."""

    def __init__(self, generation: Generation) -> None:
        if generation.index is None:
            raise ValueError("SearchIndex needs a generation loaded with its FAISS index")
        self.generation = generation
        self.manifest: Manifest = generation.manifest
        self.records: list[FileRecord] = generation.records  # records[i].id == i
        self.bad: list[BadFile] = generation.bad
        self.vectors: np.ndarray = generation.vectors  # (n, dim) float32, read-only
        self.index: faiss.Index = generation.index
        self.root = Path(generation.manifest.root)
        self._searcher = searcher(self.index, self.manifest.kind, self.manifest.params, self.vectors)
        self._paths: list[str] = [r.path for r in self.records]  # _paths[id], no record lookup per hit
        self._by_path = {r.path: r.id for r in self.records}
        self._by_hash: dict[str, list[int]] = {}
        for r in self.records:
            self._by_hash.setdefault(r.content_hash, []).append(r.id)
        self._hashes: list[str] = [r.content_hash for r in self.records]  # exact copies share a background group
        self._copies = max((len(ids) for ids in self._by_hash.values()), default=1) - 1  # most copies of one file
        self._background = np.full(len(self.records), np.nan, dtype=np.float32)  # (n,) filled on first use
        # the r-th distinct neighbour, as dedup's background: fewer pictures than r + 1 use the farthest
        self.background_rank = max(1, min(BACKGROUND_RANK, len(self._by_hash) - 1))

    @classmethod
    def open(cls, index_dir: Path) -> SearchIndex:
        """Load the live generation of `index_dir`; IndexError_ / FormatVersionError if it cannot be used."""
        return cls(load_generation(Path(index_dir), load_index=True))

    def __len__(self) -> int:
        return len(self.records)

    @property
    def dim(self) -> int:
        return self.manifest.dim

    # ------------------------------------------------------------------------------------ lookups

    def id_for_path(self, path: str | Path) -> int | None:
        """The id of a file given relative to the root (POSIX) or as a path under the root."""
        path = Path(path)
        if path.is_absolute():
            try:
                rel = path.resolve().relative_to(self.root).as_posix()
            except ValueError:
                return None
        else:
            rel = path.as_posix()
        return self._by_path.get(rel)

    def ids_for_hash(self, digest: str) -> list[int]:
        """Ids of the indexed files with these exact bytes."""
        return list(self._by_hash.get(digest, ()))

    def abspath(self, hit_or_record: Hit | FileRecord) -> Path:
        return self.root / hit_or_record.path

    def check_encoder(self, embedder: Embedder) -> None:
        """EncoderMismatchError unless `embedder` is the encoder this index was built with."""
        if embedder.sha256 != self.manifest.encoder_sha256:
            raise EncoderMismatchError(
                f"{self.generation.path.parent}: index was built with encoder"
                f" {self.manifest.encoder_sha256[:12]} ({self.manifest.encoder_path})"
                f" but the model given is {embedder.sha256[:12]}; rebuild the index with this model"
            )

    # ------------------------------------------------------------------------------------ search

    def search_vectors(
        self,
        queries: np.ndarray,
        k: int = 10,
        exclude_ids: Sequence[Collection[int]] | None = None,
    ) -> list[list[Hit]]:
        """Top-k hits for each query row (n, dim) (or one vector (dim,)), best first.

        `exclude_ids[i]` lists ids never returned for query i (e.g. the query image itself)."""
        if k < 1:
            raise ValueError(f"Illegal k {k}: must be at least 1")
        Q = self._query_rows(queries)
        if exclude_ids is not None and len(exclude_ids) != Q.shape[0]:
            raise ValueError(f"exclude_ids has {len(exclude_ids)} entries for {Q.shape[0]} queries")
        n = len(self.records)
        if n == 0 or Q.shape[0] == 0:
            return [[] for _ in range(Q.shape[0])]
        extra = max((len(e) for e in exclude_ids), default=0) if exclude_ids is not None else 0
        # deep enough for k hits and for the query's background (the r-th distinct neighbour, past copies)
        depth = min(n, max(k, self.background_rank + 1 + min(self._copies, 4 * k)) + extra)
        D, I = self._searcher.search(Q, depth)  # noqa: E741  (q, depth), (q, depth)
        skips = exclude_ids if exclude_ids is not None else [()] * Q.shape[0]
        rows = [self._row(c, ids, skip, k) for c, ids, skip in zip(D.tolist(), I.tolist(), skips, strict=True)]
        n_hits = sum(len(ids) for ids, _, _ in rows)
        if n_hits == 0:
            return [[] for _ in rows]
        # one vectorised scoring over every hit of the batch: cosine, query background, hit background
        hit_ids = np.fromiter(chain.from_iterable(ids for ids, _, _ in rows), np.int64, n_hits)
        cos = np.fromiter(chain.from_iterable(c for _, c, _ in rows), np.float32, n_hits)
        qb = np.fromiter(chain.from_iterable(repeat(b, len(ids)) for ids, _, b in rows), np.float32, n_hits)
        s = scores(cos, qb, self.backgrounds(hit_ids)).tolist()
        path = self._paths.__getitem__
        out, at = [], 0
        for ids, c, _ in rows:
            row_s = s[at : at + len(ids)]
            at += len(ids)
            out.append(list(map(Hit, range(1, len(ids) + 1), ids, map(path, ids), c, row_s, map(band, row_s))))
        return out

    def _row(self, cos: list[float], ids: list[int], skip: Collection[int], k: int) -> tuple[list, list, float]:
        """(the first k real, not skipped ids, their cosines, the query's background) of one result row: FAISS
        pads with -1; the background skips the query's own picture (cosine 1) and counts copies once."""
        real = [j for j, i in enumerate(ids) if i >= 0 and i not in skip]
        top = real[:k]
        others = [j for j in real if cos[j] < 1.0 - IDENTICAL]
        qb = rank_background([cos[j] for j in others], [self._hashes[ids[j]] for j in others], self.background_rank)
        return [ids[j] for j in top], [cos[j] for j in top], qb

    def backgrounds(self, ids: np.ndarray) -> np.ndarray:
        """(len(ids),) each indexed picture's background: its cosine to its r-th nearest distinct other picture
        (r = `background_rank`; itself and its exact copies do not count), as dedup normalises against.
        Computed on first use and kept."""
        ids = np.asarray(ids, dtype=np.int64)
        found = self._background[ids]
        gaps = np.isnan(found)
        if not gaps.any():
            return found
        missing = np.unique(ids[gaps])
        if missing.size:
            depth = min(len(self.records), self.background_rank + 1 + self._copies)
            D, I = self._searcher.search(np.ascontiguousarray(self.vectors[missing]), depth)  # noqa: E741
            for own, cos, row in zip(missing.tolist(), D.tolist(), I.tolist(), strict=True):
                mine = self._hashes[own]
                js = [j for j, i in enumerate(row) if i >= 0 and self._hashes[i] != mine]
                b = rank_background([cos[j] for j in js], [self._hashes[row[j]] for j in js], self.background_rank)
                self._background[own] = b  # benign race: concurrent searches write the same value
        return self._background[ids]

    def _query_rows(self, queries: np.ndarray) -> np.ndarray:
        """`queries` as (q, dim) float32 rows, without a copy when they already are; one vector is one query."""
        Q = np.ascontiguousarray(queries, dtype=np.float32)
        if Q.ndim == 1:
            Q = Q.reshape(1, -1)
        if Q.ndim != 2 or Q.shape[1] != self.dim:
            raise ValueError(f"queries must be (n, {self.dim}), got shape {np.shape(queries)}")
        return Q

    def search_images(
        self,
        images: Sequence[Image.Image],
        embedder: Embedder,
        k: int = 10,
        exclude_ids: Sequence[Collection[int]] | None = None,
    ) -> list[list[Hit]]:
        """Embed decoded images with `embedder` (checked against the index) and search them."""
        self.check_encoder(embedder)
        return self.search_vectors(embedder.encode(images), k, exclude_ids)


def search(
    index: SearchIndex,
    queries: np.ndarray,
    k: int = 10,
    exclude_ids: Sequence[Collection[int]] | None = None,
) -> list[list[Hit]]:
    """Top-k hits for each query embedding: `index.search_vectors` as a free function."""
    return index.search_vectors(queries, k, exclude_ids)
