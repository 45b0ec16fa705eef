"""Label-based and label-free measures of an embedding: first-page precision, weighted kNN top-1, dimension std,
effective rank."""

from __future__ import annotations

import torch


def weighted_knn_top1(
    train_x: torch.Tensor,
    train_y: torch.Tensor,
    test_x: torch.Tensor,
    test_y: torch.Tensor,
    k: int = 20,
    T: float = 0.07,
) -> float:
    """Weighted kNN classifier (Wu et al., 2018): each of the k nearest gallery items votes exp(s/T)
    for its class. Inputs L2-normalised: train_x (N, D), test_x (M, D); labels (N,), (M,) int64."""
    k = min(k, train_x.shape[0])
    sims = test_x @ train_x.T  # (M, N)
    s, idx = sims.topk(k, dim=1)  # (M, k)
    n_classes = int(max(train_y.max(), test_y.max())) + 1
    return float((weighted_knn_vote(s, train_y[idx], n_classes, T) == test_y).float().mean())


def precision_at_k(
    train_x: torch.Tensor, train_y: torch.Tensor, test_x: torch.Tensor, test_y: torch.Tensor, k: int = 10
) -> torch.Tensor:
    """(M,) the share of each query's k nearest gallery items that share its class: what a searcher sees on the
    first page. Inputs L2-normalised: train_x (N, D), test_x (M, D); labels (N,), (M,). With fewer than k gallery
    items, the share of those there are."""
    if k < 1:
        raise ValueError(f"Illegal k {k}: must be >= 1")
    k = min(k, train_x.shape[0])
    idx = (test_x @ train_x.T).topk(k, dim=1).indices  # (M, k)
    return (train_y[idx] == test_y[:, None]).float().mean(dim=1)  # (M,)


def weighted_knn_vote(s: torch.Tensor, neighbour_y: torch.Tensor, n_classes: int, T: float = 0.07) -> torch.Tensor:
    """The class each query is given: neighbour j votes exp(s_j / T) for its class neighbour_y_j.
    s (M, k) similarities of each query's k nearest gallery items, neighbour_y (M, k) int64 their labels."""
    votes = torch.zeros(s.shape[0], n_classes, dtype=s.dtype)  # (M, n_classes)
    votes.scatter_add_(1, neighbour_y, (s / T).exp())
    return votes.argmax(dim=1)  # (M,)


def dimension_std(z: torch.Tensor) -> float:
    """Mean per-dimension std of L2-normalised embeddings z (N, D). About 1/sqrt(D) when healthy,
    0 when every input maps to the same point (collapse)."""
    return float(z.std(dim=0).mean())


def effective_rank(z: torch.Tensor) -> float:
    """exp(entropy) of the normalised singular values of centred z (N, D) (Roy & Vetterli, 2007)."""
    s = torch.linalg.svdvals(z - z.mean(dim=0, keepdim=True))  # (min(N, D),)
    p = s / s.sum().clamp(min=1e-12)
    p = p[p > 0]
    return float(torch.exp(-(p * p.log()).sum()))
