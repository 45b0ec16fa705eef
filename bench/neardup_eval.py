"""Pairwise precision / recall / F1 of duplicate groups against planted truth (bench/neardup_data.py)."""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Sequence


def pairs_of(groups: Iterable[Sequence[str]]) -> set[frozenset[str]]:
    """Every unordered pair of distinct paths that share a group."""
    return {frozenset(p) for g in groups for p in itertools.combinations(sorted(set(g)), 2)}


def pairwise_prf(predicted: Iterable[Sequence[str]], truth: Iterable[Sequence[str]]) -> dict[str, float]:
    pred, true = pairs_of(predicted), pairs_of(truth)
    tp = len(pred & true)
    p = tp / len(pred) if pred else 1.0
    r = tp / len(true) if true else 1.0
    f1 = 2 * p * r / (p + r) if p + r else 0.0
    return {"precision": p, "recall": r, "f1": f1, "true_pairs": len(true), "predicted_pairs": len(pred), "tp": tp}
