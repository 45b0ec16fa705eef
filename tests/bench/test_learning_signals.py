"""bench.training.learning_signals: Spearman against known values, and a planted signal found among others."""

from __future__ import annotations

import math

import pytest

from bench.training.learning_signals import correlations, points, spearman


def test_spearman_is_one_for_any_increasing_map_and_minus_one_reversed() -> None:
    x = [0.1, 0.5, 0.2, 3.0, 1.0]
    assert spearman(x, [v**3 + 7 for v in x]) == pytest.approx(1.0)
    assert spearman(x, [-v for v in x]) == pytest.approx(-1.0)


def test_spearman_ties_take_their_mean_rank() -> None:
    # ranks of x: 0, 1.5, 1.5, 3; of y: 0, 1, 2, 3 -> Pearson of the ranks, by hand
    rx, ry = [0, 1.5, 1.5, 3], [0, 1, 2, 3]
    mx, my = sum(rx) / 4, sum(ry) / 4
    cov = sum((a - mx) * (b - my) for a, b in zip(rx, ry, strict=True))
    want = cov / math.sqrt(sum((a - mx) ** 2 for a in rx) * sum((b - my) ** 2 for b in ry))
    assert spearman([1, 2, 2, 5], [10, 20, 30, 40]) == pytest.approx(want)


def test_spearman_is_nan_when_it_cannot_be_said() -> None:
    assert math.isnan(spearman([1, 2], [1, 2]))
    assert math.isnan(spearman([1, 1, 1], [1, 2, 3]))
    with pytest.raises(ValueError, match="x has 3 values, y 2"):
        spearman([1, 2, 3], [1, 2])


def _row(run: str, steps: int, gain: float, rank: float, pretext: float) -> dict:
    return {
        "setting": "s",
        "run": run,
        "budget_min": 1.0,
        "steps": steps,
        "pairs": steps * 64,
        "cpu_s": steps * 0.7,
        "precision_at_10": 0.4 + gain,
        "p10_minus_random": gain,
        "p10_noise": 0.01,
        "last_health": {"effective_rank": rank, "pretext_top1": pretext, "dim_std": 0.05},
    }


def test_a_planted_signal_tracks_the_gain_across_folders_and_steps_do_not() -> None:
    # two folders: the small one gains more per step, so steps order the points wrongly across folders; the
    # effective rank is planted to follow the gain exactly; pretext top-1 runs against it
    small = [_row("a", s, g, 30 + 100 * g, 0.3 - g) for s, g in ((100, 0.01), (200, 0.03), (300, 0.05))]
    big = [_row("b", s, g, 30 + 100 * g, 0.3 - g) for s, g in ((1000, 0.0), (2000, 0.02), (3000, 0.04))]
    big.append(_row("b", 2500, 0.02, 32.0, 0.28) | {"setting": "s (key encoder)"})  # left out
    rows = points([{"data": {"train_images": 500}, "rows": small}, {"data": {"train_images": 9000}, "rows": big}])
    assert len(rows) == 6
    by = {c["signal"]: c for c in correlations(rows)}
    assert by["effective rank"]["spearman"] == pytest.approx(1.0)
    assert by["pretext top-1"]["spearman"] == pytest.approx(-1.0)
    assert by["steps"]["spearman"] < 0.9  # across folders steps misorder the gains
    assert by["steps"]["within_runs"] == pytest.approx(1.0)  # inside each run they do not
    assert by["steps"]["runs"] == 2
    assert by["neighbour agreement"]["points"] == 0
    assert by["passes over the folder"]["spearman"] == pytest.approx(
        spearman([r["pairs"] / r["train_images"] for r in rows], [r["p10_minus_random"] for r in rows])
    )
