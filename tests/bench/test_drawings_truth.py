"""The distinct-drawings benchmark scores a group by its pairs against the artworks read by eye."""

from __future__ import annotations

import json

from bench.dedup.drawings import TRUTH, pair_kinds

TRUTH_SETS = {"artworks": [["s/led_red.png", "s/led_green.png"]], "ambiguous": [["s/moon1.png", "s/moon2.png"]]}


def test_pairs_are_true_ambiguous_or_false() -> None:
    groups = [
        ["s/led_red.png", "s/led_green.png"],  # one artwork: 1 true pair
        ["s/moon1.png", "s/moon2.png", "s/clock1.png"],  # 1 ambiguous, 2 false pairs
    ]
    assert pair_kinds(groups, TRUTH_SETS) == {"true": 1, "ambiguous": 1, "false": 2, "false_groups": 1}


def test_a_pair_across_two_artworks_is_false() -> None:
    truth = {"artworks": [["a.png", "b.png"], ["c.png", "d.png"]], "ambiguous": []}
    assert pair_kinds([["a.png", "c.png"]], truth) == {"true": 0, "ambiguous": 0, "false": 1, "false_groups": 1}


def test_the_truth_file_names_each_file_once_per_kind() -> None:
    truth = json.loads(TRUTH.read_text())
    for kind in ("artworks", "ambiguous"):
        files = [f for s in truth[kind] for f in s]
        assert len(files) == len(set(files)), kind
        assert all(len(s) >= 2 for s in truth[kind])
