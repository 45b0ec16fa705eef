"""The score a person reads for a search hit, and its band in words.

A raw cosine says little on its own: with a small encoder unrelated pictures can sit at 0.94. Search shows
the score dedup uses (`retrieval.dedup.candidates.near_pairs.normalised_scores`): the cosine placed between
the typical close neighbour of the two pictures (score 0) and an identical picture (score 1). A picture's
*background* is its cosine to its r-th nearest other picture in the index (r = dedup's `BACKGROUND_RANK`;
exact copies and the picture itself do not count). A query's background comes from its own result list the
same way, so an indexed file searched for scores as dedup would score its pairs.

Bands, on that score (calibrated on the bundled samples, `python -m bench.search.score_bands`, and on the
dedup threshold benchmark of the held-out seed-1 folder, bench/results/dedup_threshold.md):
    same picture  >= 0.96   the same image, at most resized or recompressed
    near copy     >= 0.28   an edited copy (crop, border, grey, caption...): dedup's default threshold
    similar       >= 0      closer than a typical neighbour
    unrelated     <  0
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from retrieval.dedup.candidates.near_pairs import normalised_scores
from retrieval.dedup.groups import BACKGROUND_RANK
from retrieval.dedup.threshold import SCORE_PRESETS

IDENTICAL = 1e-5  # a hit within this of cosine 1 is the query's own picture: not part of its background

SAME_PICTURE = 0.96
NEAR_COPY = SCORE_PRESETS["default"]  # dedup's default: a pair above it is grouped as a duplicate
SIMILAR = 0.0  # as close as a typical neighbour
BANDS: tuple[tuple[str, float], ...] = (
    ("same picture", SAME_PICTURE),
    ("near copy", NEAR_COPY),
    ("similar", SIMILAR),
    ("unrelated", -np.inf),
)


def band(score: float) -> str:
    """The band of a normalised score: "same picture", "near copy", "similar" or "unrelated" (also for NaN)."""
    for name, floor in BANDS:
        if score >= floor:
            return name
    return BANDS[-1][0]


def rank_background(cosines: Sequence[float], groups: Sequence[object], rank: int) -> float:
    """The cosine of the `rank`-th nearest distinct neighbour in one result list (best first): entries of a
    group already counted (exact copies share a group: their content hash) are skipped; 0 when the list has
    fewer (as dedup does)."""
    seen: set[object] = set()
    for c, g in zip(cosines, groups, strict=True):
        if g in seen:
            continue
        seen.add(g)
        if len(seen) == rank:
            return float(c)
    return 0.0


def scores(cosines: np.ndarray, query_backgrounds: np.ndarray, hit_backgrounds: np.ndarray) -> np.ndarray:
    """Normalised scores of hits: dedup's `normalised_scores` with the query's background on one side and the
    hit's on the other, element by element."""
    return normalised_scores(cosines, query_backgrounds, hit_backgrounds)


__all__ = ["BACKGROUND_RANK", "BANDS", "band", "rank_background", "scores"]
