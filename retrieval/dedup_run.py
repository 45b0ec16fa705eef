"""`retrieval dedup` / `retrieval undo`: duplicate groups over a built index, and safe moves (retrieval.moves)."""

from __future__ import annotations

import datetime as _dt
import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from retrieval.dedup import (
    BACKGROUND_RANK,
    DEFAULT_KEEPER_KEYS,
    THRESHOLD_PRESETS,
    Group,
    KeeperRule,
    calibration_histogram,
    find_groups,
    normalised_scores,
    resolve_threshold,
)
from retrieval.errors import InputError
from retrieval.index import HNSW_EF_SEARCH, apply_search_params, searcher
from retrieval.moves import MovePlan, MoveReport, UndoReport, apply_moves, plan_moves, undo_moves
from retrieval.near_pairs import search_width
from retrieval.search import SearchIndex

logger = logging.getLogger(__name__)

CALIBRATION_BINS = 20
UNDO_LOG_PREFIX = "undo-"
DEDUP_PROBES = 1000  # probe queries used to tune an approximate index's search parameter for dedup
# Share of probes whose neighbour at the threshold must come back. Per direction: find_groups searches a
# pair from both of its files, so a pair is missed only when neither finds the other; on planted pairs in
# 1M random 128-d vectors (IVF), 0.96 one way gave 0.99 either way (bench/dedup_scale.py).
DEDUP_PROBE_RECALL = 0.95
_DEDUP_BATCH = 4096


@dataclass(frozen=True)
class DedupConfig:
    """`retrieval dedup`: duplicate groups in the folder indexed at `index`; optionally move them aside.

    `threshold` is a preset name (see `dedup.THRESHOLD_PRESETS`; "exact" = identical bytes only) or a
    score in (-1, 1]: with `background_rank` r > 0 (the default) the cosine normalised against each
    image's r-th nearest neighbour (`dedup.normalised_scores`: 0 = as close as that, 1 = identical),
    with r = 0 the plain cosine similarity. `keeper` orders the keys that choose the copy to keep.
    Without `move_to` nothing is planned; with `move_to` and not `apply` the moves are planned (a dry
    run); with `apply` they are made and logged for `undo`. `calibrate` only measures each file's
    nearest-neighbour score (no groups, no moves). `k` neighbours are searched per file.
    """

    index: Path
    threshold: str = "default"
    keeper: tuple[str, ...] = DEFAULT_KEEPER_KEYS
    move_to: Path | None = None
    apply: bool = False
    calibrate: bool = False
    k: int = 32
    background_rank: int = BACKGROUND_RANK

    def __post_init__(self) -> None:
        object.__setattr__(self, "keeper", tuple(self.keeper))
        self.threshold_value  # noqa: B018  (validates: InputError for an unknown preset or a bad number)
        self.keeper_rule  # noqa: B018  (validates the keys)
        if self.k < 1:
            raise InputError(f"Illegal k {self.k}: must be >= 1")
        if self.background_rank < 0:
            raise InputError(f"Illegal background_rank {self.background_rank}: must be >= 0")
        if self.apply and self.move_to is None:
            raise InputError("apply needs a move-to folder (--move-to DIR): duplicates are moved, never deleted")
        if self.apply and self.calibrate:
            raise InputError("calibrate only measures similarities; it cannot be combined with apply")

    @property
    def threshold_value(self) -> float | None:
        """The score threshold; None means exact (same bytes) duplicates only."""
        return resolve_threshold(self.threshold)

    @property
    def keeper_rule(self) -> KeeperRule:
        return KeeperRule(self.keeper)


@dataclass(frozen=True)
class DedupResult:
    """What one `find_duplicates` run found (and did). Paths in `groups` are relative to `root`."""

    index: Path
    root: Path
    n_files: int
    threshold: float | None  # None: exact duplicates only
    background_rank: int  # 0: scores are cosines; r: normalised against the r-th nearest neighbour
    groups: tuple[Group, ...]
    histogram: tuple[tuple[float, float, int], ...] | None = None  # (low, high, count); with calibrate
    plan: MovePlan | None = None  # with move_to: the moves planned (a dry run unless `moved` is set)
    moved: MoveReport | None = None  # with apply: the moves made, and the undo log
    seconds: float = 0.0

    @property
    def n_duplicates(self) -> int:
        return sum(len(g.duplicates) for g in self.groups)

    @property
    def dry_run(self) -> bool:
        return self.moved is None


@dataclass(frozen=True)
class _Candidates:
    """What `dedup.find_groups` needs of an index (d, ntotal, search), for a searcher that lacks `d`
    (the exactly re-ranked IVF-PQ searcher)."""

    inner: Any
    d: int

    @property
    def ntotal(self) -> int:
        return int(self.inner.ntotal)

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        return self.inner.search(queries, k)


def _candidate_index(index: SearchIndex) -> Any | None:
    """The index dedup searches for neighbours: None for flat (dedup builds an exact one over one copy of
    each distinct file), else the loaded approximate index (IVF-PQ re-ranked exactly from the vectors)."""
    kind = index.manifest.kind
    if kind == "flat" or len(index) == 0:
        return None
    found = searcher(index.index, kind, index.manifest.params, index.vectors)
    return found if hasattr(found, "d") else _Candidates(found, index.dim)


def _without_self(D: np.ndarray, I: np.ndarray, first: int) -> tuple[np.ndarray, np.ndarray]:  # noqa: E741
    """Drop each query row's own id from its results (the farthest result where it did not come back)."""
    b, kk = I.shape
    own = I == np.arange(first, first + b)[:, None]  # (B, kk)
    own[~own.any(axis=1), -1] = True
    return D[~own].reshape(b, kk - 1), I[~own].reshape(b, kk - 1)


def _probe_recall(search: Any, probes: np.ndarray, targets: np.ndarray, k: int) -> float:
    """Share of probes whose target row is among the k results."""
    _, I = search.search(probes, k)  # noqa: E741  (P, k)
    return float((I == targets[:, None]).any(axis=1).mean())


def _finer(values: Sequence[int]) -> tuple[int, ...]:
    """Search-parameter values with a 1.5x step between doublings (16, 24, 32, 48, ...): the k-NN pass of
    dedup costs about linearly in efSearch / nprobe, so stopping at 24 rather than 32 saves a quarter."""
    out: list[int] = []
    for a, b in zip(values, values[1:], strict=False):
        out.append(a)
        if a < a + a // 2 < b:
            out.append(a + a // 2)
    return (*out, *values[-1:])


def tune_for_threshold(
    index: SearchIndex, threshold: float, k: int, background_rank: int = BACKGROUND_RANK, seed: int = 0
) -> dict[str, int]:
    """Set (in memory) the smallest efSearch / nprobe at which an approximate index finds the neighbours
    dedup needs; return the parameter chosen ({} for flat, whose search is exact).

    The index's own parameter is tuned for recall@10 of *any* neighbour; dedup only needs neighbours whose
    score reaches the threshold, often far fewer. Probes: sampled rows moved to exactly the cosine at which
    a pair scores `threshold` (for normalised scores: b + t (1 - b), b the row's background, measured with
    the index's own parameter), the hardest pair dedup must find; the parameter is the smallest whose results,
    as many as find_groups first asks for (`near_pairs.search_width`), hold the original row for
    DEDUP_PROBE_RECALL of the probes, at most the index's own (which
    is tuned for recall@10 >= 0.95; dedup never searches harder than search does).
    """
    kind, params = index.manifest.kind, index.manifest.params
    n = len(index)
    if kind not in ("hnsw", "ivf", "ivfpq") or n < 2:
        return {}
    rng = np.random.default_rng(seed)
    rows = np.sort(rng.choice(n, size=min(n, DEDUP_PROBES), replace=False))  # (P,)
    v = np.asarray(index.vectors[rows], dtype=np.float32)  # (P, D)
    search = searcher(index.index, kind, params, index.vectors)
    t = float(np.clip(threshold, -1.0, 1.0))
    cos = np.full(rows.size, t, dtype=np.float32)  # (P,) cosine of the probe to its row
    if background_rank > 0:
        kb = min(n, background_rank + 1)
        D, I = search.search(v, kb)  # noqa: E741  (P, kb) at the index's own (recall-tuned) parameter
        own = I == rows[:, None]
        own[~own.any(axis=1), -1] = True
        b = np.nan_to_num(D[~own].reshape(rows.size, kb - 1)[:, -1], nan=0.0, neginf=0.0)  # (P,)
        cos = np.clip(b + t * (1.0 - b), -1.0, 1.0).astype(np.float32)
    noise = rng.standard_normal(v.shape).astype(np.float32)  # (P, D)
    noise -= np.einsum("pd,pd->p", noise, v)[:, None] * v  # orthogonal to v
    noise /= np.maximum(np.linalg.norm(noise, axis=1, keepdims=True), 1e-12)
    probes = np.ascontiguousarray(cos[:, None] * v + np.sqrt(1.0 - cos**2)[:, None] * noise)  # (P, D)
    if kind == "hnsw":
        name, values = "efSearch", _finer(HNSW_EF_SEARCH)
    else:
        nlist = int(params.get("nlist", 1))
        name = "nprobe"
        values = _finer(tuple(p for p in (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024) if p < nlist) + (nlist,))
    own_value = int(params.get(name, values[-1]))
    kk = min(n, search_width(k, background_rank, t) + 1)  # as deep as find_groups searches first
    value, recall = own_value, -1.0
    for v_try in (*(x for x in values if x < own_value), own_value):
        apply_search_params(index.index, kind, {name: v_try})
        value, recall = v_try, _probe_recall(search, probes, rows, kk)
        if recall >= DEDUP_PROBE_RECALL:
            break
    (logger.info if recall >= DEDUP_PROBE_RECALL else logger.warning)(
        "dedup search: %s=%d finds %.1f%% of neighbours at score %.3f (median cosine %.3f; index default %s=%d)",
        name,
        value,
        100 * recall,
        t,
        float(np.median(cos)),
        name,
        own_value,
    )
    return {name: value}


def nearest_neighbour_scores(
    index: SearchIndex, background_rank: int = BACKGROUND_RANK, candidates: Any | None = None
) -> np.ndarray:
    """(N,) each file's best score to another file, as `find_groups` scores pairs: the cosine to its nearest
    neighbour, or with `background_rank` r > 0 the best normalised score (`dedup.normalised_scores`,
    backgrounds = cosine to the r-th nearest neighbour) among its r nearest neighbours. Unlike
    `find_groups`, exact copies count as neighbours here (they score 1). NaN for a lone file."""
    import faiss

    n, d = len(index), index.dim
    if n < 2:
        return np.full(n, np.nan, dtype=np.float32)
    xb = np.ascontiguousarray(index.vectors, dtype=np.float32)  # (N, D)
    if candidates is None:
        candidates = faiss.IndexFlatIP(d)
        candidates.add(xb)
    kk = min(n, max(1, background_rank) + 1)
    sims = np.full((n, kk - 1), np.nan, dtype=np.float32)  # (N, kk-1) cosines, nearest first
    ids = np.zeros((n, kk - 1), dtype=np.int64)  # (N, kk-1)
    for start in range(0, n, _DEDUP_BATCH):
        D, I = candidates.search(xb[start : start + _DEDUP_BATCH], kk)  # noqa: E741  (B, kk)
        D, I = _without_self(np.where(I >= 0, D, np.nan), I, start)  # noqa: E741  (B, kk-1)
        sims[start : start + D.shape[0]] = D
        ids[start : start + D.shape[0]] = np.maximum(I, 0)
    if background_rank == 0:
        return sims[:, 0]
    background = np.nan_to_num(sims[:, -1], nan=0.0)  # (N,)
    scores = normalised_scores(sims, background[:, None], background[ids])  # (N, kk-1)
    return np.nanmax(np.where(np.isnan(sims), -np.inf, scores), axis=1).astype(np.float32)


def find_duplicates(cfg: DedupConfig) -> DedupResult:
    """Exact and near duplicate groups of the indexed folder; with `cfg.move_to`, the moves planned or
    (with `cfg.apply`) made, logged in `move_to/undo-<time>.jsonl`. InputError for anything the person
    can fix (no such index, a bad threshold, a move-to folder inside the indexed one)."""
    t0 = time.perf_counter()
    threshold = cfg.threshold_value
    index = SearchIndex.open(Path(cfg.index))
    root = index.root
    candidates = _candidate_index(index)
    logger.info("%d files in %s (%s index)", len(index), cfg.index, index.manifest.kind)
    done = partial(
        DedupResult,
        index=Path(cfg.index),
        root=root,
        n_files=len(index),
        threshold=threshold,
        background_rank=cfg.background_rank,
    )

    if cfg.calibrate:
        loosest = min(t for t in THRESHOLD_PRESETS.values() if math.isfinite(t))
        tune_for_threshold(index, loosest if threshold is None else min(loosest, threshold), 1, cfg.background_rank)
        scores = nearest_neighbour_scores(index, cfg.background_rank, candidates)  # (N,)
        histogram = tuple(calibration_histogram(scores, bins=CALIBRATION_BINS))
        return done(groups=(), histogram=histogram, seconds=time.perf_counter() - t0)

    if threshold is not None:
        tune_for_threshold(index, threshold, cfg.k, cfg.background_rank)
    groups = tuple(
        find_groups(
            index.records,
            index.vectors,
            threshold,
            keeper=cfg.keeper_rule,
            k=cfg.k,
            index=candidates,
            root=root,
            background_rank=cfg.background_rank,
        )
    )
    plan: MovePlan | None = None
    moved: MoveReport | None = None
    if cfg.move_to is not None:
        plan = plan_moves(groups, root, Path(cfg.move_to))
        if cfg.apply:
            moved = apply_moves(plan, root, Path(cfg.move_to), _new_undo_log(Path(cfg.move_to)))
    return done(groups=groups, plan=plan, moved=moved, seconds=time.perf_counter() - t0)


def _new_undo_log(move_to: Path) -> Path:
    """`move_to/undo-<UTC time>.jsonl`, a name not taken yet (a suffix -2, -3 ... if needed)."""
    stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    path = move_to / f"{UNDO_LOG_PREFIX}{stamp}.jsonl"
    n = 1
    while path.exists():
        n += 1
        path = move_to / f"{UNDO_LOG_PREFIX}{stamp}-{n}.jsonl"
    return path


def undo(log: Path) -> UndoReport:
    """Put every file moved by `retrieval dedup --apply` back where it was, from its undo log."""
    return undo_moves(Path(log))


def threshold_marks(threshold: float | None) -> dict[str, float]:
    """The presets to mark on a calibration histogram, plus a custom threshold when one was given."""
    marks = {name: t for name, t in THRESHOLD_PRESETS.items() if math.isfinite(t)}
    if threshold is not None and threshold not in marks.values():
        marks["chosen"] = threshold
    return marks


__all__ = [
    "DedupConfig",
    "DedupResult",
    "find_duplicates",
    "undo",
    "threshold_marks",
    "tune_for_threshold",
    "nearest_neighbour_scores",
]
