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

import dataclasses
import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
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
RANSAC_SEED = 0
MATCH_THREADS = max(1, min(4, os.cpu_count() or 1))  # pairs matched at once
HOMOGRAPHY = False  # also fit a homography, kept when it explains more matches and is mild: no gain measured
# on bench/dedup/family.py (bench/dedup/family_grid.py), and it nearly doubles the cost of a pair
MAX_KEYSTONE = 0.5  # a kept homography's perspective changes the scale across the picture by at most 50%
# The aligned overlap (`overlap`): keypoints of two simple drawings on one template (a white page, a few strokes, a
# frame) agree on one similarity by chance, through what the drawings share. So after the fit, one picture's edges are
# mapped onto the other's (both kept at OVERLAP_SCALE of the keypoint picture, Canny edges at EDGE_LOW/EDGE_HIGH) and
# compared inside their overlap: the share of each picture's edges that lands within EDGE_REACH pixels of the other's
# (`Overlap.edges_a`, `edges_b`), and how many of the overlap's OVERLAP_GRID x OVERLAP_GRID cells that hold edges also
# hold an inlier (`spread`). A copy agrees almost everywhere; two drawings on one template agree on the template only.
OVERLAP_SCALE = 0.25  # the small picture kept for the overlap check: 80 px on the long side
ORIENTATIONS = 8  # gradient orientation bins (of 22.5 degrees); an edge lands on one within a bin of its own
EDGE_LOW, EDGE_HIGH = 50, 150
EDGE_REACH = 1  # pixels of the small picture
OVERLAP_GRID = 4
MIN_EDGE_PIXELS = 8  # fewer edge pixels than this in a cell (or the whole overlap): no structure there
# conflict: on a CONFLICT_GRID x CONFLICT_GRID grid, the share of the cells where both pictures have at least
# CELL_EDGE_PIXELS edge pixels and fewer than CELL_AGREEMENT of either's land on the other's: two drawings on one
# template disagree wherever both drew; an edit adds (a caption on a plain strip) or covers a small part
CONFLICT_GRID = 6
CELL_EDGE_PIXELS = 6
CELL_AGREEMENT = 0.4


@dataclass(frozen=True)
class Features:
    """Keypoints of one picture, strongest first: xy (K, 2) float32 at FEATURE_SIDE, descriptors (K, 32) uint8, the
    size, and whether they were found with the low threshold (a soft picture)."""

    xy: np.ndarray
    descriptors: np.ndarray
    width: int
    height: int
    soft: bool = False
    small: np.ndarray | None = field(default=None, compare=False)  # (h, w) uint8 grey at OVERLAP_SCALE: `overlap`

    def head(self, n: int) -> Features:
        """The n strongest keypoints."""
        return Features(self.xy[:n], self.descriptors[:n], self.width, self.height, self.soft, self.small)

    def to_bytes(self) -> bytes:
        sh, sw = (0, 0) if self.small is None else self.small.shape
        head = np.array([self.width, self.height, len(self.xy), self.soft, sh, sw], dtype=np.int32).tobytes()
        small = b"" if self.small is None else np.ascontiguousarray(self.small, dtype=np.uint8).tobytes()
        return head + self.xy.astype(np.float32).tobytes() + self.descriptors.astype(np.uint8).tobytes() + small

    @classmethod
    def from_bytes(cls, data: bytes) -> Features:
        if len(data) < 24:
            raise ValueError(f"feature record of {len(data)} bytes is too short")
        w, h, k, soft, sh, sw = np.frombuffer(data[:24], dtype=np.int32).tolist()
        if min(k, sh, sw) < 0 or len(data) != 24 + k * 8 + k * 32 + sh * sw:
            raise ValueError(f"feature record of {len(data)} bytes does not hold {k} keypoints")
        xy = np.frombuffer(data[24 : 24 + 8 * k], dtype=np.float32).reshape(k, 2).copy()
        d = np.frombuffer(data[24 + 8 * k : 24 + 40 * k], dtype=np.uint8).reshape(k, 32).copy()
        small = np.frombuffer(data[24 + 40 * k :], dtype=np.uint8).reshape(sh, sw).copy() if sh * sw else None
        return cls(xy, d, w, h, bool(soft), small)


@dataclass(frozen=True)
class Overlap:
    """What the two pictures show inside their overlap once one is mapped onto the other (`overlap`): the share of
    a's edges there that land on b's, and of b's on a's (1.0 where a picture has no edges there: it agrees with
    anything), and the share of the overlap's cells with edges that hold an inlier. NaN where it was not measured."""

    edges_a: float = float("nan")
    edges_b: float = float("nan")
    spread: float = float("nan")
    scale: float = float("nan")  # how much the fit enlarges a onto b (< 1: shrinks it)
    conflict: float = float("nan")  # share of the overlap's cells where both have edges that disagree

    @property
    def agreement(self) -> float:
        """The smaller of the two edge shares: both pictures' structure must agree, not only the template's."""
        return min(self.edges_a, self.edges_b)


@dataclass(frozen=True)
class Geometry:
    """How well two pictures' keypoints agree on one similarity, and what agrees in the overlap it makes."""

    inliers: int
    matches: int
    contained: float  # the larger share of one picture's frame that the transform maps inside the other's
    overlap: Overlap = Overlap()
    points: np.ndarray | None = field(default=None, compare=False)  # (I, 4) inliers xa, ya, xb, yb at FEATURE_SIDE


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
    tiny_size = (max(1, round(size[0] * OVERLAP_SCALE)), max(1, round(size[1] * OVERLAP_SCALE)))
    tiny = cv2.resize(small, tiny_size, interpolation=cv2.INTER_AREA)
    if descriptors is None or len(keypoints) == 0:
        return Features(np.zeros((0, 2), np.float32), np.zeros((0, 32), np.uint8), size[0], size[1], soft, tiny)
    order = np.argsort([-k.response for k in keypoints], kind="stable")  # strongest first (feature_votes)
    xy = np.array([keypoints[i].pt for i in order], dtype=np.float32).reshape(-1, 2)
    return Features(xy, descriptors[order], size[0], size[1], soft, tiny)


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
    cv2.setRNGSeed(RANSAC_SEED)  # this thread's generator: a pair's fit does not depend on the pairs before it
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
            h, inliers, mask = hp, int(mask_p.sum()), mask_p
    if (a.soft or b.soft) and inliers < SOFT_SHARE * i.size:  # faint corners agree by chance, never most of them
        return Geometry(0, int(i.size), 0.0)
    try:
        contained = max(_coverage(h, a, b), _coverage(np.linalg.inv(h), b, a))
    except np.linalg.LinAlgError:  # a degenerate fit (scale 0)
        contained = 0.0
    inlier = mask.ravel().astype(bool)  # (M,)
    points = np.concatenate([p[inlier], q[inlier]], axis=1)  # (I, 4)
    return Geometry(inliers, int(i.size), contained, overlap(h, a, b, points[:, 2:]), points)


def _edges(small: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(Canny edge mask (h, w) bool, each pixel's gradient orientation bin in 0..ORIENTATIONS-1, modulo 180 degrees:
    blind to which side is darker, so a negative or a grey version keeps its bins)."""
    import cv2

    f = small.astype(np.float32)
    angle = cv2.phase(cv2.Sobel(f, cv2.CV_32F, 1, 0), cv2.Sobel(f, cv2.CV_32F, 0, 1))  # (h, w) in [0, 2 pi)
    bins = (angle * (ORIENTATIONS / np.pi)).astype(np.int32) % ORIENTATIONS
    return cv2.Canny(small, EDGE_LOW, EDGE_HIGH) > 0, bins


def _near(edges: np.ndarray, bins: np.ndarray) -> np.ndarray:
    """(ORIENTATIONS, h, w) bool: within EDGE_REACH pixels of an edge whose orientation is within one bin of k."""
    import cv2

    ys, xs = np.nonzero(edges)
    per = np.zeros((ORIENTATIONS, *edges.shape), dtype=np.uint8)
    per[bins[ys, xs], ys, xs] = 1
    grow = np.ones((2 * EDGE_REACH + 1,) * 2, np.uint8)
    per = cv2.dilate(per.transpose(1, 2, 0), grow).reshape(*edges.shape, ORIENTATIONS).transpose(2, 0, 1) > 0
    return per | np.roll(per, 1, axis=0) | np.roll(per, -1, axis=0)


def _landed(edges: np.ndarray, bins: np.ndarray, near: np.ndarray) -> np.ndarray:
    """(h, w) bool: edge pixels that land on the other picture's edges of about their orientation."""
    return edges & np.take_along_axis(near, bins[None], axis=0)[0]


def overlap(h: np.ndarray, a: Features, b: Features, inliers_b: np.ndarray) -> Overlap:
    """The aligned overlap of two pictures, h mapping a onto b (at FEATURE_SIDE), compared at OVERLAP_SCALE in the
    frame of the one the fit enlarges (so neither loses its detail): edge shares both ways and the inliers' spread
    (`inliers_b`: (I, 2) the inliers in b). Unmeasured without the small pictures (an older feature record)."""
    import cv2

    if a.small is None or b.small is None or not np.isfinite(h).all():
        return Overlap()
    scale = float(np.sqrt(abs(np.linalg.det(h[:2, :2]))))
    if scale < 1.0:  # compare in a's frame: b is enlarged onto it
        try:
            h_inv = np.linalg.inv(h)
        except np.linalg.LinAlgError:
            return Overlap(0.0, 0.0, 0.0, scale)
        inliers_a = cv2.perspectiveTransform(np.asarray(inliers_b, np.float32).reshape(-1, 1, 2), h_inv).reshape(-1, 2)
        o = _overlap(h_inv, b, a, inliers_a)
        return Overlap(o.edges_b, o.edges_a, o.spread, scale, o.conflict)
    return dataclasses.replace(_overlap(h, a, b, inliers_b), scale=scale)


def _overlap(h: np.ndarray, a: Features, b: Features, inliers_b: np.ndarray) -> Overlap:
    import cv2

    s = np.diag([OVERLAP_SCALE, OVERLAP_SCALE, 1.0])
    hs = s @ h @ np.linalg.inv(s)  # (3, 3) a -> b at OVERLAP_SCALE
    bh, bw = b.small.shape  # type: ignore[union-attr]
    ea_all, bins_a = _edges(a.small)  # type: ignore[arg-type]
    eb_all, bins_b = _edges(b.small)  # type: ignore[arg-type]
    turn = round(float(np.arctan2(hs[1, 0], hs[0, 0])) * ORIENTATIONS / np.pi)  # the fit's rotation, in bins
    warp = partial(cv2.warpPerspective, M=hs, dsize=(bw, bh), flags=cv2.INTER_NEAREST)
    ea = warp(ea_all.astype(np.uint8)) > 0  # a's edges in b's frame
    ba = np.mod(warp(bins_a.astype(np.uint8)).astype(np.int32) + turn, ORIENTATIONS)
    inside = warp(np.ones_like(bins_a, dtype=np.uint8))
    inside = cv2.erode(inside, np.ones((3, 3), np.uint8)) > 0  # the overlap, less its rim (the frame's own edge)
    ea &= inside
    eb = eb_all & inside
    hit_a = _landed(ea, ba, _near(eb, bins_b))  # (bh, bw)
    hit_b = _landed(eb, bins_b, _near(ea, ba))
    na, nb = int(ea.sum()), int(eb.sum())
    # too few edges to compare: no evidence, unless the picture has none anywhere (a flat one: nothing to disagree)
    edges_a = float(hit_a.sum()) / na if na >= MIN_EDGE_PIXELS else float(ea_all.sum() < MIN_EDGE_PIXELS)
    edges_b = float(hit_b.sum()) / nb if nb >= MIN_EDGE_PIXELS else float(eb_all.sum() < MIN_EDGE_PIXELS)
    # spread: cells of b's frame (within the overlap) with edges, and which of them hold an inlier
    g = OVERLAP_GRID
    rows = np.minimum((np.arange(bh) * g) // bh, g - 1)
    cols = np.minimum((np.arange(bw) * g) // bw, g - 1)
    cell = rows[:, None] * g + cols[None, :]  # (bh, bw)
    structure = np.bincount(cell[ea | eb], minlength=g * g) >= MIN_EDGE_PIXELS
    xy = np.asarray(inliers_b, dtype=np.float64).reshape(-1, 2) * OVERLAP_SCALE
    ok = (xy[:, 0] >= 0) & (xy[:, 0] < bw) & (xy[:, 1] >= 0) & (xy[:, 1] < bh)
    hit = np.zeros(g * g, dtype=bool)
    hit[cell[xy[ok, 1].astype(int), xy[ok, 0].astype(int)]] = True
    spread = float((hit & structure).sum()) / structure.sum() if structure.any() else 1.0
    # conflict: cells of a finer grid where most of either picture's edges miss the other's
    g = CONFLICT_GRID
    rows = np.minimum((np.arange(bh) * g) // bh, g - 1)
    cols = np.minimum((np.arange(bw) * g) // bw, g - 1)
    cell = rows[:, None] * g + cols[None, :]  # (bh, bw)
    count = partial(np.bincount, minlength=g * g)
    a_n, b_n, a_hit, b_hit = count(cell[ea]), count(cell[eb]), count(cell[hit_a]), count(cell[hit_b])
    a_has, b_has = a_n >= CELL_EDGE_PIXELS, b_n >= CELL_EDGE_PIXELS
    a_off = a_has & (a_hit < CELL_AGREEMENT * a_n)
    b_off = b_has & (b_hit < CELL_AGREEMENT * b_n)
    some = a_has | b_has
    conflict = float((a_off | b_off).sum()) / some.sum() if some.any() else 0.0
    return Overlap(edges_a, edges_b, spread, conflict=conflict)


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
    f"{FAST_LOW}, soft flag), strongest first; grey at {OVERLAP_SCALE}"
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
