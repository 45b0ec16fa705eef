"""What `find_groups` verification reads from the pictures of a candidate pair, and where it reads it from.

Two checks, each a function of (src, dst) id arrays:
- `verify` -> `PairEvidence`: the crop alignment of the two canonical thumbnails (`retrieval.dedup.verify`)
  and whether either picture is nearly blank (its thumbnail's grey levels spread less than NEARLY_BLANK:
  a white wallpaper, an empty clip-art page; such a picture aligns with any other such picture by its faint
  marks, so its pairs need geometric agreement). Made for every candidate pair.
- `geometry` -> (inliers, contained) of local features (`retrieval.dedup.local_features`), made only for the
  pairs whose decision needs it (see `retrieval.dedup.groups`).

`folder_checks` builds both for the files of an index, each picture read once per run and its thumbnail
and keypoints kept in the index folder for the next (`retrieval.dedup.verify_cache`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

logger = logging.getLogger(__name__)

NEARLY_BLANK = 0.03  # grey-level standard deviation (0..1) of a canonical thumbnail under which it is nearly blank


@dataclass(frozen=True)
class PairEvidence:
    """Per candidate pair: alignment (E,) float32, NaN where a picture could not be read; blank (E,) bool,
    True where either picture is nearly blank."""

    alignment: np.ndarray
    blank: np.ndarray


PairCheck = Callable[[np.ndarray, np.ndarray], "PairEvidence | np.ndarray"]  # (src, dst) ids -> evidence
GeometryCheck = Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]  # -> inliers, contained (E,)


def is_nearly_blank(thumb: np.ndarray) -> bool:
    return float(np.asarray(thumb, dtype=np.float32).std()) / 255.0 < NEARLY_BLANK


def thumbnail_evidence(
    thumbs: Callable[[int], np.ndarray | None], src: np.ndarray, dst: np.ndarray, progress: bool = False
) -> PairEvidence:
    """Alignment and blankness of each pair from the thumbnails `thumbs(id)` (None: unreadable)."""
    from retrieval.dedup.verify import alignments

    memo: dict[int, np.ndarray | None] = {}

    def thumb(i: int) -> np.ndarray | None:
        if i not in memo:
            memo[i] = thumbs(i)
        return memo[i]

    alignment = alignments(thumb, src, dst, progress=progress)
    blank_of = {i: t is not None and is_nearly_blank(t) for i, t in memo.items()}
    blank = np.array(
        [blank_of.get(int(a), False) or blank_of.get(int(b), False) for a, b in zip(src, dst, strict=True)], bool
    )
    return PairEvidence(alignment=alignment, blank=blank.reshape(-1))


def feature_geometry(
    features: Callable[[int], object | None], src: np.ndarray, dst: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """(inliers (E,) int32, -1 where a picture could not be read; contained (E,) float32) from `features(id)`."""
    from retrieval.dedup.local_features import geometries

    got = geometries(features, src, dst)  # type: ignore[arg-type]
    inliers = np.array([-1 if g is None else g.inliers for g in got], dtype=np.int32)
    contained = np.array([0.0 if g is None else g.contained for g in got], dtype=np.float32)
    return inliers, contained


@dataclass
class FolderChecks:
    """`verify` and `geometry` for the files root / paths[id], with their caches; `close()` when done."""

    verify: Callable[[np.ndarray, np.ndarray], PairEvidence]
    geometry: GeometryCheck | None
    close: Callable[[], None]


def folder_checks(
    root: Path, paths: Sequence[str], hashes: Sequence[str], cache_path: Path, *, local: bool, progress: bool
) -> FolderChecks:
    """The checks of `retrieval dedup` over an indexed folder; with `local`, local-feature geometry too."""
    from retrieval.dedup.verify import folder_thumbnails
    from retrieval.dedup.verify_cache import ThumbnailCache, cached_loads

    thumb_cache = ThumbnailCache(cache_path)
    load_thumb = folder_thumbnails(root, paths)
    caches: list = [thumb_cache]

    def verify(src: np.ndarray, dst: np.ndarray) -> PairEvidence:
        ids = np.unique(np.concatenate([src, dst])).tolist()
        thumb, save = cached_loads(load_thumb, hashes, thumb_cache, ids)
        out = thumbnail_evidence(thumb, src, dst, progress=progress)
        save()
        return out

    geometry = None
    if local:
        from retrieval.dedup.local_features import FeatureCache, folder_features

        feature_cache = FeatureCache(cache_path)
        caches.append(feature_cache)
        load_features = folder_features(root, paths)

        def geometry(src: np.ndarray, dst: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            ids = np.unique(np.concatenate([src, dst])).tolist()
            feats, save = cached_loads(load_features, hashes, feature_cache, ids)
            logger.info("matching local features of %d pairs", src.size)
            out = feature_geometry(feats, src, dst)
            save()
            return out

    def close() -> None:
        for c in caches:
            c.close()

    return FolderChecks(verify=verify, geometry=geometry, close=close)
