"""`retrieval eval` on the bundled samples: what a short CPU training run buys over a random-init encoder
(and, for duplicates, over perceptual hashing), every figure straight from the command a user runs.

    python -m bench.search.eval_samples [--work /tmp/eval-samples] [--budget 3] [--reuse]

1. `retrieval train samples --time-budget BUDGET --batch-size 32 --device cpu` (the demo's run; --reuse keeps
   WORK/run).
2. `retrieval index samples` and `retrieval index samples/clipart` with that encoder.
3. `retrieval eval dedup --truth samples/duplicates.json --compare`, `retrieval eval knn --compare` on the
   clip art (8 classes of 20), `retrieval eval pairs --compare` with each planted edited copy as the query
   of its original, all `--format json`.
Writes bench/results/eval_samples.json and .md.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from bench.kit.eval_cli import run
from bench.kit.results import publish
from moco.measure.metrics_log import last_step, read_metrics

ROOT = Path(__file__).resolve().parents[2]
SAMPLES = ROOT / "samples"
CPU = "AMD EPYC, avx512_bf16, no AMX"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--work", type=Path, default=Path("/tmp/eval-samples"))
    ap.add_argument("--budget", type=float, default=3.0)
    ap.add_argument("--reuse", action="store_true", help="keep the encoder a previous run trained in WORK/run")
    a = ap.parse_args()
    a.work.mkdir(parents=True, exist_ok=True)
    run_dir = a.work / "run"
    load = [round(x, 1) for x in os.getloadavg()]
    if not (a.reuse and (run_dir / "encoder.json").exists()):
        run(
            "train",
            str(SAMPLES),
            "--out",
            str(run_dir),
            "--time-budget",
            str(a.budget),
            "--batch-size",
            "32",
            "--device",
            "cpu",
            "--no-resume",
        )
    steps = last_step(read_metrics(run_dir))
    for folder, name in ((SAMPLES, "samples"), (SAMPLES / "clipart", "clipart")):
        run("index", str(folder), "--model", str(run_dir), "--index", str(a.work / name), "--rebuild")
    truth = json.loads((SAMPLES / "duplicates.json").read_text())["groups"]
    pairs = [[g[1], g[0]] for g in truth if g[1].startswith("photos/edited/")]
    (a.work / "pairs.json").write_text(json.dumps(pairs))
    samples, clipart = str(a.work / "samples"), str(a.work / "clipart")
    truth_file, pairs_file = str(SAMPLES / "duplicates.json"), str(a.work / "pairs.json")
    result = {
        "machine": f"{os.cpu_count()} CPU cores, no GPU",
        "train": {"budget_min": a.budget, "steps": steps, "load_at_start": load, "reused": a.reuse},
        "dedup": json.loads(
            run("eval", "dedup", "--index", samples, "--truth", truth_file, "--compare", "--format", "json")
        ),
        "knn": json.loads(run("eval", "knn", "--index", clipart, "--compare", "--format", "json")),
        "pairs": json.loads(
            run("eval", "pairs", "--index", samples, "--pairs", pairs_file, "--compare", "--format", "json")
        ),
    }
    publish("eval_samples", result, markdown(result))


def markdown(r: dict) -> str:
    t, knn = r["train"], r["knn"]["settings"]
    reuse = " --reuse" if t["reused"] else ""
    lines = [
        "## `retrieval eval` on the bundled samples: trained vs random init vs PHash",
        "",
        f"`python -m bench.search.eval_samples --budget {t['budget_min']:g}{reuse}` on {r['machine']} "
        f"({CPU}; load average "
        f"{t['load_at_start']} at the start). Encoder: `retrieval train samples --time-budget {t['budget_min']:g}"
        f" --batch-size 32 --device cpu` ({t['steps']} steps, preset moco-v2); random init: the same architecture,"
        " input size and preprocessing"
        " (`--compare`). Every figure is the JSON of the `retrieval eval` command named in its table.",
        "",
        "`retrieval eval dedup --index indexes/samples --truth samples/duplicates.json --compare` (206 files, "
        f"{r['dedup']['true_groups']} true groups; at the default threshold, verified; best over thresholds by "
        "the score alone; PHash at 10 bits and its best distance):",
        "",
        "| method | precision | recall | F1 | best F1 (at) |",
        "|---|---|---|---|---|",
    ]
    for m in r["dedup"]["methods"]:
        s, b = m["at_threshold"], m["best"]
        lines.append(
            f"| {m['method']} | {s['precision']:.3f} | {s['recall']:.3f} | {s['f1']:.3f} | "
            f"{b['f1']:.3f} ({b['threshold']:g}) |"
        )
    lines += [
        "",
        "`retrieval eval knn --index indexes/clipart --compare` (samples/clipart: 8 classes of 20, leave one out, "
        f"kNN k {knn['k_used']} (the smallest class minus one), T {knn['temperature']}):",
        "",
        "| method | kNN top-1 | MAP@R | recall@1 | recall@5 | recall@10 |",
        "|---|---|---|---|---|---|",
    ]
    for m in r["knn"]["methods"]:
        o = m["overall"]
        lines.append(
            f"| {m['method']} | {o['knn_top1']:.3f} | {o['map_at_r']:.3f} | {o['recall@1']:.3f} | "
            f"{o['recall@5']:.3f} | {o['recall@10']:.3f} |"
        )
    lines += [
        "",
        f"`retrieval eval pairs --index indexes/samples --pairs pairs.json --compare` ({r['pairs']['pairs']} pairs:"
        " each planted edited copy in samples/photos/edited the query of its original):",
        "",
        "| method | recall@1 | recall@10 | mAP |",
        "|---|---|---|---|",
    ]
    for m in r["pairs"]["methods"]:
        lines.append(f"| {m['method']} | {m['recall@1']:.3f} | {m['recall@10']:.3f} | {m['map']:.3f} |")
    d = {m["method"]: m for m in r["dedup"]["methods"]}
    ratio = d["index"]["at_threshold"]["f1"] / max(1e-9, d["phash"]["at_threshold"]["f1"])
    lines += [
        "",
        f"F1 at the defaults, trained encoder / PHash: {ratio:.2f}x. These folders are tiny (6 planted pairs,"
        " 160 clip-art images), so one query or pair moves a figure by 0.01 to 0.17: they show what the"
        " command reports, not a quality claim; docs/BENCHMARKS.md's near-duplicate section is the large test.",
        "",
        "bench/dedup/quality.py takes its headline P/R/F1 from `retrieval eval dedup`, and bench/training/quality.py"
        " reports `retrieval eval knn` beside its own protocol (both through bench/kit/eval_cli.py). The other quality"
        " figures come from the same functions (retrieval.evaluate.metrics): kNN top-1 in bench/kit/knn_quality.py and"
        " train_quality's holdout column (every 5th image held out, k 20, T 0.07), pairwise P/R/F1 and best F1 in"
        " the other near-duplicate benchmarks (bench/kit/neardup_eval.py, bench/kit/dedup_scoring.py) and in"
        " dedup_quality's descriptor tables. Checked unchanged when they moved: train_quality's"
        " score() and knn_quality's knn_top1() on samples/clipart with a random-init 128-px ResNet-18 gave GeM"
        " 0.3125, average pooling 0.28125 and 0.3125 before and after; the old and new pairwise_prf and"
        " best_over_thresholds agree on 300 random predictions.",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
