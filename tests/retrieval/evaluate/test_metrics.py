"""retrieval.evaluate.metrics against hand-computed values and a numpy brute force on random vectors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from moco.measure.knn import weighted_knn_top1
from retrieval.evaluate.metrics import (
    CurvePoint,
    average_precision,
    best_f1,
    exact_neighbours,
    exact_ranks,
    knn_top1,
    map_at_r,
    pair_set,
    pairwise_prf,
    precision_at_k,
    precision_recall_curve,
    ranks_from_hits,
    recall_at_k,
)

INF = np.inf


def test_ranked_metrics_by_hand():
    ranks = [np.array([1.0, 3.0]), np.array([2.0, INF]), np.array([4.0])]
    np.testing.assert_allclose(recall_at_k(ranks, 1), [1, 0, 0])
    np.testing.assert_allclose(recall_at_k(ranks, 2), [1, 1, 0])
    np.testing.assert_allclose(recall_at_k(ranks, 4), [1, 1, 1])
    # AP: (1/1 + 2/3) / 2, (1/2 + 0) / 2, 1/4
    np.testing.assert_allclose(average_precision(ranks), [5 / 6, 1 / 4, 1 / 4])
    # MAP@R: R = 2: (1/1 + [3 <= 2]) / 2; R = 2: (1/2) / 2; R = 1: [4 <= 1] = 0
    np.testing.assert_allclose(map_at_r(ranks), [1 / 2, 1 / 4, 0.0])


def test_precision_at_k_on_a_planted_embedding_by_hand():
    """Five 2-D unit vectors at planted angles: query 0 (class a) sees, nearest first, 1 (a), 2 (b), 3 (a), 4 (b).
    P@1 = 1, P@2 = 1/2, P@3 = 2/3, P@4 = 1/2; P@10 with only 4 results is the share of those 4."""
    angles = np.array([0.0, 0.1, 0.25, 0.45, 0.7])
    x = np.stack([np.cos(angles), np.sin(angles)], axis=1).astype(np.float32)  # (5, 2) unit vectors
    y = np.array([0, 0, 1, 0, 1])
    D, I = exact_neighbours(x, x[:1], 10, self_ids=np.array([0]))  # noqa: E741
    np.testing.assert_array_equal(I, [[1, 2, 3, 4]])
    hits = y[I] == y[0]
    for k, want in [(1, 1.0), (2, 0.5), (3, 2 / 3), (4, 0.5), (10, 0.5)]:
        np.testing.assert_allclose(precision_at_k(hits, k), [want])
    np.testing.assert_allclose(precision_at_k(np.array([[True, False], [False, False]]), 2), [0.5, 0.0])
    assert precision_at_k(np.zeros((3, 0), bool), 10).tolist() == [0.0, 0.0, 0.0]
    with pytest.raises(ValueError, match="Illegal k"):
        precision_at_k(hits, 0)


def test_ranks_from_hits_counts_relevant_items_beyond_the_depth():
    hits = np.array([[False, True, False, True], [True, False, False, False]])
    r = ranks_from_hits(hits, [3, 1])
    np.testing.assert_array_equal(r[0], [2, 4, INF])
    np.testing.assert_array_equal(r[1], [1])


def _brute_force(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Leave-one-out recall@5, AP and MAP@R straight from the definitions, one query at a time."""
    sims = x @ x.T
    rec5, ap, mapr = [], [], []
    for q in range(len(x)):
        order = [j for j in np.argsort(-sims[q], kind="stable") if j != q]
        rel = np.array([y[j] == y[q] for j in order], dtype=float)
        R = int(rel.sum())
        precision = np.cumsum(rel) / np.arange(1, len(rel) + 1)
        rec5.append(float(rel[:5].any()))
        ap.append(float((precision * rel).sum() / R))
        mapr.append(float((precision[:R] * rel[:R]).sum() / R))
    return np.array(rec5), np.array(ap), np.array(mapr)


def test_recall_ap_and_map_at_r_match_a_brute_force_on_random_vectors():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((60, 8)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    y = rng.integers(0, 4, 60)
    counts = np.bincount(y)
    D, I = exact_neighbours(x, x, 59, self_ids=np.arange(60))  # noqa: E741
    assert not (I == np.arange(60)[:, None]).any()
    np.testing.assert_allclose(
        D, np.sort(np.where(np.eye(60, dtype=bool), -np.inf, x @ x.T), axis=1)[:, ::-1][:, :59], atol=1e-6
    )
    ranks = ranks_from_hits(y[I] == y[:, None], counts[y] - 1)
    rec5, ap, mapr = _brute_force(x, y)
    np.testing.assert_allclose(recall_at_k(ranks, 5), rec5)
    np.testing.assert_allclose(average_precision(ranks), ap, rtol=1e-9)
    np.testing.assert_allclose(map_at_r(ranks), mapr, rtol=1e-9)
    # the exact ranks from full score rows give the same figures
    exact = [exact_ranks(x @ x[q], np.flatnonzero((y == y[q]) & (np.arange(60) != q)), (q,)) for q in range(60)]
    np.testing.assert_allclose(average_precision(exact), ap, rtol=1e-6)


def test_exact_ranks_ties_go_to_the_relevant_items_and_take_consecutive_ranks():
    scores = np.array([0.9, 0.5, 0.5, 0.5, 0.1])
    np.testing.assert_array_equal(exact_ranks(scores, [2, 3]), [2, 3])  # beaten only by 0.9
    np.testing.assert_array_equal(exact_ranks(scores, [4], excluded=(0,)), [4])
    np.testing.assert_array_equal(exact_ranks(scores, [0], excluded=(0,)), [5])  # excluded: last


def test_weighted_knn_prefers_one_close_neighbour_over_two_far_ones():
    D = np.array([[0.9, 0.5, 0.5]], dtype=np.float32)  # exp(9) = 8103 against 2 exp(5) = 297
    I = np.array([[0, 1, 2]])  # noqa: E741
    gallery = np.array([1, 0, 0])
    assert knn_top1(D, I, gallery, np.array([1]), k=3, temperature=0.1)[0] == 1.0
    assert knn_top1(D, I, gallery, np.array([0]), k=3, temperature=10.0)[0] == 1.0  # nearly a plain majority
    assert knn_top1(D, I, gallery, np.array([1]), k=1, temperature=0.1)[0] == 1.0


def test_knn_top1_equals_moco_weighted_knn_top1_on_random_vectors():
    rng = np.random.default_rng(1)
    gallery = rng.standard_normal((80, 6)).astype(np.float32)
    gallery /= np.linalg.norm(gallery, axis=1, keepdims=True)
    queries = rng.standard_normal((30, 6)).astype(np.float32)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    gy, qy = rng.integers(0, 3, 80), rng.integers(0, 3, 30)
    D, I = exact_neighbours(gallery, queries, 20)  # noqa: E741
    ours = knn_top1(D, I, gy, qy, k=20, temperature=0.07).mean()
    ref = weighted_knn_top1(
        torch.from_numpy(gallery), torch.from_numpy(gy), torch.from_numpy(queries), torch.from_numpy(qy)
    )
    assert ours == pytest.approx(ref, abs=1e-9)


def test_pairwise_prf_by_hand():
    s = pairwise_prf([["a", "b", "c"]], [["a", "b"], ["c", "d"]])  # predicted ab ac bc; true ab cd
    assert (s.tp, s.predicted_pairs, s.true_pairs) == (1, 3, 2)
    assert (s.precision, s.recall) == pytest.approx((1 / 3, 1 / 2))
    assert s.f1 == pytest.approx(2 * (1 / 3) * (1 / 2) / (1 / 3 + 1 / 2))
    assert pairwise_prf([], [["a", "b"]]).as_dict() == {
        "precision": 1.0,
        "recall": 0.0,
        "f1": 0.0,
        "tp": 0,
        "predicted_pairs": 0,
        "true_pairs": 1,
    }
    assert pair_set([["a", "a", "b"]]) == {frozenset({"a", "b"})}


def test_curve_and_best_f1_follow_the_threshold():
    truth = [["a", "b"], ["c", "d"]]
    groups = {0.0: [["a", "b", "c", "d"]], 0.5: [["a", "b"], ["c", "d"]], 0.9: [["a", "b"]]}
    curve = precision_recall_curve(groups.__getitem__, [0.0, 0.5, 0.9], truth)
    assert [p.score.f1 for p in curve] == pytest.approx([2 * (2 / 6) / (2 / 6 + 1), 1.0, 2 * 0.5 / 1.5])
    assert best_f1(curve).threshold == 0.5
    same = [CurvePoint(0.1, curve[1].score), CurvePoint(0.2, curve[1].score)]
    assert best_f1(same).threshold == 0.1  # the first of equal ones
