"""retrieval.evaluate.phash: a hash survives resizing and re-encoding, tells unrelated pictures apart, and the
range search finds exactly the pairs a brute-force Hamming distance finds."""

from __future__ import annotations

import itertools

import numpy as np
from PIL import Image

from retrieval.evaluate.phash import _dct_matrix, hamming_pairs, hash_files, phash
from tests.retrieval.conftest import scene


def _distance(a: np.ndarray, b: np.ndarray) -> int:
    return int(np.unpackbits(a ^ b).sum())


def test_dct_matrix_is_the_unnormalised_dct_ii():
    x = np.random.default_rng(0).standard_normal(8)
    ref = [2 * sum(x[j] * np.cos(np.pi * k * (2 * j + 1) / 16) for j in range(8)) for k in range(8)]
    np.testing.assert_allclose(_dct_matrix(8) @ x, ref, atol=1e-12)


def test_resized_copy_is_close_and_other_pictures_are_far(tmp_path):
    original = scene(1, (160, 120))
    h = phash(original)
    assert h.shape == (8,) and h.dtype == np.uint8
    assert _distance(h, phash(original.resize((80, 60), Image.Resampling.BILINEAR))) <= 4
    original.save(tmp_path / "a.jpg", quality=70)
    hashes, ok = hash_files(tmp_path, ["a.jpg"])
    assert ok.all() and _distance(h, hashes[0]) <= 6
    others = [_distance(h, phash(scene(s, (160, 120)))) for s in range(2, 8)]
    assert min(others) > 12


def test_hamming_pairs_match_a_brute_force():
    rng = np.random.default_rng(0)
    hashes = rng.integers(0, 256, (40, 8), dtype=np.uint8)
    hashes[5] = hashes[3] ^ np.array([1, 0, 0, 0, 0, 0, 0, 3], dtype=np.uint8)  # 3 bits apart
    ok = np.ones(40, dtype=bool)
    ok[7] = False
    for d in (3, 26, 30):
        ref = {(i, j) for i, j in itertools.combinations(range(40), 2) if ok[i] and ok[j]}
        ref = {(i, j) for i, j in ref if _distance(hashes[i], hashes[j]) <= d}
        got = {tuple(p) for p in hamming_pairs(hashes, d, ok).tolist()}
        assert got == ref
    assert (3, 5) in {tuple(p) for p in hamming_pairs(hashes, 3, ok).tolist()}
