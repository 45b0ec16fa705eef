"""`retrieval dedup` / `retrieval undo`: duplicate groups over a built index, and safe moves (retrieval.dedup.moves)."""

from __future__ import annotations

import datetime as _dt
import logging
import time
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import numpy as np

from plumbing.progress import Progress
from retrieval.dedup.candidates.cell_join import (
    BACKGROUND_RECALL,
    PAIR_RECALL,
    KnnTable,
    choose_nprobe,
    self_join,
    train_cells,
)
from retrieval.dedup.candidates.near_pairs import SCORE_SLACK
from retrieval.dedup.groups import (
    BACKGROUND_RANK,
    NEIGHBOURS,
    Group,
    GroupingConfig,
    KeeperRule,
    PairChecks,
    calibration_histogram,
    find_grouping,
    normalised_scores,
)
from retrieval.dedup.moves import MovePlan, MoveReport, UndoReport, apply_moves, plan_moves, undo_moves
from retrieval.dedup.plan import index_identity, read_plan
from retrieval.dedup.threshold import DEFAULT_THRESHOLD, SCORE_PRESETS, Threshold, check_threshold
from retrieval.errors import InputError
from retrieval.searching.searcher import SearchIndex

logger = logging.getLogger(__name__)

CALIBRATION_BINS = 20
UNDO_LOG_PREFIX = "undo-"
_DEDUP_BATCH = 4096


@dataclass(frozen=True)
class DedupConfig:
    """`retrieval dedup`: duplicate groups in the folder indexed at `index`; optionally move them aside.

    `threshold` is a preset (`retrieval.dedup.threshold`; "exact" = identical bytes only) or a score in
    (-1, 1], parsed from the person's text by `Threshold.parse`: with `background_rank` r > 0 (the default)
    the cosine normalised against each image's r-th nearest neighbour (`dedup.normalised_scores`: 0 = as
    close as that, 1 = identical), with r = 0 the plain cosine similarity. `keeper` chooses the copy to
    keep (`KeeperRule.parse`). Without `move_to` nothing is planned; with `move_to` and not `apply` the
    moves are planned (a dry run); with `apply` they are made and logged for `undo`. `calibrate` only
    measures each file's nearest-neighbour score (no groups, no moves). `k` neighbours are searched per
    file. With `verify`, pairs scoring near the threshold are decided by whether their pictures line up
    (`retrieval.dedup.verify.align`; the files are read again for this, their thumbnails kept in the index folder
    for the next run: `retrieval.dedup.verify.cache`), see `dedup.find_groups`; with `local_features` also
    by ORB keypoints agreeing on one similarity (`retrieval.dedup.verify.keypoints`): the rule is
    `retrieval.dedup.verify.rule`. With `similar` (and `verify`), similar pictures (different shots of one scene,
    different drawings of one template) are listed too, as groups of their own that are never moved. With `plan`
    (a file `--format json` wrote, perhaps edited: `retrieval.dedup.plan`) nothing is searched: exactly the moves
    it lists are planned into `move_to`, once it has been checked against the index and the files.
    """

    index: Path
    threshold: Threshold = DEFAULT_THRESHOLD
    keeper: KeeperRule = KeeperRule()
    move_to: Path | None = None
    apply: bool = False
    calibrate: bool = False
    k: int = NEIGHBOURS
    background_rank: int = BACKGROUND_RANK
    verify: bool = True
    local_features: bool = True  # with verify: local-feature geometry too (`retrieval.dedup.verify.keypoints`)
    similar: bool = False  # with verify: similar groups too (`DedupResult.similar`)
    plan: Path | None = None  # a reviewed plan file to follow instead of searching (`retrieval.dedup.plan`)
    progress: Progress | None = field(default=None, compare=False, repr=False)  # verifying; the CLI shows bars

    def __post_init__(self) -> None:
        check_threshold(self.threshold)
        if not isinstance(self.keeper, KeeperRule):
            raise TypeError(f"keeper must be a KeeperRule (KeeperRule.parse(text)), got {self.keeper!r}")
        if self.k < 1:
            raise InputError(f"Illegal k {self.k}: must be >= 1")
        if self.background_rank < 0:
            raise InputError(f"Illegal background_rank {self.background_rank}: must be >= 0")
        if self.apply and self.move_to is None:
            raise InputError("apply needs a move-to folder (--move-to DIR): duplicates are moved, never deleted")
        if self.calibrate and self.move_to is not None:
            raise InputError("calibrate only measures similarities; run again without it to move duplicates")
        if self.plan is not None and self.move_to is None:
            raise InputError("--plan says what to move: give the folder to move it into (--move-to DIR)")
        if self.plan is not None and self.calibrate:
            raise InputError("--plan moves what it lists; --calibrate only measures: give one of them")
        if self.similar and not self.verify:
            raise InputError("similar pictures are told from duplicates by verification: drop --no-verify")


@dataclass(frozen=True)
class DedupResult:
    """What one `find_duplicates` run found (and did). Paths in `groups` are relative to `root`."""

    index: Path
    root: Path
    n_files: int
    threshold: float | None  # None: exact duplicates only
    background_rank: int  # 0: scores are cosines; r: normalised against the r-th nearest neighbour
    groups: tuple[Group, ...]
    similar: tuple[Group, ...] = ()  # with `DedupConfig.similar`: members kind "similar", never moved
    histogram: tuple[tuple[float, float, int], ...] | None = None  # (low, high, count); with calibrate
    plan: MovePlan | None = None  # with move_to: the moves planned (a dry run unless `moved` is set)
    moved: MoveReport | None = None  # with apply: the moves made, and the undo log
    seconds: float = 0.0
    identity: Mapping[str, str] | None = None  # the index searched, as a plan names it (`plan.index_identity`)

    @property
    def n_duplicates(self) -> int:
        return sum(len(g.duplicates) for g in self.groups)

    @property
    def dry_run(self) -> bool:
        return self.moved is None


def neighbour_table(
    index: SearchIndex,
    threshold: float,
    k: int,
    background_rank: int = BACKGROUND_RANK,
    *,
    every_file: bool = False,
    seed: int = 0,
) -> KnnTable | None:
    """What `find_groups` takes its neighbours from: None for a flat index (it searches exactly), else the
    k-NN self-join of the indexed vectors (`cell_join`), as wide as find_groups may ask for, with its
    nprobe tuned so the pairs at `threshold` are found (`cell_join.choose_nprobe`). It keeps only what
    find_groups reads: with plain cosines the neighbours at the threshold or above, with normalised scores
    (threshold >= 0) the neighbours as close as the background or closer (see `near_pairs`); with
    `every_file` (calibration) each file's nearest neighbours whatever their score.

    An approximate index answers one query at a time; dedup queries every indexed vector, which the join
    does as one matrix product per cell (bench/dedup/scale.py: 1M vectors)."""
    n = len(index)
    if index.manifest.kind == "flat" or n < 2:
        return None
    t0 = time.perf_counter()
    x = index.vectors
    cells = train_cells(x, seed=seed)
    nprobe, pair_recall, bg_recall = choose_nprobe(x, cells, threshold, background_rank, seed=seed)
    copies = max(Counter(r.content_hash for r in index.records).values()) - 1  # exact copies take slots
    width = min(n, max(k, background_rank) + 1 + min(copies, 4 * k))
    ok = pair_recall >= PAIR_RECALL and bg_recall >= BACKGROUND_RECALL
    (logger.info if ok else logger.warning)(
        "dedup neighbours: %d cells, nprobe %d finds %.1f%% of pairs at score %.3f and %.1f%% of background "
        "neighbours (tuned in %.1f s)",
        cells.nlist,
        nprobe,
        100 * pair_recall,
        threshold,
        100 * bg_recall,
        time.perf_counter() - t0,
    )
    floor_rank: int | None = None  # keep every row's full top-width list
    min_similarity = -np.inf
    if every_file or (background_rank > 0 and threshold >= 0):
        floor_rank = max(1, background_rank) + copies  # list position (0 = the file itself) of the last one read
    elif background_rank == 0:
        min_similarity = threshold - SCORE_SLACK  # plain cosines: only pairs at the threshold count
    table = self_join(x, width, cells, nprobe, floor_rank=floor_rank, min_similarity=min_similarity)
    logger.info("dedup neighbours: %d x %d table in %.1f s", n, width, time.perf_counter() - t0)
    return table


def _without_self(D: np.ndarray, I: np.ndarray, first: int) -> tuple[np.ndarray, np.ndarray]:  # noqa: E741
    """Drop each query row's own id from its results (the farthest result where it did not come back)."""
    b, kk = I.shape
    own = I == np.arange(first, first + b)[:, None]  # (B, kk)
    own[~own.any(axis=1), -1] = True
    return D[~own].reshape(b, kk - 1), I[~own].reshape(b, kk - 1)


def nearest_neighbour_scores(
    index: SearchIndex, background_rank: int = BACKGROUND_RANK, table: KnnTable | None = None
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
    exact = None
    if table is None:
        exact = faiss.IndexFlatIP(d)
        exact.add(xb)
    kk = min(n, max(1, background_rank) + 1)
    sims = np.full((n, kk - 1), np.nan, dtype=np.float32)  # (N, kk-1) cosines, nearest first
    ids = np.zeros((n, kk - 1), dtype=np.int64)  # (N, kk-1)
    for start in range(0, n, _DEDUP_BATCH):
        rows = np.arange(start, min(n, start + _DEDUP_BATCH))
        D, I = exact.search(xb[rows], kk) if exact is not None else table.search_rows(rows, kk)  # noqa: E741
        D, I = _without_self(np.where(I >= 0, D, np.nan), I, start)  # noqa: E741  (B, kk-1)
        sims[start : start + D.shape[0]] = D
        ids[start : start + D.shape[0]] = np.maximum(I, 0)
    if background_rank == 0:
        return sims[:, 0]
    background = np.nan_to_num(sims[:, -1], nan=0.0)  # (N,)
    scores = normalised_scores(sims, background[:, None], background[ids])  # (N, kk-1)
    return np.nanmax(np.where(np.isnan(sims), -np.inf, scores), axis=1).astype(np.float32)


def find_duplicates(cfg: DedupConfig, *, index: SearchIndex | None = None) -> DedupResult:
    """Exact and near duplicate groups of the indexed folder; with `cfg.move_to`, the moves planned or
    (with `cfg.apply`) made, logged in `move_to/undo-<time>.jsonl`. InputError for anything the person
    can fix (no such index, a bad threshold, a move-to folder inside the indexed one). `index` may be
    passed in to reuse one already open (the app); by default it is loaded from `cfg.index`."""
    t0 = time.perf_counter()
    threshold = cfg.threshold.score
    index = index if index is not None else SearchIndex.open(Path(cfg.index))
    root = index.root
    logger.info("%d files in %s (%s index)", len(index), cfg.index, index.manifest.kind)
    done = partial(
        DedupResult,
        index=Path(cfg.index),
        root=root,
        n_files=len(index),
        threshold=threshold,
        background_rank=cfg.background_rank,
        identity=index_identity(index),
    )

    if cfg.plan is not None and cfg.move_to is not None:
        reviewed = read_plan(Path(cfg.plan), index, Path(cfg.move_to))
        moved = apply_plan(reviewed.moves, root, Path(cfg.move_to)) if cfg.apply else None
        return done(
            threshold=reviewed.threshold,
            groups=reviewed.groups,
            plan=reviewed.moves,
            moved=moved,
            seconds=time.perf_counter() - t0,
        )

    if cfg.calibrate:
        loosest = min(SCORE_PRESETS.values())
        loosest = loosest if threshold is None else min(loosest, threshold)
        table = neighbour_table(index, loosest, 1, cfg.background_rank, every_file=True)
        scores = nearest_neighbour_scores(index, cfg.background_rank, table)  # (N,)
        histogram = tuple(calibration_histogram(scores, bins=CALIBRATION_BINS))
        return done(groups=(), histogram=histogram, seconds=time.perf_counter() - t0)

    checks = None
    if cfg.verify and threshold is not None:
        from retrieval.dedup.verify.cache import CACHE_NAME
        from retrieval.dedup.verify.pair_reads import folder_checks

        records = index.records  # records[id].id == id
        checks = folder_checks(
            root,
            [r.path for r in records],
            [r.content_hash for r in records],
            Path(cfg.index) / CACHE_NAME,
            local=cfg.local_features,
            progress=cfg.progress,
        )
    grouping = GroupingConfig(
        threshold, keeper=cfg.keeper, k=cfg.k, background_rank=cfg.background_rank, similar=cfg.similar
    )
    floor = grouping.floor(checks is not None)
    table = None if floor is None else neighbour_table(index, floor, cfg.k, cfg.background_rank)
    try:
        found = find_grouping(
            index.records,
            index.vectors,
            grouping,
            index=table,
            root=root,
            checks=None if checks is None else PairChecks(checks.verify, checks.geometry, checks.partners),
        )
    finally:
        if checks is not None:
            checks.close()
    groups = tuple(found.groups)
    plan: MovePlan | None = None
    moved: MoveReport | None = None
    if cfg.move_to is not None:
        plan = plan_moves(groups, root, Path(cfg.move_to))
        if cfg.apply:
            moved = apply_plan(plan, root, Path(cfg.move_to))
    return done(groups=groups, similar=tuple(found.similar), plan=plan, moved=moved, seconds=time.perf_counter() - t0)


def apply_plan(plan: MovePlan, root: Path, move_to: Path) -> MoveReport:
    """Make the planned moves (`moves.apply_moves`), logged in a new `move_to/undo-<time>.jsonl`."""
    return apply_moves(plan, root, move_to, _new_undo_log(move_to))


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
    marks = dict(SCORE_PRESETS)
    if threshold is not None and threshold not in marks.values():
        marks["chosen"] = threshold
    return marks


__all__ = [
    "DedupConfig",
    "DedupResult",
    "find_duplicates",
    "apply_plan",
    "undo",
    "threshold_marks",
    "neighbour_table",
    "nearest_neighbour_scores",
]
