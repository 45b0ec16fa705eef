"""Training resolution for copy detection: `retrieval train --preset copy-detection` with the same time budget
at several training sizes, each scored by dedup on the benchmark folders (seed 0, and the held-out seed 1).

    python -m bench.dedup.quality ~/.cache/retrieval-datasets          # first: builds WORK, trains WORK/run
    python -m bench.dedup.threshold ~/.cache/retrieval-datasets        # and the seed-1 folder
    python -m bench.dedup.train_size [--sizes 32 128] [--budget 10]

A smaller input gives more steps per minute on a CPU. Each encoder indexes at its training size (the default
of `retrieval train`). The 64-px row is WORK/run, the encoder dedup_quality.py trained with the CPU defaults.
Reported: pairwise F1 at the default threshold with and without verification, and the best F1 of the
normalised score over thresholds (the descriptor alone).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

from bench.kit.dedup_scoring import best_over_thresholds, embed_folder, folder_verifier, scorer
from bench.kit.eval_cli import run
from bench.kit.neardup_eval import pairwise_prf
from bench.kit.results import publish
from moco.export import read_spec
from moco.measure.metrics_log import last_step, read_metrics
from retrieval.dedup.groups import BACKGROUND_RANK
from retrieval.dedup.threshold import SCORE_PRESETS as THRESHOLD_PRESETS
from retrieval.searching.searcher import SearchIndex


def score(encoder: Path, folder: Path) -> dict:
    """F1 at the default threshold (verified and not) and the best normalised F1, on one benchmark folder
    (its catalog from folder/index: sizes and hashes for the keeper rule)."""
    images = folder / "images"
    truth = json.loads((folder / "truth.json").read_text())["groups"]
    catalog = {r.path: r for r in SearchIndex.open(folder / "index").records}
    rel, vecs = embed_folder(encoder, images)
    t = THRESHOLD_PRESETS["default"]
    plain = scorer(rel, vecs, BACKGROUND_RANK, catalog)
    return {
        "verified": pairwise_prf(scorer(rel, vecs, BACKGROUND_RANK, catalog, folder_verifier(images, rel))(t), truth),
        "no_verify": pairwise_prf(plain(t), truth),
        "best_normalised": best_over_thresholds(plain, np.arange(-0.1, 0.8, 0.01), truth),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--work", type=Path, default=Path("/tmp/dedup-bench"), help="dedup_quality.py's --work")
    ap.add_argument("--held-out", type=Path, default=Path("/tmp/dedup-bench-seed1"), help="dedup_threshold's")
    ap.add_argument("--sizes", type=int, nargs="+", default=[32, 128])
    ap.add_argument("--budget", type=float, default=10.0)
    a = ap.parse_args()
    base = json.loads((a.work / "run" / "bench_train.json").read_text())
    encoders = {read_spec(a.work / "run").embed_size: (a.work / "run", base)}
    for size in a.sizes:
        out = a.work / f"run-{size}px"
        load = [round(x, 1) for x in os.getloadavg()]
        t0 = time.time()
        run("train", str(a.work / "images"), "--out", str(out), "--preset", "copy-detection", "--image-size",
            str(size), "--time-budget", str(a.budget), "--device", "cpu", "--no-resume")  # fmt: skip
        steps = last_step(read_metrics(out))
        encoders[size] = (out, {"steps": steps, "seconds": round(time.time() - t0), "load": load})
    result = {}
    for size, (enc, info) in sorted(encoders.items()):
        result[str(size)] = {"train": info, "seed 0": score(enc, a.work), "seed 1": score(enc, a.held_out)}
        print(size, json.dumps(result[str(size)]["seed 0"]["verified"]), file=sys.stderr, flush=True)
    publish("dedup_train_size", result, markdown(result, a))


def markdown(r: dict, a: argparse.Namespace) -> str:
    lines = [
        "## Training resolution for copy detection",
        "",
        f"`python -m bench.dedup.train_size --sizes {' '.join(map(str, a.sizes))} --budget {a.budget:g}` after "
        "bench/dedup/quality.py and bench/dedup/threshold.py. `retrieval train --preset copy-detection "
        f"--time-budget {a.budget:g} --image-size N` on the seed-0 benchmark folder, each encoder indexing at its "
        "training size; scored on that folder (seed 0) and on the held-out seed-1 folder. F1 at the default "
        f"threshold ({THRESHOLD_PRESETS['default']}) with verification (the default) and without, and the best "
        "F1 of the normalised score over thresholds (the descriptor alone).",
        "",
        "| train size | steps | load at start | "
        + " | ".join(f"{s}: verified / no-verify / best" for s in ("seed 0", "seed 1"))
        + " |",
        "|---|---|---|---|---|",
    ]
    for size, row in r.items():
        cells = [
            " / ".join(f"{row[s][k]['f1']:.3f}" for k in ("verified", "no_verify", "best_normalised"))
            for s in ("seed 0", "seed 1")
        ]
        lines.append(f"| {size} px | {row['train']['steps']} | {row['train']['load']} | " + " | ".join(cells) + " |")
    lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
