"""`retrieval eval pairs`: instance retrieval. Each query image is ranked against the whole index (exact
cosine) and scored by where its matches come: recall@k and mAP.

A query that is an indexed file uses its stored vector and is left out of its own ranking; any other query
is read from disk (`root/QUERY` if that file exists, else QUERY relative to the pairs file's folder, or
absolute) and embedded with the index's encoder. Matches must be indexed files (paths relative to the root).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from plumbing.images import BadImageError, load_image
from plumbing.progress import Progress
from retrieval.errors import InputError
from retrieval.evaluate.metrics import average_precision, exact_ranks, recall_at_k
from retrieval.evaluate.truth import Missing, read_pairs
from retrieval.searching.searcher import SearchIndex

if TYPE_CHECKING:
    from retrieval.embed import Embedder

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class PairsEvalConfig:
    """`retrieval eval pairs`: recall at each of `recall_ks` and mAP of the pairs in `pairs` on `index`;
    with `compare`, of a random-init encoder's index of the same folder too (`baseline`)."""

    index: Path
    pairs: Path
    recall_ks: tuple[int, ...] = (1, 10)
    compare: bool = False
    device: str = "auto"
    batch_size: int = 32
    progress: Progress | None = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        if not self.recall_ks or min(self.recall_ks) < 1:
            raise InputError(f"Illegal recall_ks {self.recall_ks}: need at least one k >= 1")
        if self.batch_size < 1:
            raise InputError(f"Illegal batch_size {self.batch_size}: must be >= 1")


@dataclass(frozen=True)
class PairsScores:
    method: str  # "index" or "random-init"
    queries: int
    recall: dict[int, float]  # k -> recall@k
    mean_ap: float


@dataclass(frozen=True)
class PairsEvalResult:
    config: PairsEvalConfig
    root: Path
    files: int
    pairs: int  # pairs scored
    embedded: int  # queries read from disk (not in the index)
    missing: Missing  # matches not in the index, and queries that could not be found or read
    methods: tuple[PairsScores, ...]


@dataclass(frozen=True)
class _Query:
    name: str
    own_id: int | None  # the indexed file, or None: read from `path`
    path: Path
    matches: tuple[str, ...]


def evaluate_pairs(cfg: PairsEvalConfig) -> PairsEvalResult:
    """Score the pairs file `cfg.pairs` on `cfg.index`. InputError for a malformed file, or when no pair is
    left to score (every match or query missing)."""
    pairs = read_pairs(Path(cfg.pairs))
    index = SearchIndex.open(Path(cfg.index))
    queries, missing = _resolve(index, pairs, Path(cfg.pairs).parent)
    if not queries:
        raise InputError(f"{cfg.pairs}: none of its {len(pairs)} pairs names a query and a match that can be used")
    methods = [score_pairs(index, queries, _embedder(index, cfg), cfg, "index")]
    if cfg.compare:
        from retrieval.evaluate.baseline import random_init_index

        with random_init_index(index, cfg.device, cfg.progress) as random_dir:
            random_index = SearchIndex.open(random_dir)
            methods.append(score_pairs(random_index, queries, _embedder(random_index, cfg), cfg, "random-init"))
    n_pairs = sum(len(q.matches) for q in queries)
    embedded = sum(q.own_id is None for q in queries)
    return PairsEvalResult(cfg, index.root, len(index), n_pairs, embedded, missing, tuple(methods))


def _embedder(index: SearchIndex, cfg: PairsEvalConfig) -> Callable[[], Embedder]:
    def load() -> Embedder:
        from retrieval.embed import Embedder

        embedder = Embedder.load(Path(index.manifest.encoder_path), cfg.device)
        index.check_encoder(embedder)
        return embedder

    return load


def _resolve(index: SearchIndex, pairs: tuple[tuple[str, str], ...], base: Path) -> tuple[list[_Query], Missing]:
    by_query: dict[str, list[str]] = {}
    missing: list[str] = []
    for q, m in pairs:
        if index.id_for_path(m) is None:
            missing.append(m)
        elif m not in by_query.setdefault(q, []):
            by_query[q].append(m)
    queries = []
    for name, matches in by_query.items():
        if not matches:
            continue
        own = index.id_for_path(name)
        path = index.root / name
        if own is None and not path.is_file():
            path = base / name
            if not path.is_file():
                missing.append(name)
                continue
        queries.append(_Query(name, own, path, tuple(matches)))
    return queries, Missing.of(missing)


def score_pairs(
    index: SearchIndex, queries: list[_Query], embedder: Callable[[], Embedder], cfg: PairsEvalConfig, method: str
) -> PairsScores:
    """recall@k and mAP of `queries` on `index` (a match this index lacks counts as never found)."""
    X = index.vectors  # (N, D)
    vectors = _query_vectors(index, queries, embedder, cfg.batch_size)  # (Q, D), NaN rows: unreadable
    ranks = []
    for q, v in zip(queries, vectors, strict=True):
        ids = [index.id_for_path(m) for m in q.matches]
        if np.isnan(v).any():
            ranks.append(np.full(len(ids), np.inf))
            continue
        own = index.id_for_path(q.name)
        found = exact_ranks(X @ v, [i for i in ids if i is not None], () if own is None else (own,))  # (R',)
        ranks.append(np.concatenate([found, np.full(ids.count(None), np.inf)]))
    recall = {k: float(recall_at_k(ranks, k).mean()) for k in cfg.recall_ks}
    return PairsScores(method, len(queries), recall, float(average_precision(ranks).mean()))


def _query_vectors(
    index: SearchIndex, queries: list[_Query], embedder: Callable[[], Embedder], batch_size: int
) -> np.ndarray:
    out = np.full((len(queries), index.dim), np.nan, dtype=np.float32)
    outside = []
    for row, q in enumerate(queries):
        own = index.id_for_path(q.name)
        if own is not None:
            out[row] = index.vectors[own]
        else:
            outside.append(row)
    if not outside:
        return out
    emb = embedder()
    for start in range(0, len(outside), batch_size):
        rows, images = [], []
        for row in outside[start : start + batch_size]:
            try:
                images.append(load_image(queries[row].path, min_side=emb.min_side))
                rows.append(row)
            except BadImageError as e:
                logger.warning("query not scored (counts as not found): %s", e)
        if images:
            out[rows] = emb.encode(images)
    return out
