"""near_pairs: the candidate pairs of one k-NN pass equal a brute-force oracle (planted clusters, exact copies,
plain cosine and normalised scores, shallow first pass widened where the list may go on)."""

from __future__ import annotations

import faiss
import numpy as np
import pytest

import retrieval.dedup.candidates.near_pairs as near_pairs_module
from retrieval.dedup.candidates.near_pairs import _drop_repeats, near_pairs, normalised_scores, search_width

N, D = 240, 16


def unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


def planted(seed: int) -> np.ndarray:
    """(N, D): random rows, 20 near copies (cosine ~0.95) of rows 0..19, and a tight cluster of 12 rows."""
    rng = np.random.default_rng(seed)
    x = unit(rng.standard_normal((N, D)))
    x[20:40] = unit(x[:20] + 0.33 * unit(rng.standard_normal((20, D))))
    x[40:52] = unit(x[40] + 0.15 * unit(rng.standard_normal((12, D))))  # each row has > rank close neighbours
    return x


def clear_of(values: np.ndarray, near: float, margin: float = 1e-4) -> float:
    """A threshold within 0.02 of `near` and more than `margin` from every value, so that float rounding
    cannot flip a pair across it: the middle of the widest gap between the values there."""
    v = np.sort(values[np.abs(values - near) < 0.02])
    edges = np.concatenate([[near - 0.02], v, [near + 0.02]])
    widest = int(np.argmax(np.diff(edges)))
    assert edges[widest + 1] - edges[widest] > 2 * margin
    return float(edges[widest] + edges[widest + 1]) / 2


def oracle(
    x: np.ndarray, reps: np.ndarray, threshold: float, k: int, rank: int
) -> tuple[set[tuple[int, int]], np.ndarray, float]:
    """Unordered pairs of representatives with score >= t, j among i's k nearest other representatives or i
    among j's, from the dense similarity matrix; (R,) backgrounds (0 for plain cosine); and t, the
    threshold moved (by < 0.02) clear of every pair's score."""
    S = x[reps] @ x[reps].T  # (R, R)
    np.fill_diagonal(S, -np.inf)
    order = np.argsort(-S, axis=1, kind="stable")  # (R, R)
    b = np.zeros(reps.size, dtype=np.float32)
    scores = S
    if rank > 0:
        b = -np.sort(-S, axis=1)[:, rank - 1].astype(np.float32)
        scores = normalised_scores(S.astype(np.float32), b[:, None], b[None, :])
    np.fill_diagonal(scores, -np.inf)
    near = np.zeros_like(S, dtype=bool)
    np.put_along_axis(near, order[:, :k], True, axis=1)
    near |= near.T
    t = clear_of(scores[near], threshold)
    i, j = np.nonzero(near & (scores >= t))
    return {(int(reps[a]), int(reps[c])) for a, c in zip(i, j, strict=True) if a < c}, b, t


def as_pairs(src: np.ndarray, dst: np.ndarray) -> set[tuple[int, int]]:
    return {(min(a, b), max(a, b)) for a, b in zip(src.tolist(), dst.tolist(), strict=True)}


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("threshold, rank", [(0.85, 0), (0.5, 5), (0.12, 5), (-0.2, 3)])
@pytest.mark.parametrize("rank_slack", [0, 3])  # 0: every row's first list ends at its background, so is widened
def test_flat_pairs_equal_the_oracle(monkeypatch, seed, threshold, rank, rank_slack):
    monkeypatch.setattr(near_pairs_module, "RANK_SLACK", rank_slack)
    x = planted(seed)
    reps = np.arange(N)
    k = 6
    expected, b, t = oracle(x, reps, threshold, k, rank)
    assert expected
    got = near_pairs(x, reps, reps.copy(), t, k=k, background_rank=rank, batch_size=50, index=None)
    assert as_pairs(got.src, got.dst) == expected
    S = x @ x.T
    want = S[got.src, got.dst] if rank == 0 else normalised_scores(S[got.src, got.dst], b[got.src], b[got.dst])
    np.testing.assert_allclose(got.score, want, atol=1e-4)
    if rank:
        np.testing.assert_allclose(got.background, b, atol=1e-6)
    else:
        assert got.background is None


@pytest.mark.parametrize("threshold, rank", [(0.85, 0), (0.3, 5)])
def test_exact_copies_share_their_representative(threshold, rank):
    x = planted(2)
    copies = np.array([3, 25, 41, 41, 100])  # rows that get an exact copy (41 twice) appended
    xa = np.concatenate([x, x[copies]])  # (N + 5, D)
    rep_of = np.concatenate([np.arange(N), copies])
    reps = np.arange(N)
    expected, b, t = oracle(xa, reps, threshold, k=N, rank=rank)
    index = faiss.IndexFlatIP(D)
    index.add(xa)  # over every record, copies included: their repeats must not count as neighbours
    for given in (None, index):
        got = near_pairs(xa, reps, rep_of, t, k=N, background_rank=rank, batch_size=64, index=given)
        assert as_pairs(got.src, got.dst) == expected
        if rank:
            np.testing.assert_allclose(got.background[reps], b, atol=1e-5)


def test_search_width_follows_threshold_and_rank(monkeypatch):
    monkeypatch.setattr(near_pairs_module, "RANK_SLACK", 3)
    assert search_width(32, 0, 0.9) == 32  # plain cosine: k deep
    assert search_width(32, 5, 0.12) == 8  # normalised, t >= 0: a little beyond the background rank
    assert search_width(4, 5, 0.12) == 5  # never shallower than the background
    assert search_width(32, 5, -0.1) == 32  # a negative threshold reaches below the background: k deep


def test_drop_repeats_keeps_first_occurrence():
    J = np.array([[4, 7, 4, -1, 7, 2], [1, 1, 1, 3, -1, -1]])
    assert _drop_repeats(J).tolist() == [[4, 7, -1, -1, -1, 2], [1, -1, -1, 3, -1, -1]]
