"""Retrieval and duplicate-finding metrics, as free functions named after the metric.

Ranked retrieval is scored from the 1-based `ranks` of each query's relevant items in its result list
(np.inf for a relevant item the search did not return), so one representation serves every figure:

    recall@k  = mean over queries of [min(ranks) <= k]            (at least one relevant item in the top k)
    P@k       = mean over queries of |{i : r_i <= k}| / k           (the share of the first page that is relevant)
    AP        = mean over the R relevant items of i / r_i          (r_1 < r_2 < ... sorted ranks, i = 1..R)
    MAP@R     = (1/R) sum over i with r_i <= R of i / r_i          (Musgrave et al., 2020: AP cut at depth R)

Duplicate groups are scored pairwise: every unordered pair of files that share a group is one positive,
and precision, recall and F1 compare the predicted pairs with the true ones.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass

import numpy as np
import torch

from moco.measure.knn import weighted_knn_vote

KNN_K = 200  # neighbours that vote, as in the MoCo kNN monitor
KNN_TEMPERATURE = 0.1  # each votes exp(s / T), as in the MoCo kNN monitor


# ------------------------------------------------------------------------------ neighbours and ranks


def exact_neighbours(
    gallery: np.ndarray, queries: np.ndarray, k: int, self_ids: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """D, I (M, k'): the exact inner-product nearest neighbours of each query row among the gallery rows,
    best first (FAISS IndexFlatIP). With `self_ids` (M,), query i is gallery row self_ids[i] and that row
    is left out of its results. k' = min(k, gallery rows, minus one with self_ids)."""
    import faiss

    xb = np.ascontiguousarray(gallery, dtype=np.float32)  # (N, D)
    xq = np.ascontiguousarray(queries, dtype=np.float32)  # (M, D)
    n, m = xb.shape[0], xq.shape[0]
    kk = min(k, n - 1 if self_ids is not None else n)
    if kk < 1:
        return np.zeros((m, 0), np.float32), np.zeros((m, 0), np.int64)
    flat = faiss.IndexFlatIP(xb.shape[1])
    flat.add(xb)
    D, I = flat.search(xq, kk + 1 if self_ids is not None else kk)  # noqa: E741  (M, k'+1) or (M, k')
    if self_ids is None:
        return D, I
    own = I == np.asarray(self_ids)[:, None]  # (M, k'+1)
    own[~own.any(axis=1), -1] = True  # a tie pushed the row's own id out: drop the farthest instead
    return D[~own].reshape(m, kk), I[~own].reshape(m, kk)


def ranks_from_hits(hits: np.ndarray, n_relevant: Sequence[int] | np.ndarray) -> list[np.ndarray]:
    """Each query's sorted 1-based ranks of its relevant items, from hits (M, depth) (True where result j
    of query i is relevant) and n_relevant (M,) (how many relevant items query i has in all); relevant
    items beyond the depth searched get rank inf."""
    out = []
    for row, r in zip(np.asarray(hits, dtype=bool), np.asarray(n_relevant), strict=True):
        found = np.flatnonzero(row)[: int(r)] + 1.0
        out.append(np.concatenate([found, np.full(int(r) - found.size, np.inf)]))
    return out


def exact_ranks(scores: np.ndarray, relevant: Sequence[int], excluded: Iterable[int] = ()) -> np.ndarray:
    """Sorted 1-based ranks of the `relevant` gallery ids in a ranking of the whole gallery by `scores` (N,),
    best first, with the `excluded` ids (the query file itself) left out. Ties go in the relevant items'
    favour against the others, and relevant items that tie take consecutive ranks."""
    s = np.asarray(scores, dtype=np.float64).copy()  # (N,)
    s[list(excluded)] = -np.inf
    rel = np.sort(s[list(relevant)])[::-1]  # (R,) best first
    others = np.sort(s)  # (N,) ascending
    higher = others.size - np.searchsorted(others, rel, side="right")  # (R,) items scoring strictly higher
    first_equal = np.searchsorted(-rel, -rel, side="left")  # (R,) position of the first relevant item tying
    return 1.0 + higher + (np.arange(rel.size) - first_equal)


# ------------------------------------------------------------------------------ ranked retrieval


def recall_at_k(ranks: Sequence[np.ndarray], k: int) -> np.ndarray:
    """(M,) 1.0 where a relevant item is among the first k results, else 0.0; the mean is recall@k."""
    if k < 1:
        raise ValueError(f"Illegal k {k}: must be >= 1")
    return np.array([float(r.size > 0 and r.min() <= k) for r in ranks])


def precision_at_k(hits: np.ndarray, k: int) -> np.ndarray:
    """(M,) the share of each query's first k results that are relevant, from hits (M, depth) (True where result j
    of query i is relevant): what a searcher sees on the first page. Where fewer than k results exist (a gallery of
    fewer than k other items), the share of those there are; 0.0 with none."""
    if k < 1:
        raise ValueError(f"Illegal k {k}: must be >= 1")
    page = np.asarray(hits, dtype=bool)[:, :k]  # (M, min(k, depth))
    return page.mean(axis=1) if page.shape[1] else np.zeros(page.shape[0])


def average_precision(ranks: Sequence[np.ndarray]) -> np.ndarray:
    """(M,) each query's average precision over all its relevant items; the mean is mAP."""
    out = np.zeros(len(ranks))
    for q, r in enumerate(ranks):
        r = np.sort(r)
        if r.size:
            out[q] = float(np.mean(np.arange(1, r.size + 1) / r))  # i / inf = 0: not retrieved
    return out


def map_at_r(ranks: Sequence[np.ndarray]) -> np.ndarray:
    """(M,) each query's MAP@R: precision at each relevant item within the first R results, summed, over R
    (R = the query's number of relevant items); the mean is MAP@R."""
    out = np.zeros(len(ranks))
    for q, r in enumerate(ranks):
        r = np.sort(r)
        if r.size:
            i = np.arange(1, r.size + 1)
            out[q] = float(np.sum(np.where(r <= r.size, i / r, 0.0)) / r.size)
    return out


def knn_top1(
    D: np.ndarray,
    I: np.ndarray,  # noqa: E741
    gallery_labels: np.ndarray,
    query_labels: np.ndarray,
    k: int = KNN_K,
    temperature: float = KNN_TEMPERATURE,
) -> np.ndarray:
    """(M,) 1.0 where the weighted kNN classifier (moco.measure.knn.weighted_knn_vote: each of the first k
    neighbours in D, I (M, >=k) votes exp(s / T) for its class) gives the query its own label."""
    if k < 1 or temperature <= 0:
        raise ValueError(f"Illegal k {k} or temperature {temperature}: need k >= 1 and T > 0")
    gallery_labels, query_labels = np.asarray(gallery_labels), np.asarray(query_labels)
    n_classes = int(max(gallery_labels.max(initial=0), query_labels.max(initial=0))) + 1
    s = torch.from_numpy(np.ascontiguousarray(D[:, :k], dtype=np.float32))  # (M, k)
    y = torch.from_numpy(gallery_labels[I[:, :k]].astype(np.int64))  # (M, k)
    predicted = weighted_knn_vote(s, y, n_classes, temperature).numpy()  # (M,)
    return (predicted == query_labels).astype(np.float64)


# ------------------------------------------------------------------------------ duplicate groups


@dataclass(frozen=True)
class PairwiseScore:
    """Pairwise precision / recall / F1 of predicted duplicate groups against true ones."""

    precision: float
    recall: float
    f1: float
    tp: int
    predicted_pairs: int
    true_pairs: int

    def as_dict(self) -> dict[str, float | int]:
        return asdict(self)


@dataclass(frozen=True)
class CurvePoint:
    threshold: float
    score: PairwiseScore


def pair_set(groups: Iterable[Sequence[str]]) -> set[frozenset[str]]:
    """Every unordered pair of distinct files that share a group."""
    return {frozenset(p) for g in groups for p in itertools.combinations(sorted(set(g)), 2)}


def pairwise_prf(predicted: Iterable[Sequence[str]], truth: Iterable[Sequence[str]]) -> PairwiseScore:
    """Precision = true pairs found / pairs predicted (1.0 when none is predicted), recall = true pairs
    found / true pairs (1.0 when there are none), F1 their harmonic mean (0.0 when both are 0)."""
    pred, true = pair_set(predicted), pair_set(truth)
    tp = len(pred & true)
    p = tp / len(pred) if pred else 1.0
    r = tp / len(true) if true else 1.0
    f1 = 2 * p * r / (p + r) if p + r else 0.0
    return PairwiseScore(p, r, f1, tp, len(pred), len(true))


def precision_recall_curve(
    groups_at: Callable[[float], Iterable[Sequence[str]]], thresholds: Iterable[float], truth: Sequence[Sequence[str]]
) -> list[CurvePoint]:
    """Pairwise P/R/F1 of the groups `groups_at(t)` forms at each threshold t, in the order given."""
    return [CurvePoint(float(t), pairwise_prf(groups_at(float(t)), truth)) for t in thresholds]


def best_f1(curve: Sequence[CurvePoint]) -> CurvePoint:
    """The point of highest F1 (the first of equal ones)."""
    if not curve:
        raise ValueError("best_f1 needs at least one curve point")
    best = curve[0]
    for point in curve[1:]:
        if point.score.f1 > best.score.f1:
            best = point
    return best
