"""Geometric verification with local features: do two pictures share many keypoints that one similarity
(rotation, scale, shift) maps onto each other?

Each picture is decoded, turned grey and scaled to FEATURE_SIDE on its long side; ORB finds up to
N_FEATURES keypoints with binary descriptors (`picture_features`). A pair is matched both ways with
Lowe's ratio test (RATIO) and the matches are checked with RANSAC for a similarity
(`cv2.estimateAffinePartial2D`, inliers within REPROJECTION of FEATURE_SIDE). What survives is the
geometry (`Geometry`): the inliers, and how much of one picture's frame the similarity maps inside the
other's (`contained`: 1 when one picture is a crop of the other, or sits inside it as in a screenshot; about
0.6-0.85 for two frames of a burst, which share only part of their scene). `retrieval.dedup.groups` decides
what counts as a match. Rotation in the frame, strong crops, captions, stickers and a screenshot's chrome
keep many of a copy's keypoints in place; two different pictures keep almost none.

A soft picture (a gradient wallpaper, a blurred scene, a small drawing scaled up: fewer than FEW_KEYPOINTS corners
at FAST_THRESHOLD) is searched again at FAST_LOW, and its features are flagged `soft`. Faint corners of two
unrelated soft pictures pair up by chance, and out of a hundred such matches a dozen always fit some similarity;
a real copy's matches are mostly inliers. So a pair with a soft picture matches only when at least SOFT_SHARE
of its matches are inliers. A flat or nearly blank picture has too few keypoints (< MIN_KEYPOINTS) to match
anything.

Cost: ORB on a FEATURE_SIDE picture is a few milliseconds, done once per picture; a pair costs a
brute-force Hamming match of the two descriptor sets and one RANSAC (bench/dedup/family.py measures it).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from plumbing.errors import InputError
from retrieval.dedup.verify.cache import BlobCache

logger = logging.getLogger(__name__)

FEATURE_SIDE = 320  # long side the keypoints are found at
N_FEATURES = 1000  # ORB keypoints per picture at most
FAST_THRESHOLD = 10  # FAST corner threshold (grey levels): lower finds corners on soft gradients too
FAST_LOW = 3  # ... the threshold a soft picture (fewer than FEW_KEYPOINTS corners) is searched again with
FEW_KEYPOINTS = 300
SOFT_SHARE = 0.3  # a soft picture matches only when at least this share of its matches are inliers
# FAST_LOW, FEW_KEYPOINTS and SOFT_SHARE: chosen on the tuning sources of bench/dedup/family.py
# (bench/dedup/family_grid.py: the joint FAST_LOW x FEW_KEYPOINTS grid, SOFT_SHARE beside it)
MIN_KEYPOINTS = 12  # fewer keypoints than this: the picture is flat, it matches nothing
RATIO = 0.95  # Lowe's ratio test: best Hamming distance below this share of the second best
REPROJECTION = 0.02  # RANSAC inlier distance, as a share of FEATURE_SIDE
RANSAC_ITERATIONS = 500
MATCH_THREADS = max(1, min(4, os.cpu_count() or 1))  # pairs matched at once
HOMOGRAPHY = False  # also fit a homography, kept when it explains more matches and is mild: no gain measured
# on bench/dedup/family.py (bench/dedup/family_grid.py), and it nearly doubles the cost of a pair
MAX_KEYSTONE = 0.5  # a kept homography's perspective changes the scale across the picture by at most 50%


@dataclass(frozen=True)
class Features:
    """Keypoints of one picture, strongest first: xy (K, 2) float32 at FEATURE_SIDE, descriptors (K, 32) uint8, the
    size, and whether they were found with the low threshold (a soft picture)."""

    xy: np.ndarray
    descriptors: np.ndarray
    width: int
    height: int
    soft: bool = False

    def head(self, n: int) -> Features:
        """The n strongest keypoints."""
        return Features(self.xy[:n], self.descriptors[:n], self.width, self.height, self.soft)

    def to_bytes(self) -> bytes:
        head = np.array([self.width, self.height, len(self.xy), self.soft], dtype=np.int32).tobytes()
        return head + self.xy.astype(np.float32).tobytes() + self.descriptors.astype(np.uint8).tobytes()

    @classmethod
    def from_bytes(cls, data: bytes) -> Features:
        w, h, k, soft = np.frombuffer(data[:16], dtype=np.int32).tolist()
        if len(data) != 16 + k * 8 + k * 32:
            raise ValueError(f"feature record of {len(data)} bytes does not hold {k} keypoints")
        xy = np.frombuffer(data[16 : 16 + 8 * k], dtype=np.float32).reshape(k, 2).copy()
        d = np.frombuffer(data[16 + 8 * k :], dtype=np.uint8).reshape(k, 32).copy()
        return cls(xy, d, w, h, bool(soft))


@dataclass(frozen=True)
class Geometry:
    """How well two pictures' keypoints agree on one similarity."""

    inliers: int
    matches: int
    contained: float  # the larger share of one picture's frame that the transform maps inside the other's


NO_GEOMETRY = Geometry(0, 0, 0.0)


def picture_features(grey: np.ndarray) -> Features:
    """ORB keypoints of a (H, W) uint8 grey picture, found after scaling its long side to FEATURE_SIDE."""
    import cv2

    h, w = grey.shape
    f = FEATURE_SIDE / max(h, w)
    size = (max(1, round(w * f)), max(1, round(h * f)))
    small = cv2.resize(grey, size, interpolation=cv2.INTER_AREA if f < 1 else cv2.INTER_LINEAR)
    keypoints, descriptors = _orb(small, FAST_THRESHOLD)
    soft = len(keypoints) < FEW_KEYPOINTS
    if soft:  # its corners are faint: look again with a lower threshold
        keypoints, descriptors = _orb(small, FAST_LOW)
    if descriptors is None or len(keypoints) == 0:
        return Features(np.zeros((0, 2), np.float32), np.zeros((0, 32), np.uint8), size[0], size[1], soft)
    order = np.argsort([-k.response for k in keypoints], kind="stable")  # strongest first (feature_votes)
    xy = np.array([keypoints[i].pt for i in order], dtype=np.float32).reshape(-1, 2)
    return Features(xy, descriptors[order], size[0], size[1], soft)


def _orb(small: np.ndarray, fast: int) -> tuple[Sequence, np.ndarray | None]:
    import cv2

    orb = cv2.ORB_create(nfeatures=N_FEATURES, edgeThreshold=15, patchSize=15, fastThreshold=fast)
    return orb.detectAndCompute(small, None)


def _ratio_matches(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(i, j): a[i]'s nearest descriptor in b is b[j], by Hamming distance, and its distance is below RATIO times
    the second nearest's (Lowe's ratio test). Exact search (faiss, brute force)."""
    import faiss

    index = faiss.IndexBinaryFlat(8 * b.shape[1])
    index.add(np.ascontiguousarray(b))
    dist, nearest = index.search(np.ascontiguousarray(a), 2)  # (Na, 2)
    ok = (nearest[:, 1] >= 0) & (dist[:, 0] < RATIO * dist[:, 1])
    return np.flatnonzero(ok), nearest[ok, 0]


def _coverage(h: np.ndarray, a: Features, b: Features) -> float:
    """The share of picture a's frame that the homography h (a -> b) maps inside picture b's frame."""
    import cv2

    corners = np.array([[0, 0], [a.width, 0], [a.width, a.height], [0, a.height]], dtype=np.float32)
    projected = cv2.perspectiveTransform(corners[None], h)[0]  # (4, 2)
    area = abs(float(cv2.contourArea(projected)))
    if not np.isfinite(area) or area <= 0 or not cv2.isContourConvex(projected.astype(np.float32)):
        return 0.0
    frame = np.array([[0, 0], [b.width, 0], [b.width, b.height], [0, b.height]], dtype=np.float32)
    inside, _ = cv2.intersectConvexConvex(projected.astype(np.float32), frame)
    return float(inside) / area


def geometry(a: Features, b: Features) -> Geometry:
    """Ratio-test matches of a's and b's keypoints (kept when found both ways), then RANSAC for a similarity."""
    import cv2

    if len(a.xy) < MIN_KEYPOINTS or len(b.xy) < MIN_KEYPOINTS:
        return NO_GEOMETRY
    i, j = _ratio_matches(a.descriptors, b.descriptors)  # a -> b
    back_j, back_i = _ratio_matches(b.descriptors, a.descriptors)  # b -> a
    partner = np.full(len(b.xy), -1, dtype=np.int64)
    partner[back_j] = back_i
    both = partner[j] == i  # found both ways
    i, j = i[both], j[both]
    if i.size < 4:
        return Geometry(0, int(i.size), 0.0)
    p, q = a.xy[i], b.xy[j]  # (M, 2) each
    m, mask = cv2.estimateAffinePartial2D(
        p, q, method=cv2.RANSAC, ransacReprojThreshold=REPROJECTION * FEATURE_SIDE, maxIters=RANSAC_ITERATIONS
    )
    if m is None or mask is None:
        return Geometry(0, int(i.size), 0.0)
    h = np.vstack([m, [0.0, 0.0, 1.0]])  # (3, 3) the similarity a -> b
    inliers = int(mask.sum())
    if HOMOGRAPHY and i.size >= 8:  # a photo of a print or a screen: a keystone no similarity fits
        hp, mask_p = cv2.findHomography(
            p, q, cv2.RANSAC, ransacReprojThreshold=REPROJECTION * FEATURE_SIDE, maxIters=RANSAC_ITERATIONS
        )
        if hp is not None and mask_p is not None and int(mask_p.sum()) > inliers and _mild(hp, a):
            h, inliers = hp, int(mask_p.sum())
    if (a.soft or b.soft) and inliers < SOFT_SHARE * i.size:  # faint corners agree by chance, never most of them
        return Geometry(0, int(i.size), 0.0)
    try:
        contained = max(_coverage(h, a, b), _coverage(np.linalg.inv(h), b, a))
    except np.linalg.LinAlgError:  # a degenerate fit (scale 0)
        contained = 0.0
    return Geometry(inliers, int(i.size), contained)


def _mild(h: np.ndarray, a: Features) -> bool:
    """A homography whose perspective changes the scale across picture a by at most MAX_KEYSTONE."""
    w = h[2, 0] / h[2, 2] * a.width, h[2, 1] / h[2, 2] * a.height
    return bool(np.isfinite(h).all() and abs(w[0]) + abs(w[1]) <= MAX_KEYSTONE)


def geometries(features: Callable[[int], Features | None], src: np.ndarray, dst: np.ndarray) -> list[Geometry | None]:
    """Geometry of each pair (src[e], dst[e]); None where a picture could not be read. `features` is called
    once per id. Pairs are matched MATCH_THREADS at a time, each search on one thread: a descriptor search is
    too small for OpenMP's threads to pay (on 2 cores, 1 thread per search in 2 threads is 4x faster than 2)."""
    from concurrent.futures import ThreadPoolExecutor

    pairs = list(zip(np.asarray(src).tolist(), np.asarray(dst).tolist(), strict=True))
    feats = {i: features(int(i)) for i in dict.fromkeys(x for pair in pairs for x in pair)}

    def one(pair: tuple[int, int]) -> Geometry | None:
        import faiss

        faiss.omp_set_num_threads(1)  # this worker thread's searches only
        fa, fb = feats[pair[0]], feats[pair[1]]
        return None if fa is None or fb is None else geometry(fa, fb)

    with ThreadPoolExecutor(MATCH_THREADS) as pool:
        return list(pool.map(one, pairs))


# what `picture_features` makes
FEATURE_VERSION = (
    f"orb {N_FEATURES} at {FEATURE_SIDE}, edge 15, patch 15, fast {FAST_THRESHOLD} (under {FEW_KEYPOINTS} corners: "
    f"{FAST_LOW}, soft flag), strongest first"
)


def folder_features(root: Path, paths: Sequence[str]) -> Callable[[int], Features | None]:
    """id -> keypoints of the file root / paths[id], decoded on demand; None (logged) for a file that cannot be
    read now: its pairs are decided without local features."""
    from plumbing.images import load_image

    def features(i: int) -> Features | None:
        try:
            im = load_image(root / paths[i], min_side=FEATURE_SIDE)
        except InputError as e:
            logger.debug("no local features: %s", e)
            return None
        return picture_features(np.asarray(im.convert("L")))

    return features


class FeatureCache(BlobCache):
    """content hash -> `Features`, beside the thumbnails (`retrieval.dedup.verify.cache`)."""

    table = "features"

    def version(self) -> str:
        return FEATURE_VERSION

    def encode(self, item: Features) -> bytes:
        return item.to_bytes()

    def decode(self, data: bytes) -> Features | None:
        try:
            return Features.from_bytes(data)
        except ValueError:
            return None
