"""Was the run worth it? One verdict from the label-free health of the last epoch and, with --val, what a searcher
sees: the share of a held-out query's first 10 results in its category, for the trained encoder against a random-init
network of the same architecture on the same labelled folder, with the noise of that difference (query by query)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

# pretext top-1 below this multiple of chance (1 / (1 + K)), or for tiny K below halfway from chance to 1, means
# nothing was learned
PRETEXT_OVER_CHANCE = 10.0
NOISE_SE = 2.0  # a difference within this many standard errors is noise


@dataclass(frozen=True)
class FirstPage:
    """Each held-out query's first-page precision (the share of its first k results in its category) for the trained
    and for a random network, the same queries in the same order."""

    trained: tuple[float, ...]
    random: tuple[float, ...]
    k: int = 10

    def __post_init__(self) -> None:
        if len(self.trained) != len(self.random) or not self.trained:
            n, m = len(self.trained), len(self.random)
            raise ValueError(f"Illegal first pages: {n} and {m} queries (need as many, at least one)")

    @property
    def precision(self) -> float:
        return sum(self.trained) / len(self.trained)

    @property
    def random_precision(self) -> float:
        return sum(self.random) / len(self.random)

    @property
    def noise(self) -> float:
        """NOISE_SE standard errors of the mean query-by-query difference (paired: both networks answer the same
        queries, so what one query makes easy for both cancels)."""
        return NOISE_SE * paired_standard_error(self.trained, self.random)


def paired_standard_error(a: tuple[float, ...], b: tuple[float, ...]) -> float:
    """Standard error of mean(a - b) over paired values (sample std of the differences / sqrt(n)); 1.0 below two
    pairs (no estimate: nothing is beyond the noise)."""
    n = len(a)
    if n < 2:
        return 1.0
    d = [x - y for x, y in zip(a, b, strict=True)]
    mean = sum(d) / n
    return math.sqrt(sum((v - mean) ** 2 for v in d) / (n - 1) / n)


@dataclass(frozen=True)
class Verdict:
    status: str  # "better" | "same" | "worse" | "collapsed" | "untrained" | "unknown"
    line: str  # one sentence for the person who ran the training
    knn_top1: float | None = None
    random_knn_top1: float | None = None
    precision_at_10: float | None = None  # the share of the first 10 results in the query's category (--val)
    random_precision_at_10: float | None = None
    noise: float | None = None  # the band within which the trained-minus-random difference is noise


def knn_standard_error(p: float, n_queries: int) -> float:
    """Standard error of an accuracy p measured on n queries (binomial)."""
    return math.sqrt(max(p * (1.0 - p), 1e-12) / max(1, n_queries))


def training_verdict(
    health: dict[str, Any] | None,
    queue_size: int,
    knn_top1: float | None = None,
    random_knn_top1: float | None = None,
    n_val_queries: int = 0,
    first_page: FirstPage | None = None,
) -> Verdict:
    """health: the last `EpochHealth.summary` record (pretext_top1, dim_std, dim_std_healthy, collapse_warning);
    knn_top1 / random_knn_top1: the --val scores of the trained and of a random-init encoder (None without --val);
    n_val_queries: held-out images the kNN scores were measured on; first_page: the --val first-page precision of
    each held-out query for both networks. With first_page the verdict speaks in it (what a searcher sees), with kNN
    top-1 beside it; without, in kNN top-1."""
    if health is None:
        return Verdict("unknown", "No training step ran, so there is nothing to judge.")
    if health.get("collapse_warning"):
        return Verdict(
            "collapsed",
            f"Not worth using: the embeddings collapsed (spread {health['dim_std']:.4f}, healthy about "
            f"{health['dim_std_healthy']:.4f}); train again with a lower learning rate.",
            knn_top1,
            random_knn_top1,
        )
    chance = 1.0 / (1 + queue_size)
    pretext = float(health["pretext_top1"])
    if pretext < min(PRETEXT_OVER_CHANCE * chance, (1.0 + chance) / 2):
        return Verdict(
            "untrained",
            f"Not worth using: the training task was not learned (pretext top-1 {pretext:.4f}, chance {chance:.4f}); "
            "a random network would do as well.",
            knn_top1,
            random_knn_top1,
        )
    if knn_top1 is None or random_knn_top1 is None:
        return Verdict(
            "unknown",
            f"The encoder learned its training task (pretext top-1 {pretext:.3f}, chance {chance:.4f}); whether search "
            "beats a random network shows only with --val LABELLED_DIR.",
        )
    if first_page is not None:
        return _first_page_verdict(first_page, knn_top1, random_knn_top1)
    diff = knn_top1 - random_knn_top1
    noise = NOISE_SE * math.hypot(
        knn_standard_error(knn_top1, n_val_queries), knn_standard_error(random_knn_top1, n_val_queries)
    )
    scores = f"kNN top-1 {knn_top1:.3f} against {random_knn_top1:.3f} for a random network of the same kind"
    if diff > noise:
        return Verdict("better", f"Worth it: {scores} ({diff:+.3f}).", knn_top1, random_knn_top1)
    if diff < -noise:
        return Verdict(
            "worse",
            f"Not worth it: {scores} ({diff:+.3f}); a random network searches better, so train longer.",
            knn_top1,
            random_knn_top1,
        )
    return Verdict(
        "same",
        f"Not yet worth it: {scores}, a difference of {diff:+.3f} within the noise of {len_text(n_val_queries)} "
        f"(+-{noise:.3f}); train longer.",
        knn_top1,
        random_knn_top1,
    )


def _first_page_verdict(page: FirstPage, knn_top1: float, random_knn_top1: float) -> Verdict:
    p, r, noise = page.precision, page.random_precision, page.noise
    diff = p - r
    scores = (
        f"of the first {page.k} results, {p:.1%} share the query's category, against {r:.1%} for a random network"
        f" of the same kind ({diff:+.3f}, noise +-{noise:.3f} over {len_text(len(page.trained))};"
        f" kNN top-1 {knn_top1:.3f} against {random_knn_top1:.3f})"
    )
    figures = (knn_top1, random_knn_top1, p, r, noise)
    if diff > noise:
        return Verdict("better", f"Worth it: {scores}.", *figures)
    if diff < -noise:
        return Verdict("worse", f"Not worth it: {scores}; a random network searches better, so train longer.", *figures)
    return Verdict("same", f"Not yet worth it: {scores}, a difference within the noise; train longer.", *figures)


def len_text(n: int) -> str:
    return f"{n} held-out image{'s' if n != 1 else ''}"
