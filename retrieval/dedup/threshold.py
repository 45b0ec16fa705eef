"""The dedup threshold: a preset name or a score, parsed once from the person's text into a `Threshold`.

A score applies to what `retrieval dedup` compares: with a background rank r > 0 (the default) the cosine
normalised against each image's r-th nearest neighbour (`near_pairs.normalised_scores`: 0 = as close as that,
1 = identical), with r = 0 the plain cosine. "Exact copies only" has one encoding: `score` None.
"""

from __future__ import annotations

from dataclasses import dataclass

from plumbing.errors import InputError

# Thresholds on the normalised score. "default" is near the best-F1 threshold on a second near-duplicate folder
# (bench/kit/neardup_data.py with seed 1: other clip art, other edits), held out from the seed-0 folder that
# bench/dedup/quality.py reports on (docs/BENCHMARKS.md); "strict" keeps precision above 0.9 there.
SCORE_PRESETS: dict[str, float] = {
    "strict": 0.40,
    "default": 0.28,
    "loose": 0.0,
}
EXACT = "exact"  # hash-only: identical bytes, no score
THRESHOLD_PRESETS: dict[str, float | None] = {EXACT: None, **SCORE_PRESETS}
CUSTOM = "custom"


@dataclass(frozen=True)
class Threshold:
    """`score` None: exact (same bytes) duplicates only; else a score in (-1, 1]. `name`: the preset it
    came from, or "custom" for a number."""

    score: float | None
    name: str = CUSTOM

    def __post_init__(self) -> None:
        if self.name in THRESHOLD_PRESETS:
            if self.score != THRESHOLD_PRESETS[self.name]:
                raise ValueError(f"preset {self.name!r} is {THRESHOLD_PRESETS[self.name]}, not {self.score}")
        elif self.name != CUSTOM:
            raise ValueError(f"threshold name {self.name!r}: one of {', '.join(THRESHOLD_PRESETS)} or {CUSTOM!r}")
        elif self.score is None:
            raise ValueError(f"a {CUSTOM} threshold needs a score; exact copies only is Threshold.preset({EXACT!r})")
        else:
            _check_score(self.score, self.score)

    @classmethod
    def preset(cls, name: str) -> Threshold:
        return cls(THRESHOLD_PRESETS[name], name)

    @classmethod
    def parse(cls, text: str) -> Threshold:
        """A preset name (any case) or a number in (-1, 1], as `retrieval dedup --threshold` takes it.
        InputError, naming the text, for anything else."""
        key = text.strip().lower()
        if key in THRESHOLD_PRESETS:
            return cls.preset(key)
        try:
            score = float(key)
        except ValueError:
            names = ", ".join(THRESHOLD_PRESETS)
            raise InputError(f"threshold {text!r}: expected one of {names} or a number in (-1, 1]") from None
        _check_score(score, text)
        return cls(score)

    @property
    def exact_only(self) -> bool:
        return self.score is None

    def __str__(self) -> str:
        """The preset name, or the number."""
        return self.name if self.name != CUSTOM else repr(self.score)


def _check_score(score: float, shown: object) -> None:
    if not -1.0 < score <= 1.0:  # also rejects nan
        raise InputError(f"threshold {shown!r}: a score threshold must be in (-1, 1]")


def check_threshold(value: object) -> None:
    """TypeError unless `value` is a Threshold: configs take the parsed value, never the person's text."""
    if not isinstance(value, Threshold):
        raise TypeError(f"threshold must be a Threshold (Threshold.parse(text)), got {value!r}")


DEFAULT_THRESHOLD = Threshold.preset("default")
