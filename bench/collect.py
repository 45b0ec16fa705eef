"""Writes docs/BENCHMARKS.md: the summary below followed by every bench/results/*.md, in a fixed order.

python -m bench.collect
"""

from __future__ import annotations

from pathlib import Path

HERE = Path(__file__).parent
ORDER = [
    "train_throughput",
    "decode_pipeline",
    "train_quality",
    "learning_curve",
    "train_step_speed",
    "bf16_conv_check",
    "compile_speed",
    "batch_augment_speed",
    "index_throughput",
    "search_latency",
    "emoji_recall",
    "dedup_quality",
    "dedup_threshold",
    "dedup_family",
    "dedup_family_grid",
    "feature_votes_scale",
    "dedup_train_size",
    "dedup_scale",
    "eval_samples",
    "app_load",
]


def main() -> None:
    summary = (HERE / "SUMMARY.md").read_text()
    parts = [summary.rstrip() + "\n"]
    names = ORDER + sorted(p.stem for p in (HERE / "results").glob("*.md") if p.stem not in ORDER)
    for name in names:
        f = HERE / "results" / f"{name}.md"
        if f.exists():
            parts.append(f.read_text().rstrip() + "\n")
    out = HERE.parent / "docs" / "BENCHMARKS.md"
    out.write_text("\n".join(parts))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
