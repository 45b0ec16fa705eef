"""threshold: a preset name or a score in (-1, 1], parsed once; "exact copies only" is score None."""

from __future__ import annotations

import pytest

from plumbing.errors import InputError
from retrieval.dedup.threshold import (
    DEFAULT_THRESHOLD,
    SCORE_PRESETS,
    THRESHOLD_PRESETS,
    Threshold,
    check_threshold,
)


@pytest.mark.parametrize(
    "text, score", [("exact", None), ("strict", 0.40), ("default", 0.28), ("loose", 0.0), ("  STRICT ", 0.40)]
)
def test_every_preset_parses_to_its_score_and_name(text, score):
    t = Threshold.parse(text)
    assert (t.name, t.score) == (text.strip().lower(), score)
    assert t == Threshold.preset(t.name)
    assert t.exact_only is (score is None)
    assert str(t) == t.name


def test_presets_one_encoding_of_exact_and_ordered():
    assert set(THRESHOLD_PRESETS) == {"exact", "strict", "default", "loose"}
    assert THRESHOLD_PRESETS["exact"] is None and "exact" not in SCORE_PRESETS
    assert SCORE_PRESETS == {k: v for k, v in THRESHOLD_PRESETS.items() if k != "exact"}
    assert SCORE_PRESETS["strict"] > SCORE_PRESETS["default"] > SCORE_PRESETS["loose"]
    assert DEFAULT_THRESHOLD == Threshold.parse("default")


@pytest.mark.parametrize("text, score", [("0.85", 0.85), ("1", 1.0), ("-0.99", -0.99), ("0", 0.0), (" .5 ", 0.5)])
def test_a_number_is_a_custom_score(text, score):
    t = Threshold.parse(text)
    assert (t.name, t.score, t.exact_only) == ("custom", score, False)
    assert float(str(t)) == score  # the number, shown back as it was meant


@pytest.mark.parametrize("text", ["1.0000001", "1.5", "-1", "-1.5", "nan", "inf", "-inf"])
def test_scores_outside_the_bounds_are_refused(text):
    with pytest.raises(InputError, match=r"threshold .*must be in \(-1, 1\]"):
        Threshold.parse(text)


@pytest.mark.parametrize("text", ["abc", "medium", "", "0.9x", "exact only"])
def test_garbage_is_one_line_naming_the_text_and_the_presets(text):
    with pytest.raises(InputError) as e:
        Threshold.parse(text)
    message = str(e.value)
    assert "\n" not in message and repr(text) in message
    assert all(name in message for name in THRESHOLD_PRESETS)


def test_constructed_values_keep_the_one_encoding():
    assert Threshold(0.5) == Threshold.parse("0.5")
    with pytest.raises(ValueError, match="exact"):
        Threshold(None)  # exact copies only is the preset, never a custom None
    with pytest.raises(ValueError, match="preset"):
        Threshold(0.5, "strict")  # a preset name carries its own score
    with pytest.raises(ValueError, match="name"):
        Threshold(0.5, "medium")
    with pytest.raises(InputError, match="must be in"):
        Threshold(2.0)


def test_check_threshold_refuses_raw_text():
    check_threshold(Threshold.parse("exact"))
    for raw in ("default", 0.5, None):
        with pytest.raises(TypeError, match="Threshold.parse"):
            check_threshold(raw)
