"""moco.measure.knn.precision_at_k and the --val validator's scores against hand-computed values on planted
embeddings."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from moco.measure.knn import precision_at_k
from moco.measure.validation import FIRST_PAGE, KnnValidator, holdout_split
from retrieval.evaluate import metrics


def unit(angles: list[float]) -> torch.Tensor:
    a = torch.tensor(angles)
    return torch.stack([a.cos(), a.sin()], dim=1)  # (N, 2) unit vectors at the planted angles


def test_precision_at_k_by_hand_on_a_planted_embedding():
    # gallery at angles 0.1 .. 0.6 with classes a a b a b b; the query at 0 (class a) sees them in that order
    gallery = unit([0.1, 0.2, 0.3, 0.4, 0.5, 0.6])
    gy = torch.tensor([0, 0, 1, 0, 1, 1])
    queries = unit([0.0, 0.65])  # the second (class b) sees them backwards: b b a b a a
    qy = torch.tensor([0, 1])
    torch.testing.assert_close(precision_at_k(gallery, gy, queries, qy, 1), torch.tensor([1.0, 1.0]))
    torch.testing.assert_close(precision_at_k(gallery, gy, queries, qy, 3), torch.tensor([2 / 3, 2 / 3]))
    torch.testing.assert_close(precision_at_k(gallery, gy, queries, qy, 4), torch.tensor([3 / 4, 3 / 4]))
    # a first page longer than the gallery: the share of the whole gallery (3 of 6)
    torch.testing.assert_close(precision_at_k(gallery, gy, queries, qy, 10), torch.tensor([0.5, 0.5]))
    with pytest.raises(ValueError, match="Illegal k"):
        precision_at_k(gallery, gy, queries, qy, 0)


def test_precision_at_k_agrees_with_the_retrieval_metric_on_random_vectors():
    g = torch.Generator().manual_seed(0)
    x = F.normalize(torch.randn(80, 6, generator=g), dim=1)
    y = torch.randint(0, 5, (80,), generator=g)
    ours = precision_at_k(x[20:], y[20:], x[:20], y[:20], 10)
    D, I = metrics.exact_neighbours(x[20:].numpy(), x[:20].numpy(), 10)  # noqa: E741
    theirs = metrics.precision_at_k(y[20:].numpy()[I] == y[:20].numpy()[:, None], 10)
    np.testing.assert_allclose(ours.numpy(), theirs, atol=1e-6)


class Flatten(nn.Module):
    """A stand-in model whose embedding is its input flattened and normalised (the planted vectors)."""

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(x.flatten(1), dim=1)


def test_validator_scores_the_held_out_queries_by_first_page_and_knn():
    # two classes of 10 on two arcs; every 5th of a class is a held-out query (indices 4, 9 and 14, 19)
    angles = [0.01 * i for i in range(10)] + [1.0 + 0.01 * i for i in range(10)]
    y = [0] * 10 + [1] * 10
    angles[9] = 1.05  # a class-a picture planted among class b: its query's first page is all b
    train, test = holdout_split(y)
    assert test == [4, 9, 14, 19]
    x = unit(angles).view(20, 2, 1, 1)
    v = KnnValidator(x, torch.tensor(y), train, test)
    s = v.scores(Flatten(), torch.device("cpu"))
    # query 4: 8 class-a gallery images nearest, then class b: 8/10; query 9 sits among the 8 class-b gallery images
    # and has the class-a ones beyond them: 2/10 (the 2 nearest class-a); queries 14, 19: 8 class-b then a
    assert FIRST_PAGE == 10
    assert s.first_page == pytest.approx((0.8, 0.2, 0.8, 0.8))
    assert s.precision_at_10 == pytest.approx(2.6 / 4)
    assert s.knn_top1 == 0.75  # query 9 is voted class b
    assert v.evaluate(Flatten(), torch.device("cpu")) == s.knn_top1
    assert not math.isnan(s.precision_at_10)
