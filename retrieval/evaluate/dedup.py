"""`retrieval eval dedup`: the duplicate groups `retrieval dedup` forms, scored pairwise against true groups.

At the chosen threshold the groups come from `dedup_run.find_duplicates`, exactly as `retrieval dedup`
makes them (verification included unless `verify` is off). The precision-recall curve and the best F1 sweep
the score threshold over `curve_thresholds` with the score alone (`dedup.find_groups` without
verification: verifying every pair the lowest threshold admits would read most of the folder again).
With `compare`, a random-init encoder's index of the same folder is scored the same way, and perceptual
hashing (`phash`) at its default distance and over a sweep of distances.

A truth file may list `similar` groups beside the duplicate `groups` (`truth.read_answers`): their pairs are not
duplicates, so grouping one counts against precision like any false pair; each method also reports how many of
them it grouped (`DedupScores.similar_grouped`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from plumbing.progress import Progress
from retrieval.dedup.groups import BACKGROUND_RANK, GroupingConfig, find_groups
from retrieval.dedup.run import DedupConfig, find_duplicates, neighbour_table
from retrieval.dedup.threshold import DEFAULT_THRESHOLD, Threshold, check_threshold
from retrieval.errors import InputError
from retrieval.evaluate.metrics import (
    CurvePoint,
    PairwiseScore,
    best_f1,
    pair_set,
    pairwise_prf,
    precision_recall_curve,
)
from retrieval.evaluate.phash import MAX_DISTANCE, hamming_pairs, hash_files
from retrieval.evaluate.truth import Missing, known_groups, read_answers
from retrieval.searching.searcher import SearchIndex

CURVE_THRESHOLDS = tuple(round(float(t), 2) for t in np.arange(-0.2, 1.0001, 0.04))  # normalised score
PHASH_DISTANCES = tuple(range(0, 33, 2))  # bits


@dataclass(frozen=True)
class DedupEvalConfig:
    """`retrieval eval dedup`: groups at `threshold` (a preset or a score: `Threshold.parse`, as
    `retrieval dedup --threshold`) against the true groups in `truth`; the curve over `curve_thresholds`;
    a PNG of it at `plot`."""

    index: Path
    truth: Path
    threshold: Threshold = DEFAULT_THRESHOLD
    verify: bool = True
    curve_thresholds: tuple[float, ...] = CURVE_THRESHOLDS
    phash_distance: int = MAX_DISTANCE
    phash_distances: tuple[int, ...] = PHASH_DISTANCES
    plot: Path | None = None
    compare: bool = False
    device: str = "auto"
    progress: Progress | None = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        check_threshold(self.threshold)
        if not self.curve_thresholds or not self.phash_distances:
            raise InputError("the curve needs at least one threshold and one PHash distance")


@dataclass(frozen=True)
class DedupScores:
    method: str  # "index", "random-init" or "phash"
    threshold: float | None  # the chosen one (None: exact copies only); for phash the distance in bits
    at_threshold: PairwiseScore
    best: CurvePoint
    curve: tuple[CurvePoint, ...]
    seconds: float
    similar_grouped: int = 0  # of the truth's similar pairs, how many the groups at the threshold hold


@dataclass(frozen=True)
class DedupEvalResult:
    config: DedupEvalConfig
    root: Path
    files: int
    true_groups: int  # truth groups with two or more indexed files
    missing: Missing  # truth files not in the index
    methods: tuple[DedupScores, ...]
    similar_pairs: int = 0  # the truth's similar pairs among indexed files (never counted as true pairs)


def evaluate_dedup(cfg: DedupEvalConfig) -> DedupEvalResult:
    """Score the index at `cfg.index` against `cfg.truth`; with `cfg.plot`, draw the curves there."""
    answers = read_answers(Path(cfg.truth))
    index = SearchIndex.open(Path(cfg.index))
    paths = {r.path for r in index.records}
    truth, missing = known_groups(answers.groups, paths.__contains__)
    if not truth:
        raise InputError(f"{cfg.truth}: no group has two or more files that are in the index ({missing.count} are not)")
    similar = similar_pairs(known_groups(answers.similar, paths.__contains__)[0], truth)
    methods = [score_dedup(Path(cfg.index), truth, cfg, "index", similar)]
    if cfg.compare:
        from retrieval.evaluate.baseline import random_init_index

        with random_init_index(index, cfg.device, cfg.progress) as random_dir:
            methods.append(score_dedup(random_dir, truth, cfg, "random-init", similar))
        methods.append(score_phash(index, truth, cfg, similar))
    if cfg.plot is not None:
        from retrieval.evaluate.plot import plot_pr_curves

        plot_pr_curves(methods, Path(cfg.plot))
    return DedupEvalResult(cfg, index.root, len(index), len(truth), missing, tuple(methods), len(similar))


def similar_pairs(similar: list[tuple[str, ...]], truth: list[tuple[str, ...]]) -> set[frozenset[str]]:
    """The pairs of the similar groups that are not duplicate pairs too (a similar group may hold a duplicate
    group's members)."""
    return pair_set(similar) - pair_set(truth)


def score_dedup(
    index_dir: Path,
    truth: list[tuple[str, ...]],
    cfg: DedupEvalConfig,
    method: str,
    similar: set[frozenset[str]] = frozenset(),  # type: ignore[assignment]
) -> DedupScores:
    t0 = time.perf_counter()
    run = find_duplicates(DedupConfig(index=index_dir, threshold=cfg.threshold, verify=cfg.verify))
    found = [[g.keep.path] + [d.record.path for d in g.duplicates] for g in run.groups]
    at = pairwise_prf(found, truth)
    curve = precision_recall_curve(groups_at_threshold(SearchIndex.open(index_dir), cfg), cfg.curve_thresholds, truth)
    seconds = time.perf_counter() - t0
    return DedupScores(method, run.threshold, at, best_f1(curve), tuple(curve), seconds, len(pair_set(found) & similar))


def groups_at_threshold(index: SearchIndex, cfg: DedupEvalConfig) -> Callable[[float], list[list[str]]]:
    """t -> the groups `retrieval dedup --threshold t --no-verify` forms, the neighbour search done once."""
    k = GroupingConfig.k
    table = neighbour_table(index, min(cfg.curve_thresholds), k, BACKGROUND_RANK)

    quiet = logging.getLogger(find_groups.__module__)  # one summary line per threshold is noise in a sweep

    def groups(t: float) -> list[list[str]]:
        level = quiet.level
        quiet.setLevel(max(level, logging.WARNING))
        try:
            found = find_groups(index.records, index.vectors, GroupingConfig(t, k=k), index=table, root=index.root)
        finally:
            quiet.setLevel(level)
        return [[g.keep.path] + [d.record.path for d in g.duplicates] for g in found]

    return groups


def score_phash(
    index: SearchIndex,
    truth: list[tuple[str, ...]],
    cfg: DedupEvalConfig,
    similar: set[frozenset[str]] = frozenset(),  # type: ignore[assignment]
) -> DedupScores:
    t0 = time.perf_counter()
    paths = [r.path for r in index.records]
    hashes, ok = hash_files(index.root, paths)
    widest = hamming_pairs(hashes, max(*cfg.phash_distances, cfg.phash_distance), ok)  # (P, 2)
    a, b = widest[:, 0], widest[:, 1]
    distance = np.unpackbits(hashes[a] ^ hashes[b], axis=1).sum(axis=1)  # (P,)

    def groups(d: float) -> list[list[str]]:
        keep = distance <= d
        return [[paths[i], paths[j]] for i, j in zip(a[keep], b[keep], strict=True)]

    curve = precision_recall_curve(groups, cfg.phash_distances, truth)
    found = groups(cfg.phash_distance)
    at = pairwise_prf(found, truth)
    seconds = time.perf_counter() - t0
    grouped = len(pair_set(found) & similar)
    return DedupScores("phash", float(cfg.phash_distance), at, best_f1(curve), tuple(curve), seconds, grouped)
