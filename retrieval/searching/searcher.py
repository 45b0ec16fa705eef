"""Nearest-neighbour search over one loaded index: open once, query many times (the CLI and the app)."""

from __future__ import annotations

import logging
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from retrieval.errors import EncoderMismatchError
from retrieval.indexing.catalog import BadFile
from retrieval.indexing.faiss_index import searcher
from retrieval.indexing.generations import Generation, Manifest, load_generation
from retrieval.records import FileRecord

if TYPE_CHECKING:
    import faiss
    from PIL import Image

    from retrieval.embed import Embedder

logger = logging.getLogger(__name__)


@dataclass(slots=True)
class Hit:
    """One result: `rank` from 1, `id` the catalog/FAISS id, `path` relative to the index root,
    `score` the cosine similarity between query and result embeddings.

    A slotted, non-frozen dataclass because one is built per result on every query: a frozen dataclass's
    `__init__` goes through `object.__setattr__` per field (~1.7 us per hit, ~17 us of a 10-hit query);
    this one costs ~0.3 us, less than a NamedTuple (~0.45 us), and unlike a NamedTuple
    still works with `dataclasses.replace` (retrieval.searching.query uses it). Treat hits as read-only."""

    rank: int
    id: int
    path: str
    score: float


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
        D, I = self._searcher.search(Q, min(n, k + extra))  # noqa: E741  (q, k'), (q, k')
        rows = zip(D.tolist(), I.tolist(), strict=True)
        if exclude_ids is not None:
            return [self._hits(s, ids, skip, k) for (s, ids), skip in zip(rows, exclude_ids, strict=True)]
        # the usual row: k' <= k real ids, best first, taken as it is (-1 pads rows FAISS could not fill)
        path = self._paths.__getitem__
        ranks = range(1, I.shape[1] + 1)
        return [
            list(map(Hit, ranks, ids, map(path, ids), s)) if -1 not in ids else self._hits(s, ids, (), k)
            for s, ids in rows
        ]

    def _query_rows(self, queries: np.ndarray) -> np.ndarray:
        """`queries` as (q, dim) float32 rows, without a copy when they already are; one vector is one query."""
        Q = np.ascontiguousarray(queries, dtype=np.float32)
        if Q.ndim == 1:
            Q = Q.reshape(1, -1)
        if Q.ndim != 2 or Q.shape[1] != self.dim:
            raise ValueError(f"queries must be (n, {self.dim}), got shape {np.shape(queries)}")
        return Q

    def _hits(self, scores: list[float], ids: list[int], skip: Collection[int], k: int) -> list[Hit]:
        """The first `k` results of one query row that are real ids (FAISS pads with -1) and not skipped."""
        kept = [j for j, i in enumerate(ids) if i >= 0 and i not in skip][:k]
        return [Hit(rank, ids[j], self._paths[ids[j]], scores[j]) for rank, j in enumerate(kept, 1)]

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
