"""Was the run worth it? One verdict from the label-free health of the last epoch and, with --val, kNN top-1
of the trained encoder against a random-init network of the same architecture on the same labelled folder."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

# pretext top-1 below this multiple of chance (1 / (1 + K)), or for tiny K below halfway from chance to 1, means
# nothing was learned
PRETEXT_OVER_CHANCE = 10.0
NOISE_SE = 2.0  # a kNN difference within this many standard errors is noise


@dataclass(frozen=True)
class Verdict:
    status: str  # "better" | "same" | "worse" | "collapsed" | "untrained" | "unknown"
    line: str  # one sentence for the person who ran the training
    knn_top1: float | None = None
    random_knn_top1: float | None = None


def knn_standard_error(p: float, n_queries: int) -> float:
    """Standard error of an accuracy p measured on n queries (binomial)."""
    return math.sqrt(max(p * (1.0 - p), 1e-12) / max(1, n_queries))


def training_verdict(
    health: dict[str, Any] | None,
    queue_size: int,
    knn_top1: float | None = None,
    random_knn_top1: float | None = None,
    n_val_queries: int = 0,
) -> Verdict:
    """health: the last `EpochHealth.summary` record (pretext_top1, dim_std, dim_std_healthy, collapse_warning);
    knn_top1 / random_knn_top1: the --val scores of the trained and of a random-init encoder (None without --val);
    n_val_queries: held-out images the kNN scores were measured on."""
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


def len_text(n: int) -> str:
    return f"{n} held-out image{'s' if n != 1 else ''}"
