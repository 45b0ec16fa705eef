"""Pairwise precision / recall / F1 of duplicate groups against planted truth (bench/kit/neardup_data.py), as
`retrieval eval dedup` computes them (retrieval.evaluate.metrics), in the dict form the benchmarks store."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from retrieval.evaluate.metrics import pairwise_prf as pairwise_score


def pairwise_prf(predicted: Iterable[Sequence[str]], truth: Iterable[Sequence[str]]) -> dict[str, float]:
    return pairwise_score(predicted, truth).as_dict()
