"""Choosing `retrieval dedup`'s default threshold on a held-out near-duplicate folder.

Builds a second folder with bench/kit/neardup_data.py (`--seed 1`: other clip art, other edits, other
distractors; the real photos are the same pool) and reports pairwise precision, recall and F1 by threshold
for the encoders that bench/dedup/quality.py made (its `--work` folder: `run/` trained, `random-init/`), so
the default in retrieval/dedup/groups.py is picked on data that the seed-0 report does not score.

    python -m bench.dedup.quality ~/.cache/retrieval-datasets        # first: trains the encoders
    python -m bench.dedup.threshold ~/.cache/retrieval-datasets      # then: F1 by threshold at seed 1
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from bench.kit.dedup_scoring import best_over_thresholds, embed_folder, folder_verifier, scorer
from bench.kit.eval_cli import run
from bench.kit.neardup_data import build
from bench.kit.neardup_eval import pairwise_prf
from bench.kit.results import publish
from retrieval.dedup import groups as dedup
from retrieval.dedup.groups import BACKGROUND_RANK
from retrieval.dedup.threshold import SCORE_PRESETS as THRESHOLD_PRESETS
from retrieval.dedup.verify import align as verify
from retrieval.dedup.verify.align import MIN_EDGE_CORRELATION
from retrieval.dedup.verify.rule import MIN_ALIGNMENT, VERIFY_BELOW
from retrieval.searching.searcher import SearchIndex

GRID = [round(t, 2) for t in np.arange(0.0, 0.52, 0.04)]
ALIGNMENTS = [round(m, 2) for m in np.arange(0.78, 0.95, 0.03)]
EDGES = [-1.0, 0.3, 0.4, 0.5, 0.6, 0.7]  # -1: the edge check off


@contextmanager
def patched(module: object, name: str, value: object) -> Iterator[None]:
    before = getattr(module, name)
    setattr(module, name, value)
    try:
        yield
    finally:
        setattr(module, name, before)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("src", type=Path)
    ap.add_argument("--encoders", type=Path, default=Path("/tmp/dedup-bench"), help="dedup_quality.py's --work")
    ap.add_argument("--work", type=Path, default=Path("/tmp/dedup-bench-seed1"))
    ap.add_argument("--seed", type=int, default=1)
    a = ap.parse_args()
    if not (a.work / "truth.json").exists():
        build(a.src, a.work, a.seed)
    truth = json.loads((a.work / "truth.json").read_text())["groups"]
    images = a.work / "images"
    encoders = {"trained": a.encoders / "run", "random init": a.encoders / "random-init"}
    run("index", str(images), "--model", str(encoders["trained"]), "--index", str(a.work / "index"), "--rebuild")
    catalog = {r.path: r for r in SearchIndex.open(a.work / "index").records}
    result: dict = {
        "seed": a.seed,
        "copies": sum(len(g) - 1 for g in truth),
        "originals": len(truth),
        "files": sum(1 for _ in images.rglob("*.jpg")),
        "encoders": {},
    }
    for name, enc in encoders.items():
        rel, vecs = embed_folder(enc, images)
        score = scorer(rel, vecs, BACKGROUND_RANK, catalog)
        verified = scorer(rel, vecs, BACKGROUND_RANK, catalog, folder_verifier(images, rel))
        rows = {str(t): pairwise_prf(score(t), truth) for t in GRID}
        rows_verified = {str(t): pairwise_prf(verified(t), truth) for t in GRID}
        best = best_over_thresholds(score, np.arange(-0.1, 0.8, 0.01), truth)
        best_verified = best_over_thresholds(verified, np.arange(0.0, 0.6, 0.02), truth)
        by_alignment = {}
        for m in ALIGNMENTS:  # the minimum alignment, at the default threshold
            with patched(dedup, "MIN_ALIGNMENT", m):
                by_alignment[str(m)] = pairwise_prf(verified(THRESHOLD_PRESETS["default"]), truth)
        by_edge = {}
        for e in EDGES:  # the minimum edge correlation, at the default threshold (a fresh verifier: it memoises)
            with patched(verify, "MIN_EDGE_CORRELATION", e):
                fresh = scorer(rel, vecs, BACKGROUND_RANK, catalog, folder_verifier(images, rel))
                by_edge[str(e)] = pairwise_prf(fresh(THRESHOLD_PRESETS["default"]), truth)
        result["encoders"][name] = {
            "by_threshold": rows,
            "best": best,
            "by_threshold_verified": rows_verified,
            "best_verified": best_verified,
            "by_min_alignment": by_alignment,
            "by_min_edge": by_edge,
        }
        print(name, {t: round(r["f1"], 3) for t, r in rows_verified.items()}, file=sys.stderr, flush=True)
    publish("dedup_threshold", result, markdown(result))


def prf(c: dict) -> str:
    return f"{c['precision']:.3f} / {c['recall']:.3f} / {c['f1']:.3f}"


def sweep_table(enc: dict, title: str, key: str, values: list[tuple[str, str]]) -> list[str]:
    """Markdown rows of one setting's sweep at the default threshold: (key in the results, label) per value."""
    names = list(enc)
    rows = ["| " + title + " | " + " | ".join(f"{n}: P / R / F1" for n in names) + " |", "|---|" + "---|" * len(names)]
    return rows + [f"| {label} | " + " | ".join(prf(enc[n][key][k]) for n in names) + " |" for k, label in values]


def markdown(r: dict) -> str:
    names = list(r["encoders"])
    enc = r["encoders"]
    lines = [
        "## Choosing the default dedup threshold on a held-out folder",
        "",
        f"`python -m bench.dedup.threshold ~/.cache/retrieval-datasets` (after bench/dedup/quality.py, whose "
        f"encoders it scores). Folder: bench/kit/neardup_data.py with seed {r['seed']}, {r['files']} images, "
        f"{r['originals']} originals with {r['copies']} edited copies, plus distractors; the #4 report above "
        "uses seed 0. Pairwise precision / recall / F1 of the groups `retrieval dedup` forms at each threshold "
        "on the normalised score. The preset now in retrieval/dedup/groups.py: "
        f"default {THRESHOLD_PRESETS['default']}, "
        f"strict {THRESHOLD_PRESETS['strict']}.",
        "",
        "| threshold | " + " | ".join(f"{n}{v}: P / R / F1" for n in names for v in ("", ", verified")) + " |",
        "|---|" + "---|" * 2 * len(names),
    ]
    for t in GRID:
        cells = [enc[n][key][str(t)] for n in names for key in ("by_threshold", "by_threshold_verified")]
        lines.append(f"| {t:.2f} | " + " | ".join(prf(c) for c in cells) + " |")
    best = ", ".join(
        f"{n} {r['encoders'][n]['best']['f1']:.3f} at {r['encoders'][n]['best']['threshold']}" for n in names
    )
    best_v = ", ".join(
        f"{n} {enc[n]['best_verified']['f1']:.3f} at {enc[n]['best_verified']['threshold']}" for n in names
    )
    lines += [
        "",
        f"Best F1 over thresholds: {best}; verified: {best_v}.",
        "",
        f"Verified: the crop alignment alone (no keypoints); pairs scoring from {VERIFY_BELOW} under the threshold "
        f"are kept when their pictures line up (alignment >= {MIN_ALIGNMENT}, retrieval/dedup/verify/align.py; the "
        "whole rule: retrieval/dedup/verify/rule.py). The minimum alignment at the default threshold:",
        "",
        *sweep_table(enc, "min alignment", "by_min_alignment", [(str(m), f"{m:.2f}") for m in ALIGNMENTS]),
        "",
        f"The best crop must also match in its edges (gradient-magnitude correlation >= {MIN_EDGE_CORRELATION}). "
        "That minimum at the default threshold (off: grey levels alone):",
        "",
        *sweep_table(
            enc, "min edge correlation", "by_min_edge", [(str(e), "off" if e < 0 else f"{e:.2f}") for e in EDGES]
        ),
    ]
    lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
