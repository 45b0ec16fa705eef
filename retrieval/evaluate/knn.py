"""`retrieval eval knn`: category retrieval over an indexed labelled folder (label = first subfolder under
the root). Every labelled file is a query against all the others (leave one out), scored by what a searcher sees
(precision@10: the share of the first 10 results in the query's class), weighted kNN top-1 (the MoCo kNN monitor's
k and temperature), MAP@R and recall@k, overall and per class."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from plumbing.progress import Progress
from retrieval.errors import InputError
from retrieval.evaluate.metrics import (
    KNN_K,
    KNN_TEMPERATURE,
    exact_neighbours,
    knn_top1,
    map_at_r,
    precision_at_k,
    ranks_from_hits,
    recall_at_k,
)
from retrieval.searching.searcher import SearchIndex

logger = logging.getLogger(__name__)

_QUERY_BATCH = 1024


@dataclass(frozen=True)
class KnnEvalConfig:
    """`retrieval eval knn`: `k` neighbours vote exp(s / `temperature`) each; recall at each of `recall_ks`,
    precision (the share of the first k results in the query's class) at each of `precision_ks`.
    With `compare`, a random-init encoder's index of the same folder is scored too (`baseline`).

    Leave one out, a query's own class has one image fewer in the gallery than it has, so a k that reaches
    past the smallest class would tilt every vote against the query's class: k is cut to the smallest
    class (of two or more images) minus one (`KnnEvalResult.k_used`)."""

    index: Path
    k: int = KNN_K
    temperature: float = KNN_TEMPERATURE
    recall_ks: tuple[int, ...] = (1, 5, 10)
    precision_ks: tuple[int, ...] = (10,)
    compare: bool = False
    device: str = "auto"
    progress: Progress | None = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        if self.k < 1:
            raise InputError(f"Illegal k {self.k}: must be >= 1")
        if not self.temperature > 0:
            raise InputError(f"Illegal temperature {self.temperature}: must be > 0")
        if not self.recall_ks or min(self.recall_ks) < 1:
            raise InputError(f"Illegal recall_ks {self.recall_ks}: need at least one k >= 1")
        if not self.precision_ks or min(self.precision_ks) < 1:
            raise InputError(f"Illegal precision_ks {self.precision_ks}: need at least one k >= 1")


@dataclass(frozen=True)
class KnnFigures:
    queries: int
    knn_top1: float
    map_at_r: float
    recall: dict[int, float]  # k -> recall@k
    precision: dict[int, float] = field(default_factory=dict)  # k -> precision@k (the first page's share)


@dataclass(frozen=True)
class KnnScores:
    method: str  # "index" (the index's own encoder) or "random-init"
    overall: KnnFigures
    per_class: dict[str, KnnFigures]


@dataclass(frozen=True)
class KnnEvalResult:
    config: KnnEvalConfig
    root: Path
    files: int  # indexed files
    unlabelled: int  # indexed files directly under the root: no class, left out
    classes: tuple[str, ...]
    k_used: int  # neighbours that voted: cfg.k, or fewer on a folder with a small class
    methods: tuple[KnnScores, ...]


def folder_labels(paths: list[str], classes: tuple[str, ...] | None = None) -> tuple[np.ndarray, tuple[str, ...]]:
    """(N,) class ids from root-relative POSIX paths, label = first folder, and the sorted class names (or the
    given `classes`); -1 for a file directly under the root or in a folder not among `classes`."""
    names = [p.split("/", 1)[0] if "/" in p else None for p in paths]
    if classes is None:
        classes = tuple(sorted({n for n in names if n is not None}))
    ids = {c: i for i, c in enumerate(classes)}
    return np.array([ids.get(n, -1) if n is not None else -1 for n in names], dtype=np.int64), classes


def evaluate_knn(cfg: KnnEvalConfig) -> KnnEvalResult:
    """Score the index at `cfg.index` (and with `cfg.compare` a random-init baseline). InputError when the
    folder has no class subfolders or fewer than two classes with at least two images each."""
    index = SearchIndex.open(Path(cfg.index))
    labels, classes = folder_labels([r.path for r in index.records])
    if not classes:
        raise InputError(f"{index.root}: unlabelled folder: knn needs one subfolder per class under the root")
    counts = np.bincount(labels[labels >= 0], minlength=len(classes))
    if np.count_nonzero(counts >= 2) < 2:
        raise InputError(
            f"{index.root}: knn needs at least two classes (subfolders) with two or more indexed images each,"
            f" found {np.count_nonzero(counts >= 2)}"
        )
    k_used = min(cfg.k, int(counts[counts >= 2].min()) - 1)
    methods = [score_knn(index, labels, classes, cfg, "index", k_used)]
    if cfg.compare:
        from retrieval.evaluate.baseline import random_init_index

        with random_init_index(index, cfg.device, cfg.progress) as random_dir:
            random_index = SearchIndex.open(random_dir)
            random_labels, _ = folder_labels([r.path for r in random_index.records], classes)
            methods.append(score_knn(random_index, random_labels, classes, cfg, "random-init", k_used))
    n_unlabelled = int(np.count_nonzero(labels < 0))
    return KnnEvalResult(cfg, index.root, len(index), n_unlabelled, classes, k_used, tuple(methods))


def score_knn(
    index: SearchIndex, labels: np.ndarray, classes: tuple[str, ...], cfg: KnnEvalConfig, method: str, k: int
) -> KnnScores:
    """Leave-one-out figures of the labelled rows (labels >= 0) of `index`; a query whose class has no other
    image is left out (nothing to find)."""
    rows = np.flatnonzero(labels >= 0)  # gallery rows of the index
    y = labels[rows]  # (G,)
    x = index.vectors[rows]  # (G, D)
    counts = np.bincount(y, minlength=len(classes))
    queries = np.flatnonzero(counts[y] >= 2)  # positions in the gallery
    depth = max(k, int(counts.max()) - 1, max(cfg.recall_ks), max(cfg.precision_ks))
    top1, mapr = np.zeros(queries.size), np.zeros(queries.size)
    recall = {r: np.zeros(queries.size) for r in cfg.recall_ks}
    precision = {p: np.zeros(queries.size) for p in cfg.precision_ks}
    for start in range(0, queries.size, _QUERY_BATCH):
        q = queries[start : start + _QUERY_BATCH]
        D, I = exact_neighbours(x, x[q], depth, self_ids=q)  # noqa: E741  (B, depth)
        hits = y[I] == y[q][:, None]  # (B, depth)
        ranks = ranks_from_hits(hits, counts[y[q]] - 1)
        top1[start : start + q.size] = knn_top1(D, I, y, y[q], k, cfg.temperature)
        mapr[start : start + q.size] = map_at_r(ranks)
        for r in cfg.recall_ks:  # not `k`: that is the vote's neighbour count, used again by the next batch
            recall[r][start : start + q.size] = recall_at_k(ranks, r)
        for p in cfg.precision_ks:
            precision[p][start : start + q.size] = precision_at_k(hits, p)

    def figures(mask: np.ndarray) -> KnnFigures:
        n = int(mask.sum())
        mean = (lambda v: float(v[mask].mean())) if n else (lambda v: float("nan"))
        return KnnFigures(
            n,
            mean(top1),
            mean(mapr),
            {r: mean(v) for r, v in recall.items()},
            {p: mean(v) for p, v in precision.items()},
        )

    qy = y[queries]
    per_class = {c: figures(qy == i) for i, c in enumerate(classes)}
    return KnnScores(method, figures(np.ones(queries.size, dtype=bool)), per_class)
