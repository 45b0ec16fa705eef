"""Perceptual hashing (PHash, Zauner 2010): the classic duplicate finder `retrieval eval dedup --compare`
scores beside the index's own groups.

The picture is taken in grey at 32 x 32, transformed by a 2-D DCT-II, and the 8 x 8 lowest frequencies
are compared with their median: 64 bits, one per coefficient above it. Two files are duplicates when their
hashes differ in at most `max_distance` bits (10 by default, as imagededup's PHash uses).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from plumbing.images import BadImageError, load_image

logger = logging.getLogger(__name__)

HASH_SIZE = 8  # bits per side: a 64-bit hash
IMAGE_SIZE = 32  # side the picture is resampled to before the DCT
MAX_DISTANCE = 10  # bits that may differ between duplicates
DECODE_SIDE = 64  # decoding size (JPEG draft mode): plenty for a 32-px resample


def _dct_matrix(n: int) -> np.ndarray:
    """C (n, n) with C @ x the unnormalised DCT-II of x: X_k = 2 sum_j x_j cos(pi k (2j + 1) / (2n))."""
    k, j = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")
    return 2.0 * np.cos(np.pi * k * (2 * j + 1) / (2 * n))


_DCT = _dct_matrix(IMAGE_SIZE)


def phash(image: Image.Image) -> np.ndarray:
    """(8,) uint8: the 64-bit perceptual hash, packed (first coefficient in the top bit)."""
    grey = np.asarray(image.convert("L").resize((IMAGE_SIZE, IMAGE_SIZE), Image.Resampling.LANCZOS), np.float64)
    coeffs = (_DCT @ grey @ _DCT.T)[:HASH_SIZE, :HASH_SIZE]  # (8, 8) lowest frequencies
    return np.packbits((coeffs > np.median(coeffs)).ravel())


def hash_files(root: Path, paths: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """(N, 8) uint8 hashes of root/paths[i], and (N,) bool: which files could be read (others hash to 0)."""
    hashes = np.zeros((len(paths), HASH_SIZE * HASH_SIZE // 8), dtype=np.uint8)
    ok = np.zeros(len(paths), dtype=bool)
    for i, p in enumerate(paths):
        try:
            hashes[i] = phash(load_image(Path(root) / p, min_side=DECODE_SIDE))
            ok[i] = True
        except BadImageError as e:
            logger.warning("phash: skipped %s", e)
    return hashes, ok


def hamming_pairs(hashes: np.ndarray, max_distance: int, ok: np.ndarray | None = None) -> np.ndarray:
    """(P, 2) int64 pairs i < j whose hashes (N, 8) differ in at most `max_distance` bits (FAISS binary range
    search); rows with ok[i] False take no part."""
    import faiss

    rows = np.flatnonzero(ok) if ok is not None else np.arange(hashes.shape[0])
    if rows.size < 2:
        return np.zeros((0, 2), dtype=np.int64)
    xb = np.ascontiguousarray(hashes[rows])
    flat = faiss.IndexBinaryFlat(xb.shape[1] * 8)
    flat.add(xb)
    lims, _, I = flat.range_search(xb, max_distance + 1)  # noqa: E741  distances < radius
    src = np.repeat(np.arange(rows.size), np.diff(lims).astype(np.int64))
    keep = src < I
    return np.stack([rows[src[keep]], rows[I[keep]]], axis=1).astype(np.int64)
