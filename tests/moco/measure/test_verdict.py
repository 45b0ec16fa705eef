"""training_verdict on planted health records and kNN scores: each branch, and the noise band."""

from __future__ import annotations

import math

import pytest

from moco.measure.verdict import FirstPage, knn_standard_error, paired_standard_error, training_verdict

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


def test_first_page_noise_is_two_paired_standard_errors_by_hand():
    # differences 0.2, 0.0, 0.1, 0.1: mean 0.1, sample std sqrt(0.02 / 3), se = that / 2
    page = FirstPage((0.6, 0.4, 0.5, 0.5), (0.4, 0.4, 0.4, 0.4))
    assert page.precision == pytest.approx(0.5) and page.random_precision == pytest.approx(0.4)
    assert paired_standard_error(page.trained, page.random) == pytest.approx(math.sqrt(0.02 / 3) / 2)
    assert page.noise == pytest.approx(2 * math.sqrt(0.02 / 3) / 2)
    with pytest.raises(ValueError, match="Illegal first pages"):
        FirstPage((0.5,), (0.5, 0.4))


@pytest.mark.parametrize(
    ("trained", "status", "start"),
    [
        ((0.6, 0.4, 0.5, 0.5), "better", "Worth it: of the first 10 results, 50.0% share the query's category, "),
        ((0.5, 0.3, 0.4, 0.5), "same", "Not yet worth it: of the first 10 results, 42.5% share"),
        ((0.3, 0.3, 0.2, 0.3), "worse", "Not worth it: of the first 10 results, 27.5% share"),
    ],
)
def test_with_first_pages_the_verdict_speaks_of_what_a_searcher_sees(trained, status, start):
    page = FirstPage(trained, (0.4, 0.4, 0.4, 0.4))
    v = training_verdict(HEALTHY, 1024, 0.6, 0.55, 4, page)
    assert v.status == status
    assert v.line.startswith(start)
    assert "against 40.0% for a random network" in v.line and f"noise +-{page.noise:.3f}" in v.line
    assert "kNN top-1 0.600 against 0.550" in v.line
    assert (v.precision_at_10, v.random_precision_at_10) == (pytest.approx(page.precision), pytest.approx(0.4))


def test_first_pages_decide_even_where_knn_disagrees():
    # kNN far below random, but every query's first page is better: the verdict follows the first page
    page = FirstPage((0.7,) * 50, (0.4,) * 49 + (0.5,))
    assert training_verdict(HEALTHY, 1024, 0.3, 0.6, 50, page).status == "better"
