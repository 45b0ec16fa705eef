"""training_verdict on planted health records and kNN scores: each branch, and the noise band."""

from __future__ import annotations

import math

import pytest

from moco.measure.verdict import knn_standard_error, training_verdict

HEALTHY = {"pretext_top1": 0.2, "dim_std": 0.05, "dim_std_healthy": 0.088, "collapse_warning": False}


def test_collapsed_embeddings_are_never_worth_it_whatever_the_knn():
    v = training_verdict({**HEALTHY, "dim_std": 0.001, "collapse_warning": True}, 1024, 0.9, 0.5, 1000)
    assert v.status == "collapsed"
    assert "collapsed" in v.line


def test_pretext_at_chance_means_nothing_was_learned():
    v = training_verdict({**HEALTHY, "pretext_top1": 5 / 1025}, 1024)  # 5x chance (1/1025) < 10x
    assert v.status == "untrained"


def test_with_a_tiny_queue_the_bar_is_halfway_from_chance_to_one():
    assert training_verdict({**HEALTHY, "pretext_top1": 0.5}, 8).status == "untrained"  # chance 1/9, bar 0.556
    assert training_verdict({**HEALTHY, "pretext_top1": 0.6}, 8).status == "unknown"


def test_without_val_a_learned_pretext_task_says_to_run_with_val():
    v = training_verdict(HEALTHY, 1024)
    assert v.status == "unknown"
    assert "--val" in v.line


@pytest.mark.parametrize(
    ("knn", "random_knn", "status"),
    [(0.70, 0.60, "better"), (0.61, 0.60, "same"), (0.50, 0.60, "worse")],
)
def test_val_knn_against_a_random_network_outside_and_inside_the_noise(knn, random_knn, status):
    # 400 queries: 2 * hypot(se, se) is about 0.068 at these accuracies
    v = training_verdict(HEALTHY, 1024, knn, random_knn, 400)
    assert v.status == status
    assert f"{knn:.3f}" in v.line and f"{random_knn:.3f}" in v.line


def test_the_noise_band_is_two_binomial_standard_errors_of_the_difference():
    se = knn_standard_error(0.6, 400)
    assert se == pytest.approx(math.sqrt(0.24 / 400))
    half = knn_standard_error(0.5, 400)  # the largest error, and flat near 0.5: the band barely moves with knn
    band = 2 * math.hypot(half, half)
    assert training_verdict(HEALTHY, 1024, 0.5 + band * 1.01, 0.5, 400).status == "better"
    assert training_verdict(HEALTHY, 1024, 0.5 + band * 0.99, 0.5, 400).status == "same"
    assert training_verdict(HEALTHY, 1024, 0.5 - band * 1.01, 0.5, 400).status == "worse"


def test_no_training_step_means_no_verdict():
    assert training_verdict(None, 1024).status == "unknown"
