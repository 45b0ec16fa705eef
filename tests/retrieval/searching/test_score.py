"""The search score a person reads: dedup's neighbour-normalised score against a brute-force oracle, an
identical picture at 1, exact copies counted once in a background, and the band boundaries."""

from __future__ import annotations

import math

import numpy as np
import pytest

from retrieval.dedup.groups import BACKGROUND_RANK
from retrieval.searching.score import BANDS, NEAR_COPY, SAME_PICTURE, SIMILAR, band, rank_background
from tests.retrieval.searching.test_searcher import _open, _unit

pytestmark = pytest.mark.usefixtures("one_faiss_thread")  # tests/retrieval/conftest.py


def _background(x: np.ndarray, v: np.ndarray, hashes: list[str], own: str | None, r: int) -> float:
    """Brute force: the cosine to the r-th nearest other picture, copies (same hash) once, the own hash never."""
    order = sorted(range(len(x)), key=lambda i: -float(x[i] @ v))
    seen: list[str] = []
    for i in order:
        if hashes[i] == own or hashes[i] in seen:
            continue
        seen.append(hashes[i])
        if len(seen) == r:
            return float(x[i] @ v)
    return 0.0


def test_scores_equal_the_brute_force_normalised_cosine(tmp_path):
    x = _unit(np.random.default_rng(0).standard_normal((60, 8)))
    x[7] = x[3]  # an exact copy: same bytes, same vector
    hashes = [f"{i:064x}" for i in range(60)]
    hashes[7] = hashes[3]
    index = _open(tmp_path, x, hashes=hashes)
    r = BACKGROUND_RANK
    assert index.background_rank == r
    q = _unit(np.random.default_rng(1).standard_normal((4, 8)))
    for v, hits in zip(q, index.search_vectors(q, k=6), strict=True):
        b_q = _background(x, v, hashes, None, r)
        for h in hits:
            b_h = _background(x, x[h.id], hashes, hashes[h.id], r)
            b = (b_q + b_h) / 2
            assert h.score == pytest.approx((h.cosine - b) / (1 - b), abs=1e-5)
            assert h.band == band(h.score)
    np.testing.assert_allclose(
        index.backgrounds(np.arange(60)), [_background(x, x[i], hashes, hashes[i], r) for i in range(60)], atol=1e-6
    )


def test_an_identical_picture_scores_1(tmp_path):
    x = _unit(np.random.default_rng(2).standard_normal((40, 8)))
    index = _open(tmp_path, x)
    hits = index.search_vectors(x[[5, 11]], k=3)
    for own, row in zip((5, 11), hits, strict=True):
        assert row[0].id == own
        assert row[0].score == pytest.approx(1.0, abs=1e-5) and row[0].band == "same picture"
        assert row[1].score < 1.0
    # excluded, the query's own file does not move its background: the rest scores the same
    excluded = index.search_vectors(x[[5]], k=2, exclude_ids=[{5}])[0]
    assert [h.id for h in excluded] == [h.id for h in hits[0][1:]]
    assert [h.score for h in excluded] == pytest.approx([h.score for h in hits[0][1:]], abs=1e-6)


def test_band_boundaries():
    assert [name for name, _ in BANDS] == ["same picture", "near copy", "similar", "unrelated"]
    assert SAME_PICTURE > NEAR_COPY > SIMILAR == 0.0
    for name, floor in BANDS[:-1]:
        assert band(floor) == name  # a boundary belongs to the band above it
    below = [band(math.nextafter(floor, -math.inf)) for _, floor in BANDS[:-1]]
    assert below == ["near copy", "similar", "unrelated"]
    assert band(1.0) == "same picture" and band(-1.0) == "unrelated" and band(float("nan")) == "unrelated"


def test_rank_background_counts_each_group_once():
    assert rank_background([0.9, 0.9, 0.8, 0.7], ["a", "a", "b", "c"], 2) == 0.8
    assert rank_background([0.9, 0.8], ["a", "b"], 3) == 0.0  # fewer than r: 0, as dedup
