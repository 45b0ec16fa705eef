"""What `find_groups` verification reads from the pictures of a candidate pair, and where it reads it from.

Two checks, each a function of (src, dst) id arrays:
- `verify` -> `PairEvidence`: the crop alignment of the two canonical thumbnails (`retrieval.dedup.verify.align`)
  and whether either picture is plain: nearly blank (a white wallpaper, an empty clip-art page) or a simple
  drawing (shapes of one colour on another), which its thumbnail shows as two grey levels or fewer
  covering PLAIN_SHARE of it. Two plain pictures line up in grey levels and edges by their shapes alone
  (a circle on one colour and a circle on another), so a pair with a plain picture needs local-feature
  geometry. Made for every candidate pair the score does not already rule out.
- `geometry` -> (inliers, contained) of local features (`retrieval.dedup.verify.keypoints`), made only for the
  pairs whose decision needs it (see `retrieval.dedup.groups`).

`folder_checks` builds both for the files of an index, each picture read once per run and its thumbnail
and keypoints kept in the index folder for the next (`retrieval.dedup.verify.cache`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from plumbing.progress import Progress

logger = logging.getLogger(__name__)

PLAIN_BINS = 16  # grey-level histogram bins of a thumbnail
PLAIN_SHARE = 0.9  # a thumbnail whose two fullest bins hold this share of its pixels is plain
# (chosen on the tuning sources of bench/dedup/family.py: 97% of the simple drawings and every nearly blank
# picture there, 4% of the clip art, 8-11% of the photos, most of them flat wallpapers)


@dataclass(frozen=True)
class PairEvidence:
    """Per candidate pair: alignment (E,) float32, NaN where a picture could not be read; plain (E,) bool,
    True where either picture is plain."""

    alignment: np.ndarray
    plain: np.ndarray


@dataclass(frozen=True)
class GeometryEvidence:
    """Per candidate pair, from local features (`retrieval.dedup.verify.keypoints`): inliers (E,) int32, -1 where a
    picture could not be read; contained (E,) float32; agreement and spread (E,) float32 of the aligned overlap
    (`keypoints.Overlap`), NaN where not measured; points: each pair's inliers (I, 4) or None; asked (E,) bool:
    whether the pair was matched at all."""

    inliers: np.ndarray
    contained: np.ndarray
    agreement: np.ndarray
    spread: np.ndarray
    points: list[np.ndarray | None]
    asked: np.ndarray
    scale: np.ndarray | None = None  # (E,) float32: how much the fit enlarges one picture onto the other, NaN unknown
    conflict: np.ndarray | None = None  # (E,) float32: share of the overlap's cells that disagree, NaN unknown
    share: np.ndarray | None = None  # (E,) float32: inliers / keypoint matches (ratio test passed), NaN unknown

    def __post_init__(self) -> None:
        for name in ("scale", "conflict", "share"):
            if getattr(self, name) is None:
                object.__setattr__(self, name, np.full(self.inliers.shape, np.nan, dtype=np.float32))

    @classmethod
    def none(cls, n: int) -> GeometryEvidence:
        """n pairs not matched."""
        nan = np.full(n, np.nan, dtype=np.float32)
        return cls(np.zeros(n, np.int32), np.zeros(n, np.float32), nan, nan.copy(), [None] * n, np.zeros(n, bool))

    @classmethod
    def of(cls, got: GeometryEvidence | tuple[np.ndarray, np.ndarray], n: int) -> GeometryEvidence:
        """A check's answer: the evidence, or a plain (inliers, contained) pair (the overlap not measured)."""
        if isinstance(got, GeometryEvidence):
            return got
        inliers, contained = got
        nan = np.full(n, np.nan, dtype=np.float32)
        return cls(
            np.asarray(inliers, dtype=np.int32).reshape(n),
            np.asarray(contained, dtype=np.float32).reshape(n),
            nan,
            nan.copy(),
            [None] * n,
            np.ones(n, dtype=bool),
        )

    def filled(self, where: np.ndarray, part: GeometryEvidence) -> GeometryEvidence:
        """A copy with the pairs at `where` (E,) bool taken from `part` (one per True, in order)."""
        out = GeometryEvidence(
            self.inliers.copy(),
            self.contained.copy(),
            self.agreement.copy(),
            self.spread.copy(),
            list(self.points),
            self.asked.copy(),
            self.scale.copy(),  # type: ignore[union-attr]
            self.conflict.copy(),  # type: ignore[union-attr]
            self.share.copy(),  # type: ignore[union-attr]
        )
        idx = np.flatnonzero(where)
        out.scale[idx], out.conflict[idx] = part.scale, part.conflict  # type: ignore[index]
        out.share[idx] = part.share  # type: ignore[index]
        out.inliers[idx], out.contained[idx] = part.inliers, part.contained
        out.agreement[idx], out.spread[idx], out.asked[idx] = part.agreement, part.spread, part.asked
        for e, pts in zip(idx.tolist(), part.points, strict=True):
            out.points[e] = pts
        return out


PairCheck = Callable[[np.ndarray, np.ndarray], "PairEvidence | np.ndarray"]  # (src, dst) ids -> evidence
# (src, dst) ids -> GeometryEvidence, or a plain (inliers, contained) pair of (E,) arrays
GeometryCheck = Callable[[np.ndarray, np.ndarray], "GeometryEvidence | tuple[np.ndarray, np.ndarray]"]
_READ_CHUNK = 2048  # pictures whose keypoints are read, cached and trimmed at a time (keypoint votes)
PartnerSource = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]  # ids -> (src, dst) pairs proposed among them


def is_plain(thumb: np.ndarray) -> bool:
    """Nearly blank or a simple drawing: two grey levels or fewer cover PLAIN_SHARE of the thumbnail."""
    counts = np.bincount(np.asarray(thumb, dtype=np.uint8).ravel() // (256 // PLAIN_BINS), minlength=PLAIN_BINS)
    return float(np.sort(counts)[-2:].sum()) >= PLAIN_SHARE * thumb.size


def thumbnail_evidence(
    thumbs: Callable[[int], np.ndarray | None], src: np.ndarray, dst: np.ndarray, progress: Progress | None = None
) -> PairEvidence:
    """Alignment and plainness of each pair from the thumbnails `thumbs(id)` (None: unreadable)."""
    from retrieval.dedup.verify.align import alignments

    memo: dict[int, np.ndarray | None] = {}

    def thumb(i: int) -> np.ndarray | None:
        if i not in memo:
            memo[i] = thumbs(i)
        return memo[i]

    alignment = alignments(thumb, src, dst, progress=progress)
    plain_of = {i: t is not None and is_plain(t) for i, t in memo.items()}
    plain = [plain_of.get(int(a), False) or plain_of.get(int(b), False) for a, b in zip(src, dst, strict=True)]
    return PairEvidence(alignment=alignment, plain=np.array(plain, dtype=bool).reshape(-1))


def geometry_evidence(got: Sequence[object | None]) -> GeometryEvidence:
    """`keypoints.Geometry` per pair (None: a picture unreadable) as arrays."""
    n = len(got)
    inliers = np.array([-1 if g is None else g.inliers for g in got], dtype=np.int32).reshape(n)  # type: ignore[attr-defined]
    contained = np.array([0.0 if g is None else g.contained for g in got], dtype=np.float32).reshape(n)  # type: ignore[attr-defined]
    agreement = np.array([np.nan if g is None else g.overlap.agreement for g in got], dtype=np.float32).reshape(n)  # type: ignore[attr-defined]
    spread = np.array([np.nan if g is None else g.overlap.spread for g in got], dtype=np.float32).reshape(n)  # type: ignore[attr-defined]
    points = [None if g is None else g.points for g in got]  # type: ignore[attr-defined]
    scale = np.array([np.nan if g is None else g.overlap.scale for g in got], dtype=np.float32).reshape(n)  # type: ignore[attr-defined]
    conflict = np.array([np.nan if g is None else g.overlap.conflict for g in got], dtype=np.float32).reshape(n)  # type: ignore[attr-defined]
    share = np.array([np.nan if g is None or not g.matches else g.inliers / g.matches for g in got], np.float32)  # type: ignore[attr-defined]
    return GeometryEvidence(
        inliers, contained, agreement, spread, points, np.ones(n, dtype=bool), scale, conflict, share.reshape(n)
    )


def feature_geometry(features: Callable[[int], object | None], src: np.ndarray, dst: np.ndarray) -> GeometryEvidence:
    """The geometry of each pair from `features(id)` (`keypoints.geometries`)."""
    from retrieval.dedup.verify.keypoints import geometries

    return geometry_evidence(geometries(features, src, dst))  # type: ignore[arg-type]


@dataclass
class FolderChecks:
    """`verify` and `geometry` for the files root / paths[id], with their caches; `close()` when done."""

    verify: Callable[[np.ndarray, np.ndarray], PairEvidence]
    geometry: GeometryCheck | None
    partners: PartnerSource | None  # with geometry: pairs proposed by keypoint votes
    close: Callable[[], None]


def folder_checks(
    root: Path, paths: Sequence[str], hashes: Sequence[str], cache_path: Path, *, local: bool, progress: Progress | None
) -> FolderChecks:
    """The checks of `retrieval dedup` over an indexed folder; with `local`, local-feature geometry too."""
    from retrieval.dedup.verify.align import folder_thumbnails
    from retrieval.dedup.verify.cache import ThumbnailCache, cached_loads

    thumb_cache = ThumbnailCache(cache_path)
    load_thumb = folder_thumbnails(root, paths)
    caches: list = [thumb_cache]

    def verify(src: np.ndarray, dst: np.ndarray) -> PairEvidence:
        ids = np.unique(np.concatenate([src, dst])).tolist()
        thumb, save = cached_loads(load_thumb, hashes, thumb_cache, ids)
        out = thumbnail_evidence(thumb, src, dst, progress=progress)
        save()
        return out

    geometry = partners = None
    if local:
        from retrieval.dedup.verify.keypoints import FeatureCache, folder_features

        feature_cache = FeatureCache(cache_path)
        caches.append(feature_cache)
        load_features = folder_features(root, paths)

        known: dict[tuple[int, int], object | None] = {}  # (low id, high id) -> keypoints.Geometry

        def geometry(src: np.ndarray, dst: np.ndarray) -> GeometryEvidence:
            keys = [(min(a, b), max(a, b)) for a, b in zip(src.tolist(), dst.tolist(), strict=True)]
            todo = [k for k in dict.fromkeys(keys) if k not in known]  # each pair matched once per run
            if todo:
                from retrieval.dedup.verify.keypoints import geometries

                s, d = np.array([a for a, _ in todo]), np.array([b for _, b in todo])
                feats, save = cached_loads(load_features, hashes, feature_cache, np.unique(np.r_[s, d]).tolist())
                logger.info("matching local features of %d pairs", s.size)
                got = geometries(feats, s, d)  # type: ignore[arg-type]
                save()
                known.update(zip(todo, got, strict=True))
            out = geometry_evidence([known[k] for k in keys])
            for e, (a, b) in enumerate(zip(src.tolist(), dst.tolist(), strict=True)):
                if a > b and out.points[e] is not None:  # matched as (b, a): the points in the order asked
                    out.points[e] = out.points[e][:, [2, 3, 0, 1]]
            return out

        def partners(ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            from retrieval.dedup.candidates.feature_votes import vote_pairs, voting_share
            from retrieval.dedup.verify.align import read_each

            per = voting_share(ids.size)
            if per == 0:  # too many pictures: vote_pairs says so
                return vote_pairs(lambda i: None, ids.tolist())
            kept: dict[int, object | None] = {}  # only the voting keypoints, so memory stays bounded
            for start in range(0, ids.size, _READ_CHUNK):
                chunk = ids[start : start + _READ_CHUNK].tolist()
                feats, save = cached_loads(load_features, hashes, feature_cache, chunk)
                got = read_each(feats, chunk, progress=progress, stage="reading keypoints", done=start, total=ids.size)
                for i, f in got.items():
                    kept[i] = None if f is None else f.head(per)  # type: ignore[attr-defined]
                save()
            return vote_pairs(kept.get, ids.tolist())

    def close() -> None:
        for c in caches:
            c.close()

    return FolderChecks(verify=verify, geometry=geometry, partners=partners, close=close)
