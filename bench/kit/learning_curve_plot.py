"""docs/learning_curve.png from bench/results/learning_curve.json: kNN top-1 and emoji recall@10 against the
training budget, one line per setting, dashed lines for the random-init network of each architecture; prints
the markdown table.

    python -m bench.kit.learning_curve_plot [--result bench/results/learning_curve.json] [--out docs/learning_curve.png]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

BENCH = Path(__file__).resolve().parents[1]


def plot(result: dict, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4), dpi=100)
    metrics = (("knn_top1", "clip-art kNN top-1"), ("emoji_recall_at_10", "emoji cross-style recall@10"))
    for ax, (key, title) in zip(axes, metrics, strict=True):
        for i, name in enumerate(dict.fromkeys(r["setting"] for r in result["rows"])):
            rows = sorted((r for r in result["rows"] if r["setting"] == name), key=lambda r: r["budget_min"])
            colour = f"C{i}"
            ax.plot([r["budget_min"] for r in rows], [r[key] for r in rows], "o-", color=colour, label=name)
            base = result["random_init"][rows[0]["random_init"]][key]
            ax.axhline(base, color=colour, ls="--", lw=1, label=f"random init ({rows[0]['random_init']})")
        ax.set_xlabel("training budget, minutes (CPU)")
        ax.set_title(title)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, format="png")
    plt.close(fig)


def table(result: dict) -> str:
    """The markdown table of the result: one row per run, its random init beside it."""
    lines = [
        "| setting | budget (min) | steps | pairs | img/s | kNN top-1 | random init | diff "
        "| emoji R@10 | random init | diff |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in sorted(result["rows"], key=lambda r: (r["setting"], r["budget_min"])):
        base = result["random_init"][r["random_init"]]
        lines.append(
            f"| {r['setting']} | {r['budget_min']:g} | {r['steps']} | {r['pairs']} | {r['img_per_s']:.1f} | "
            f"{r['knn_top1']:.3f} | {base['knn_top1']:.3f} | {r['knn_minus_random']:+.3f} | "
            f"{r['emoji_recall_at_10']:.3f} | {base['emoji_recall_at_10']:.3f} | {r['emoji_minus_random']:+.3f} |"
        )
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--result", type=Path, default=BENCH / "results" / "learning_curve.json")
    ap.add_argument("--out", type=Path, default=BENCH.parent / "docs" / "learning_curve.png")
    a = ap.parse_args()
    result = json.loads(a.result.read_text())
    plot(result, a.out)
    print(f"wrote {a.out}")
    print(table(result))


if __name__ == "__main__":
    main()
