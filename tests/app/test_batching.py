"""Queries waiting at once are embedded in one call, each gets its own vector, and a bad one fails alone."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from app.batching import QueryBatcher


def vector(q: float) -> np.ndarray:
    """The oracle: what embedding q alone gives."""
    return np.array([q, 2 * q, -q], dtype=np.float32)


class SlowEmbed:
    """embed_many that holds its first call until every other query waits in the batcher, so they queue up."""

    def __init__(self, queries: int) -> None:
        self.queries = queries
        self.batcher: QueryBatcher | None = None
        self.calls: list[list[float]] = []

    def __call__(self, qs: list[float]) -> np.ndarray:
        if not self.calls:
            waited = 0.0
            while self.batcher._waiting.qsize() < self.queries - 1:  # type: ignore[union-attr]
                assert waited < 10, "the other queries never arrived"
                time.sleep(0.005)
                waited += 0.005
        self.calls.append(list(qs))
        if any(q < 0 for q in qs):
            raise ValueError(f"negative query in {qs}")
        return np.stack([vector(q) for q in qs])


def run_all(batcher: QueryBatcher, embed: SlowEmbed, queries: list[float]) -> list[object]:
    embed.batcher = batcher

    def one(q: float) -> object:
        try:
            return batcher.embed(q)
        except ValueError as err:
            return err

    with ThreadPoolExecutor(len(queries)) as pool:
        first = pool.submit(one, queries[0])
        while not batcher.batches:  # the worker holds the first query before the rest come
            time.sleep(0.005)
        rest = [pool.submit(one, q) for q in queries[1:]]
        return [first.result(timeout=20)] + [f.result(timeout=20) for f in rest]


def test_one_query_alone_is_embedded_at_once() -> None:
    batcher = QueryBatcher(lambda qs: np.stack([vector(q) for q in qs]))
    np.testing.assert_array_equal(batcher.embed(3.0), vector(3.0))
    assert list(batcher.batches) == [1]


def test_queries_waiting_together_share_one_call_and_each_gets_its_own_vector() -> None:
    queries = [float(q) for q in range(1, 11)]
    embed = SlowEmbed(len(queries))
    batcher = QueryBatcher(embed, max_batch=16)
    got = run_all(batcher, embed, queries)
    for q, v in zip(queries, got, strict=True):
        np.testing.assert_array_equal(v, vector(q))
    assert embed.calls[0] == [1.0]  # the first query went alone, the nine that queued behind it went together
    assert sorted(embed.calls[1]) == queries[1:]
    assert list(batcher.batches) == [1, 9]


def test_a_batch_holds_at_most_max_batch() -> None:
    queries = [float(q) for q in range(1, 10)]
    embed = SlowEmbed(len(queries))
    batcher = QueryBatcher(embed, max_batch=3)
    run_all(batcher, embed, queries)
    assert max(batcher.batches) <= 3 and sum(batcher.batches) == len(queries)


def test_a_bad_query_fails_alone() -> None:
    queries = [1.0, 2.0, -5.0, 4.0]
    embed = SlowEmbed(len(queries))
    batcher = QueryBatcher(embed)
    got = run_all(batcher, embed, queries)
    assert isinstance(got[2], ValueError) and "-5.0" in str(got[2])
    for q, v in zip(queries, got, strict=True):
        if q > 0:
            np.testing.assert_array_equal(v, vector(q))


def test_max_batch_must_be_positive() -> None:
    with pytest.raises(ValueError, match="max_batch"):
        QueryBatcher(lambda qs: np.zeros((len(qs), 3)), max_batch=0)
