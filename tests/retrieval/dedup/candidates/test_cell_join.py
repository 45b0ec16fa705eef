"""The k-NN self-join dedup uses on approximate indexes, against brute force: exact when every cell is
probed, planted pairs found at the tuned nprobe, tuning reports the recall it measured."""

from __future__ import annotations

import numpy as np
import pytest

from retrieval.dedup.candidates.cell_join import BACKGROUND_RECALL, PAIR_RECALL, choose_nprobe, self_join, train_cells


def unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


def clustered(n: int = 2000, d: int = 16, pairs: int = 50, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Unit vectors around 40 centres; the last `pairs` rows are copies of rows 0.. at cosine ~0.95.
    Returns x (n, d) and the planted pairs (pairs, 2)."""
    rng = np.random.default_rng(seed)
    centres = unit(rng.standard_normal((40, d)))
    x = unit(centres[rng.integers(0, 40, n)] + 0.5 * rng.standard_normal((n, d)) / np.sqrt(d))
    src = np.arange(pairs)
    dst = np.arange(n - pairs, n)
    x[dst] = unit(x[src] + 0.33 * unit(rng.standard_normal((pairs, d))))
    return x, np.stack([src, dst], 1)


def brute_top(x: np.ndarray, k: int) -> np.ndarray:
    """(N, k) exact top-k similarities, the row itself included, most similar first."""
    return -np.sort(-(x @ x.T), axis=1)[:, :k]


def test_probing_every_cell_is_exact_knn():
    x, _ = clustered()
    cells = train_cells(x, nlist=16)
    table = self_join(x, 9, cells, nprobe=16)
    np.testing.assert_allclose(table.D, brute_top(x, 9), atol=1e-5)
    np.testing.assert_allclose(np.einsum("nd,nkd->nk", x, x[table.I]), table.D, atol=1e-5)  # ids match scores
    assert (table.I[:, 0] == np.arange(len(x))).mean() > 0.99  # each row is its own nearest (ties aside)


def test_tuned_nprobe_finds_the_planted_pairs_and_fewer_than_all_cells():
    x, pairs = clustered()
    cells = train_cells(x, nlist=32)
    nprobe, pair_recall, bg_recall = choose_nprobe(x, cells, 0.9)
    assert pair_recall >= PAIR_RECALL and bg_recall == 1.0 and nprobe < 32
    table = self_join(x, 4, cells, nprobe)
    found = [(b in table.I[a]) or (a in table.I[b]) for a, b in pairs]
    assert np.mean(found) >= PAIR_RECALL
    assert (table.D <= brute_top(x, 4) + 1e-5).all()  # an approximate list is never better than the exact one


@pytest.mark.parametrize("rank", [1, 5])
def test_background_recall_is_what_the_join_finds(rank):
    x, _ = clustered(seed=1)
    cells = train_cells(x, nlist=32)
    nprobe, _, bg_recall = choose_nprobe(x, cells, 0.2, background_rank=rank, sample=len(x))
    assert bg_recall >= BACKGROUND_RECALL
    table = self_join(x, rank + 1, cells, nprobe)
    sims = x @ x.T
    np.fill_diagonal(sims, -np.inf)
    true = np.argsort(-sims, axis=1, kind="stable")[:, :rank]  # (N, r)
    got = np.mean([len(set(true[i]) & set(table.I[i])) / rank for i in range(len(x))])
    assert got == pytest.approx(bg_recall, abs=0.02)  # the tuning sample (all rows) predicts the join


def test_search_rows_pads_beyond_the_table_width():
    x, _ = clustered(n=300)
    table = self_join(x, 3, train_cells(x, nlist=1), nprobe=1)
    D, I = table.search_rows(np.array([0, 5]), 5)  # noqa: E741
    assert D.shape == I.shape == (2, 5) and (I[:, 3:] == -1).all() and np.isneginf(D[:, 3:]).all()
    assert (I[:, 0] == [0, 5]).all()


@pytest.mark.parametrize("floor_rank", [0, 2, 5])
def test_floor_keeps_the_nearest_exact_and_drops_only_farther_entries(floor_rank):
    x, _ = clustered(seed=2)
    cells = train_cells(x, nlist=8)
    table = self_join(x, 12, cells, nprobe=8, floor_rank=floor_rank)  # every cell probed: exact
    exact = brute_top(x, 12)
    r = floor_rank + 1
    np.testing.assert_allclose(table.D[:, :r], exact[:, :r], atol=1e-5)  # the nearest r are all there
    kept = np.isfinite(table.D)
    assert ((table.I >= 0) == kept).all() and (np.diff(table.D, axis=1) <= 0).all()  # sorted, pads last
    rows = np.nonzero(kept)[0]
    np.testing.assert_allclose(np.einsum("ed,ed->e", x[rows], x[table.I[kept]]), table.D[kept], atol=1e-5)


def test_min_similarity_keeps_exactly_the_pairs_above_it():
    x, pairs = clustered(seed=3)
    table = self_join(x, 32, train_cells(x, nlist=8), nprobe=8, min_similarity=0.9)
    sims = x @ x.T
    want = {(i, j) for i, j in zip(*np.nonzero(sims >= 0.9), strict=True)}
    got = {(i, int(j)) for i in range(len(x)) for j in table.I[i] if j >= 0}
    assert got == want  # no row has 32 such neighbours (itself included), so the width cuts nothing
    assert {(int(a), int(b)) for a, b in pairs} <= got
