"""`retrieval eval dedup --plot FILE`: the precision-recall curves as a PNG, one line per method."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from plumbing.atomic import atomic_write_bytes
from retrieval.errors import InputError

if TYPE_CHECKING:
    from retrieval.evaluate.dedup import DedupScores


def plot_pr_curves(methods: Sequence[DedupScores], path: Path) -> None:
    """Recall on x, precision on y; each method's best-F1 point marked with a dot, its chosen threshold with
    a cross. Written atomically (a temp file renamed over `path`); InputError when it cannot be written."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 5), dpi=100)
    for m in methods:
        recall = [p.score.recall for p in m.curve]
        precision = [p.score.precision for p in m.curve]
        (line,) = ax.plot(recall, precision, marker=".", label=f"{m.method} (best F1 {m.best.score.f1:.3f})")
        ax.plot([m.best.score.recall], [m.best.score.precision], "o", color=line.get_color(), markersize=9)
        ax.plot([m.at_threshold.recall], [m.at_threshold.precision], "x", color=line.get_color(), markersize=9)
    ax.set_xlim(0, 1.02)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("recall (pairs)")
    ax.set_ylabel("precision (pairs)")
    ax.set_title("Duplicate pairs: precision-recall over thresholds")
    ax.legend(loc="lower left")
    fig.tight_layout()
    try:
        atomic_write_bytes(Path(path), lambda f: fig.savefig(f, format="png"))
    except OSError as e:
        raise InputError(f"{path}: cannot write the plot ({e.strerror or e})") from None
    finally:
        plt.close(fig)
