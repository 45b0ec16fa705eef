"""The duplicate rule: which candidate pairs stand as duplicates, which only as similar, on what evidence.

A *duplicate* is the same capture or the same artwork after edits; *similar* is a different shot of one scene or
a different drawing of one subject or template (docs/ARCHITECTURE.md). No near pair is a duplicate on its score:
every one is checked against its pictures (`retrieval.dedup.verify.pair_reads`), only identical bytes skip that
(the exact stage of `retrieval.dedup.groups`). With s the pair's score and t the threshold:

    s >= t - ALIGN_BELOW   the crop alignment (>= MIN_ALIGNMENT, neither picture plain) or matched geometry
    s <  t - ALIGN_BELOW   only strong geometry (STRONG_INLIERS)

*Matched geometry* (`retrieval.dedup.verify.keypoints`): at least MIN_INLIERS keypoints, and at least MIN_SHARE of
the matches, agree on one similarity that maps at least MIN_CONTAINED of one picture's frame inside the other's (a
crop, a screenshot; not two frames of a burst), and the aligned overlap agrees (`keypoints.overlap`): at least
MIN_AGREEMENT of each picture's edges there land on the other's (in place and orientation), at most MAX_CONFLICT of
the overlap's cells with edges disagree, the inliers reach at least MIN_SPREAD of the cells with structure, and the
fit scales one picture onto the other by at most MAX_SCALE either way. Two simple drawings on one template (a white
page, a frame, a few strokes) agree on keypoints by chance, through the template; their strokes do not land on each
other. Two shots of one scene agree through a few of their matches only (parallax, motion).

A pair that is not a duplicate is *similar* when at least STRONG_INLIERS of its keypoints agree on one similarity
(within MAX_SCALE) that covers only part of a frame (two shots of one scene) or whose overlap disagrees (two
drawings on one template).

Pairs whose pictures cannot be read now (moved or damaged since indexing) are neither: nothing vouches for them.
Every constant was chosen on the tuning sources of bench/dedup/family.py and bench/dedup/drawings.py; the held-out
sources are reported beside them (docs/BENCHMARKS.md).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from retrieval.dedup.verify.pair_reads import GeometryCheck, GeometryEvidence, PairCheck, PairEvidence

log = logging.getLogger(__name__)

# candidates: every pair scoring >= t - VERIFY_BELOW (and every pair keypoint votes propose:
# `retrieval.dedup.candidates.feature_votes`) is checked
VERIFY_BELOW = 0.48
ALIGN_BELOW = 0.0
# under t - ALIGN_BELOW, of the pairs the score proposes only each file's LOW_PARTNERS best-scoring partners are
# checked (at most that many keypoint matches per file); the pairs keypoint votes propose are bounded there. 0:
# under the threshold only the pairs keypoint votes propose are checked (bench/dedup/family.py: 0, 3, 8 and 1000
# tie on the tuning sources; 0 did 0.022 better on the seed-0 folder of bench/dedup/quality.py).
LOW_PARTNERS = 0
MIN_ALIGNMENT = 0.87
# local-feature geometry: STRONG_INLIERS 12 and 15 tie on the tuning sources (8 lets many false pairs through); 15
# is the more cautious: a pair under the threshold is promoted on keypoints alone.
MIN_INLIERS = 8
MIN_CONTAINED = 0.9
STRONG_INLIERS = 15
# the aligned overlap (`keypoints.overlap`): MIN_AGREEMENT of each picture's edges land on the other's (same place,
# same orientation), at most MAX_CONFLICT of the overlap's cells disagree, and the fit scales one picture onto the
# other by at most MAX_SCALE either way (in pictures brought to one long side; two unrelated drawings of
# samples/clipart fit at scale 0.02 and 0.14 with 15 and 9 inliers). Chosen on two tuning sources: on samples/ (clip
# art) the template and other-drawing pairs that keypoints match have agreement <= 0.49 and conflict >= 0.63 (except
# two warning signs on one template: 0.83 and 0.17), the true pairs agreement >= 0.53 and conflict <= 0.29; on the
# tuning folder of bench/dedup/family.py (bench/results/dedup_rule.md) every stricter value costs recall, and of the
# settings that keep the samples' pairs apart (MIN_AGREEMENT 0.4-0.5, MAX_CONFLICT 0.5-0.6) 0.4 and 0.6 are the
# tuning-best (F1 0.902; 0.926 with no overlap check, which groups the samples' template pairs). MIN_SPREAD (inliers
# over the cells with structure) and OVERLAP_INLIERS (a fit with that many inliers skips the edge checks) stay off:
# neither helped on the tuning folder without letting a sample pair through.
MIN_AGREEMENT = 0.4
MAX_CONFLICT = 0.6
MIN_SPREAD = 0.0
# a copy shares most of its matched keypoints with its original; two shots of one scene (a stereo pair, the next frame
# of a video, another viewpoint) or a repeated pattern (a chessboard) agree on one similarity through a few of them:
# at least MIN_SHARE of the matches that pass the ratio test must be inliers. Chosen on the tuning sources: on the
# family's tuning folder 0, 0.1 and 0.15 tie (F1 0.902), 0.2 gives 0.892, 0.25 0.887, 0.4 0.862; on the tuning
# drawings 0.25 would remove 6 of 35 false groups. 0.15 costs nothing there and keeps 5 of the 9 real different shots
# of bench/dedup/shots.py (held out) from being grouped (docs/BENCHMARKS.md).
MIN_SHARE = 0.15
MAX_SCALE = 6.0
OVERLAP_INLIERS = 10**9


def candidate_floor(threshold: float, verify: bool) -> float:
    """The lowest score a pair can have and still be reported: the threshold, or with verification the
    bottom of the verification band."""
    return threshold - VERIFY_BELOW if verify else threshold


Check = Literal["bytes", "score", "alignment", "keypoints", "none"]


@dataclass(frozen=True)
class Evidence:
    """What a pair was decided on. `check`: "bytes" (identical files), "score" (verification off: the score
    alone), "alignment" (the crop alignment of `retrieval.dedup.verify.align`), "keypoints" (matched geometry and
    its overlap), "none" (a similar pair: no check passed). The measurements that were made, None where not;
    `matches` (I, 4): the inlier keypoints (xa, ya, xb, yb) in each picture scaled to FEATURE_SIDE on its long
    side (`keypoints.picture_features`); on a group member, a is the group's keeper."""

    check: Check
    alignment: float | None = None
    plain: bool | None = None
    inliers: int | None = None
    contained: float | None = None
    agreement: float | None = None
    spread: float | None = None
    conflict: float | None = None
    scale: float | None = None
    matches: np.ndarray | None = field(default=None, compare=False, repr=False)


BYTES = Evidence("bytes")
SCORE = Evidence("score")


@dataclass(frozen=True)
class Verdicts:
    """Per candidate edge (E,): the pair, its score, whether it stands as a duplicate or as similar, and its
    evidence (`evidence(e)`)."""

    src: np.ndarray
    dst: np.ndarray
    score: np.ndarray
    duplicate: np.ndarray
    similar: np.ndarray
    alignment: np.ndarray  # (E,) float32, NaN where not made or unreadable
    plain: np.ndarray  # (E,) bool
    geometry: GeometryEvidence  # (E,) arrays, inliers 0 where not asked
    aligned: np.ndarray  # (E,) bool: a duplicate on its alignment

    def evidence(self, e: int) -> Evidence:
        def num(x: float) -> float | None:
            return None if np.isnan(x) else float(x)

        g = self.geometry
        asked = bool(g.asked[e])
        check: Check = "alignment" if self.aligned[e] else "keypoints" if self.duplicate[e] else "none"
        return Evidence(
            check,
            alignment=num(float(self.alignment[e])),
            plain=bool(self.plain[e]),
            inliers=int(g.inliers[e]) if asked else None,
            contained=float(g.contained[e]) if asked else None,
            agreement=num(float(g.agreement[e])) if asked else None,
            spread=num(float(g.spread[e])) if asked else None,
            conflict=num(float(g.conflict[e])) if asked else None,  # type: ignore[index]
            scale=num(float(g.scale[e])) if asked else None,  # type: ignore[index]
            matches=g.points[e] if asked else None,
        )


def _best_partners(src: np.ndarray, dst: np.ndarray, score: np.ndarray, m: int) -> np.ndarray:
    """(E,) bool: the pair is among the m best-scoring pairs of its src or of its dst."""
    keep = np.zeros(score.size, dtype=bool)
    for end in (src, dst):
        order = np.lexsort((-score, end))  # by file, best first
        e = end[order]
        first = np.r_[0, np.flatnonzero(e[1:] != e[:-1]) + 1]  # (F,) start of each file's run
        rank = np.arange(e.size) - np.repeat(first, np.diff(np.r_[first, e.size]))  # (E,) place in its run
        keep[order[rank < m]] = True
    return keep


def overlap_agrees(g: GeometryEvidence) -> np.ndarray:
    """(E,) the aligned overlap agrees (unmeasured counts as agreeing: a check that reports no overlap)."""
    agreement_ok = np.isnan(g.agreement) | (g.agreement >= MIN_AGREEMENT)
    spread_ok = np.isnan(g.spread) | (g.spread >= MIN_SPREAD)
    conflict_ok = np.isnan(g.conflict) | (g.conflict <= MAX_CONFLICT)  # type: ignore[operator]
    many = g.inliers >= OVERLAP_INLIERS
    return (many | (agreement_ok & spread_ok & conflict_ok)) & scale_ok(g)


def scale_ok(g: GeometryEvidence) -> np.ndarray:
    """(E,) the fit scales one picture onto the other by at most MAX_SCALE either way (unknown counts as within)."""
    with np.errstate(invalid="ignore"):
        return np.isnan(g.scale) | ((g.scale <= MAX_SCALE) & (g.scale >= 1 / MAX_SCALE))  # type: ignore[operator]


def matched_geometry(g: GeometryEvidence, inliers: int) -> np.ndarray:
    """(E,) at least `inliers` keypoints, and at least MIN_SHARE of the matches (unknown counts as enough), agree on
    one similarity, it contains one frame in the other, and the overlap it makes agrees."""
    with np.errstate(invalid="ignore"):
        shared = np.isnan(g.share) | (g.share >= MIN_SHARE)  # type: ignore[arg-type, operator]
    return (g.contained >= MIN_CONTAINED) & (g.inliers >= inliers) & shared & overlap_agrees(g)


def decide(
    src: np.ndarray,
    dst: np.ndarray,
    score: np.ndarray,
    threshold: float,
    verify: PairCheck,
    geometry: GeometryCheck | None,
    voted: np.ndarray | None = None,
) -> Verdicts:
    """The rule above over the candidate edges (E,). `voted` (E,) marks the pairs keypoint votes proposed
    (`retrieval.dedup.candidates.feature_votes`), which are checked whatever their score."""
    voted = np.zeros(score.size, dtype=bool) if voted is None else voted
    low = score < threshold - ALIGN_BELOW  # (E,) decided by local features alone
    by_score = low & ~voted
    if by_score.any():  # the files' best partners only: the cost stays a few pairs per file
        low[by_score] = _best_partners(src[by_score], dst[by_score], score[by_score], LOW_PARTNERS)
        out = (score < threshold - ALIGN_BELOW) & ~low
        src, dst, score, low = src[~out], dst[~out], score[~out], low[~out]
    log.info("verifying %d candidate pairs (reads their files; --no-verify skips this)", score.size)
    alignment = np.full(score.size, np.nan, dtype=np.float32)  # (E,)
    plain = np.zeros(score.size, dtype=bool)  # (E,)
    if (~low).any():
        evidence = verify(src[~low], dst[~low])
        if not isinstance(evidence, PairEvidence):  # a plain alignment check
            evidence = PairEvidence(np.asarray(evidence, dtype=np.float32), np.zeros(int((~low).sum()), dtype=bool))
        alignment[~low], plain[~low] = evidence.alignment, evidence.plain
    unread = ~low & np.isnan(alignment)
    aligned = ~low & ~plain & (alignment >= MIN_ALIGNMENT)
    asked = ~aligned & ~unread
    geo = GeometryEvidence.none(score.size)
    if geometry is not None and asked.any():
        geo = geo.filled(asked, GeometryEvidence.of(geometry(src[asked], dst[asked]), int(asked.sum())))
    unread |= geo.inliers < 0
    matched = matched_geometry(geo, MIN_INLIERS) & ~low
    strong = matched_geometry(geo, STRONG_INLIERS) & low
    duplicate = (aligned | matched | strong) & ~unread
    similar = ~duplicate & ~unread & (geo.inliers >= STRONG_INLIERS) & scale_ok(geo)
    log.info(
        "verified %d pairs: %d duplicates (%d on alignment, %d on local features), %d similar, %d with a plain picture",
        int((~unread).sum()),
        int(duplicate.sum()),
        int(aligned.sum()),
        int((duplicate & ~aligned).sum()),
        int(similar.sum()),
        int(plain.sum()),
    )
    if unread.any():
        log.warning("%d candidate pairs not verified (a file unreadable): not grouped", int(unread.sum()))
    return Verdicts(src, dst, score, duplicate, similar, alignment, plain, geo, aligned & ~unread)
