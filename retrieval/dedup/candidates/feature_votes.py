"""Candidate pairs from local features: pictures that share many keypoint descriptors.

A copy that is a strong crop, a screenshot in app chrome or carries two or three edits can score far under
the threshold on the global descriptor, below any candidate floor, while most of its keypoints still sit
on the original's (on the tuning sources of bench/dedup/family.py the local-feature geometry of 87% of the
planted copies matches their original, and a sixth of those score under the floor). So keypoints also
propose pairs:

Every picture's ORB descriptors (`retrieval.dedup.verify.keypoints`, at most VOTE_FEATURES of them) go into
one binary FAISS index, searched for each descriptor's VOTE_NEIGHBOURS nearest within VOTE_DISTANCE bits;
each descriptor votes once for every other picture among them. A picture's VOTE_PARTNERS most-voted
partners with at least MIN_VOTES votes become candidate pairs, decided by local-feature geometry like a
pair far under the threshold (`retrieval.dedup.groups`: strong inliers, one frame inside the other).

Cost: memory for the descriptors, 32 bytes each plus the index's ids (at most MAX_DESCRIPTORS in all: a
folder with more pictures gets fewer descriptors per picture, down to MIN_FEATURES, and above that no
keypoint candidates, logged); the index is exact (brute-force Hamming) up to FLAT_UP_TO descriptors, an
inverted file over Hamming k-means cells beyond, whose search grows as n^1.5 (bench/dedup/feature_votes_scale.py).
Votes are counted per picture, in batches of pictures, so the vote table never outgrows one batch.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

import numpy as np

from retrieval.dedup.verify.keypoints import MIN_KEYPOINTS, Features

logger = logging.getLogger(__name__)

VOTE_FEATURES = 1000  # descriptors per picture that vote (ORB's strongest first): all of them
MIN_FEATURES = 32  # fewer per picture than this (a huge folder): no keypoint candidates
MAX_DESCRIPTORS = 2_000_000  # descriptors in the vote index at most (64 MB, 80 MB more for owners and ids)
VOTE_NEIGHBOURS = 4  # nearest descriptors each one looks up
VOTE_DISTANCE = 64  # Hamming bits (of 256) within which a neighbour votes
MIN_VOTES = 8  # votes a partner needs (geometry needs at least this many matches anyway)
VOTE_PARTNERS = 3  # most-voted partners of each picture that become candidates
FLAT_UP_TO = 20_000  # descriptors searched exactly; above, an inverted file
CELLS_PER_SQRT = 1  # inverted file: sqrt(n) cells, trained on TRAIN_PER_CELL descriptors each
TRAIN_PER_CELL = 40
KMEANS_ITERATIONS = 10
NPROBE = 8
BATCH_DESCRIPTORS = 65_536  # descriptors searched per batch (whole pictures)


def vote_pairs(
    features: Callable[[int], Features | None], ids: Sequence[int], *, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """(src, dst) record ids, src < dst: the pairs of `ids` that keypoint votes propose (see the module doc).
    `features(id)` gives each picture's keypoints (None: unreadable; it proposes nothing)."""
    empty = np.empty(0, dtype=np.int64)
    owners, descriptors = _descriptors(features, ids)
    if owners.size == 0:
        return empty, empty
    index = _binary_index(descriptors, seed)
    src: list[np.ndarray] = []
    dst: list[np.ndarray] = []
    bounds = np.r_[0, np.flatnonzero(owners[1:] != owners[:-1]) + 1, owners.size]  # each picture's run
    start = 0
    while start < bounds.size - 1:
        end = start + 1  # whole pictures, about BATCH_DESCRIPTORS descriptors
        while end < bounds.size - 1 and bounds[end + 1] - bounds[start] <= BATCH_DESCRIPTORS:
            end += 1
        lo, hi = int(bounds[start]), int(bounds[end])
        a, b = _partners(owners[lo:hi], owners, *index.search(descriptors[lo:hi], VOTE_NEIGHBOURS))
        src.append(a)
        dst.append(b)
        start = end
    a, b = np.concatenate(src), np.concatenate(dst)
    pairs = np.unique(np.stack([np.minimum(a, b), np.maximum(a, b)]), axis=1)  # (2, P)
    logger.info("keypoint votes: %d candidate pairs among %d pictures", pairs.shape[1], np.unique(owners).size)
    return pairs[0], pairs[1]


def voting_share(pictures: int) -> int:
    """Descriptors each of `pictures` pictures votes with: VOTE_FEATURES, fewer in a folder so large that
    they would pass MAX_DESCRIPTORS, 0 (no keypoint candidates) below MIN_FEATURES."""
    per = min(VOTE_FEATURES, MAX_DESCRIPTORS // max(1, pictures))
    return per if per >= MIN_FEATURES else 0


def _descriptors(features: Callable[[int], Features | None], ids: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """(owners (M,) int64, descriptors (M, 32) uint8) of the pictures with enough keypoints, grouped by owner."""
    per = voting_share(len(ids))
    if per == 0:
        logger.warning(
            "no keypoint candidates: %d pictures would vote with fewer than %d descriptors each", len(ids), MIN_FEATURES
        )
        return np.empty(0, dtype=np.int64), np.empty((0, 32), dtype=np.uint8)
    feats = [(int(i), f) for i in ids if (f := features(int(i))) is not None and len(f.xy) >= MIN_KEYPOINTS]
    if not feats:
        return np.empty(0, dtype=np.int64), np.empty((0, 32), dtype=np.uint8)
    owners = np.concatenate([np.full(min(per, len(f.xy)), i, dtype=np.int64) for i, f in feats])
    descriptors = np.concatenate([f.descriptors[:per] for _, f in feats])
    return owners, np.ascontiguousarray(descriptors, dtype=np.uint8)


def _binary_index(descriptors: np.ndarray, seed: int):  # noqa: ANN202  (a faiss.IndexBinary)
    import faiss

    n, bits = descriptors.shape[0], 8 * descriptors.shape[1]
    if n <= FLAT_UP_TO:
        index = faiss.IndexBinaryFlat(bits)
    else:
        cells = max(1, int(CELLS_PER_SQRT * np.sqrt(n)))
        index = faiss.IndexBinaryIVF(faiss.IndexBinaryFlat(bits), bits, cells)
        index.cp.seed = seed
        index.cp.niter = KMEANS_ITERATIONS
        rng = np.random.default_rng(seed)
        sample = descriptors[rng.choice(n, size=min(n, TRAIN_PER_CELL * cells), replace=False)]
        index.train(sample)
        index.nprobe = NPROBE
    index.add(descriptors)
    return index


def _partners(
    query_owner: np.ndarray, owners: np.ndarray, distances: np.ndarray, neighbours: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """(src, dst): each querying picture's VOTE_PARTNERS most-voted partners with >= MIN_VOTES votes."""
    q = np.repeat(np.arange(query_owner.size), neighbours.shape[1])  # (B*K,) query descriptor
    hit = neighbours.ravel()
    ok = (hit >= 0) & (distances.ravel() <= VOTE_DISTANCE)
    q, other = q[ok], owners[hit[ok]]
    me = query_owner[q]
    ok = other != me
    # one vote per querying descriptor and partner picture
    key = np.unique(np.stack([q[ok], other[ok]]), axis=1)  # (2, V)
    a, b = query_owner[key[0]], key[1]
    pair, votes = np.unique(np.stack([a, b]), axis=1, return_counts=True)  # (2, P), (P,)
    enough = votes >= MIN_VOTES
    pair, votes = pair[:, enough], votes[enough]
    order = np.lexsort((-votes, pair[0]))  # by picture, most votes first
    a, b = pair[0][order], pair[1][order]
    first = np.r_[0, np.flatnonzero(a[1:] != a[:-1]) + 1]
    rank = np.arange(a.size) - np.repeat(first, np.diff(np.r_[first, a.size]))
    top = rank < VOTE_PARTNERS
    return a[top], b[top]
