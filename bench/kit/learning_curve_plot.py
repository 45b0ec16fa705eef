"""docs/learning_curve.png from bench/results/learning_curve.json: what a searcher sees (clip-art precision@10: the
share of a query's first 10 results in its category) per CPU-minute of training (`--x epochs`: per pass over the
training folder, pairs / pictures, to compare folders of different sizes), kNN top-1, MAP@R and emoji recall@10; one
colour per setting, one line per run (its checkpoints, then its end, drawn larger: the only point whose learning rate
has decayed), dashed lines for the random-init network of each architecture; prints the markdown table. Results
written before precision@10 was measured plot the figures they have.

    python -m bench.kit.learning_curve_plot [--result RESULT.json ...] [--x cpu|epochs] [--out docs/learning_curve.png]
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

BENCH = Path(__file__).resolve().parents[1]
METRICS = (
    ("precision_at_10", "clip-art first-page precision (P@10)"),
    ("knn_top1", "clip-art kNN top-1"),
    ("map_at_r", "clip-art MAP@R"),
    ("emoji_recall_at_10", "emoji cross-style recall@10"),
)


def plot(result: dict, out: Path, x: str = "cpu") -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib import ticker

    rows = result["rows"]
    metrics = [(k, t) for k, t in METRICS if any(_finite(r.get(k)) for r in rows)]
    fig, axes = plt.subplots(1, len(metrics), figsize=(5.5 * len(metrics), 4), dpi=100, squeeze=False)
    for ax, (key, title) in zip(axes[0], metrics, strict=True):
        drawn: set[str] = set()
        for i, name in enumerate(dict.fromkeys(r["setting"] for r in rows)):
            mine = [r for r in rows if r["setting"] == name]
            colour = f"C{i % 10}"
            for j, run in enumerate(dict.fromkeys(r.get("run", "") for r in mine)):
                points = sorted((r for r in mine if r.get("run", "") == run), key=lambda r: r["steps"])
                xs = [minutes(r) if x == "cpu" else passes(r) for r in points]
                ax.plot(xs, [r.get(key) for r in points], "o-", color=colour, ms=4, label=None if j else name)
                ax.plot(xs[-1:], [points[-1].get(key)], "o", color=colour, ms=8)
            base = result["random_init"][mine[0]["random_init"]].get(key)
            if _finite(base) and mine[0]["random_init"] not in drawn:
                drawn.add(mine[0]["random_init"])
                ax.axhline(base, color="grey", ls="--", lw=1, label=f"random init ({mine[0]['random_init']})")
        cpu = all(r.get("cpu_s") is not None for r in rows)
        if x == "epochs":
            ax.set_xscale("log")
            ax.xaxis.set_major_formatter(ticker.FormatStrFormatter("%g"))
            ax.xaxis.set_minor_formatter(ticker.NullFormatter())
            ax.set_xlabel("passes over the training folder (pairs per picture)")
        else:
            ax.set_xlabel("training, CPU minutes (one thread)" if cpu else "training, minutes (wall)")
        ax.set_title(title)
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, format="png")
    plt.close(fig)


def minutes(row: dict) -> float:
    """The row's training cost: CPU minutes of its one torch thread where recorded, else its wall-clock budget."""
    return row["cpu_s"] / 60 if row.get("cpu_s") is not None else row["budget_min"]


def named(row: dict, train_images: int, say_size: bool) -> dict:
    """The row with its folder's picture count attached; with `say_size` (results of folders of different sizes
    drawn together) its setting names the size too, unless it already does."""
    setting = row["setting"]
    if say_size and "pictures" not in setting:
        setting = f"{setting}, {train_images:,} pictures"
    return row | {"train_images": train_images, "setting": setting}


def passes(row: dict) -> float:
    """The row's passes over its training folder: pairs / pictures (`train_images`, attached from its result's data
    by main()); a checkpoint's own count, not the run's end."""
    return row["pairs"] / row["train_images"]


def _finite(v: object) -> bool:
    return isinstance(v, (int, float)) and not math.isnan(v)


def _f(v: object, fmt: str = ".3f") -> str:
    return format(v, fmt) if _finite(v) else "-"


def table(result: dict) -> str:
    """The markdown table of the result: one row per run, its random init beside it; P@10 is clip-art precision@10
    (noise: two paired standard errors of its difference from the random init)."""
    lines = [
        "| setting | minutes (wall) | CPU min | steps | pairs | img/s | P@10 | random init | diff (noise) | kNN top-1 "
        "| random init | diff | MAP@R | random init | emoji R@10 | random init | diff |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in sorted(result["rows"], key=lambda r: (r["setting"], r["steps"])):
        base = result["random_init"][r["random_init"]]
        p10 = r.get("precision_at_10")
        diff = f"{r['p10_minus_random']:+.3f} (+-{r['p10_noise']:.3f})" if _finite(p10) else "-"
        cpu_min = _f((r.get("cpu_s") or math.nan) / 60, ".1f")
        lines.append(
            f"| {r['setting']} | {r['budget_min']:.3g} | {cpu_min} | {r['steps']} | {r['pairs']} | "
            f"{r['img_per_s']:.1f} | "
            f"{_f(p10)} | {_f(base.get('precision_at_10'))} | {diff} | "
            f"{r['knn_top1']:.3f} | {base['knn_top1']:.3f} | {r['knn_minus_random']:+.3f} | "
            f"{_f(r.get('map_at_r'))} | {_f(base.get('map_at_r'))} | "
            f"{_f(r['emoji_recall_at_10'])} | {_f(base['emoji_recall_at_10'])} | "
            f"{_f(r['emoji_minus_random'], '+.3f')} |"
        )
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument(
        "--result", type=Path, action="append", default=[], help="a result JSON; several are drawn together"
    )
    ap.add_argument("--out", type=Path, default=BENCH.parent / "docs" / "learning_curve.png")
    ap.add_argument("--x", choices=("cpu", "epochs"), default="cpu", help="CPU minutes, or passes over the folder")
    a = ap.parse_args()
    results = [json.loads(p.read_text()) for p in a.result or [BENCH / "results" / "learning_curve.json"]]
    sizes = {res["data"]["train_images"] for res in results}
    result = {
        "rows": [named(r, res["data"]["train_images"], len(sizes) > 1) for res in results for r in res["rows"]],
        "random_init": {k: v for res in results for k, v in res["random_init"].items()},
    }
    plot(result, a.out, a.x)
    print(f"wrote {a.out}")
    print(table(result))


if __name__ == "__main__":
    main()
