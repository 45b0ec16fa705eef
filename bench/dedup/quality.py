"""Near-duplicate detection quality: `retrieval dedup` vs PHash, same folder, same run; the headline figures
come from `retrieval eval dedup`, the command a user runs on their own folder.

    python -m bench.dedup.quality ~/.cache/retrieval-datasets [--work /tmp/dedup-bench] [--budget 10] [--reuse]

1. Builds the benchmark folder (bench/kit/neardup_data.py: originals with 1-3 edited copies + distractors;
   WORK/truth.json holds the true groups, root-relative, the `--truth` format of `retrieval eval dedup`).
2. `retrieval train` on that folder (preset copy-detection, --time-budget BUDGET minutes, CPU defaults),
   `retrieval index`, and `retrieval dedup --format json` at the default threshold (timed, with
   verification, again from the thumbnail cache, and with --no-verify).
3. The headline precision / recall / F1 against the planted truth, all from `retrieval eval dedup --index
   WORK/index --truth WORK/truth.json --format json --compare` (with verification, the default) and the
   same with `--no-verify`: the trained encoder ("index"), a random-init encoder of the same architecture,
   input size and preprocessing ("random-init", which --compare builds), and PHash at its default distance
   (10 bits) and at its best over 0-32 bits ("phash"). Cross-check on every run: eval's figures at the
   default equal the pairwise P/R/F1 of `retrieval dedup --format json`'s groups of the same index.
   With imagededup installed, its PHash is scored too, as a reference (not a `retrieval eval` figure).
4. The share of copies found by edit and strength (from `retrieval dedup`'s groups; eval has no per-edit
   breakdown).
5. What each descriptor step adds, for both encoders: the preprocessing steps of moco/preprocess.py
   switched on one after another (centre crop -> squash -> + border trim -> + grayscale -> + standardise
   -> + straighten), and, for the trained encoder, the full descriptor against one change at a time
   (average pooling, no flip averaging, centred or PCA-whitened on the corpus): bench/kit/dedup_descriptor.py.
   Each is scored by raw cosine and by the normalised score, at its best threshold, without verification.
Writes bench/results/dedup_quality.json and .md (`--results DIR` elsewhere).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

from bench.kit.dedup_descriptor import descriptor_options, descriptor_steps
from bench.kit.dedup_scoring import best_over_thresholds
from bench.kit.eval_cli import eval_dedup, method, run
from bench.kit.neardup_data import build
from bench.kit.neardup_eval import pairwise_prf
from bench.kit.results import RESULTS, publish
from moco.export import read_spec, save_random_encoder
from moco.measure.metrics_log import read_metrics
from moco.preprocess import PRESET_PREPROCESSING
from retrieval.dedup.groups import BACKGROUND_RANK
from retrieval.dedup.verify.cache import CACHE_NAME
from retrieval.evaluate.baseline import DESCRIPTOR_FIELDS, RANDOM_SEED
from retrieval.searching.searcher import SearchIndex

PHASH_DISTANCE = 10  # imagededup's default max_distance_threshold, as `retrieval eval dedup --compare` uses


def groups_from_json(doc: dict) -> list[list[str]]:
    return [[g["keep"]] + [d["path"] for d in g["duplicates"]] for g in doc["groups"]]


def phash_groups(root: Path, max_distance: int) -> tuple[list[list[str]], dict]:
    from imagededup.methods import PHash

    ph = PHash(verbose=False)
    enc = ph.encode_images(image_dir=str(root), recursive=True)
    enc = {str(Path(k)): v for k, v in enc.items()}
    dups = ph.find_duplicates(encoding_map=enc, max_distance_threshold=max_distance)
    return [[a, b] for a, bs in dups.items() for b in bs], enc


def imagededup_reference(images: Path, truth: list[list[str]]) -> dict | None:
    """imagededup's PHash at its default distance and at its best over 0-32 bits, or None without imagededup:
    a reference for `retrieval eval dedup --compare`'s own PHash, not a figure of `retrieval eval`."""
    try:
        from imagededup.methods import PHash
    except ImportError:
        return None
    t = time.time()
    groups, enc = phash_groups(images, PHASH_DISTANCE)
    default = {**pairwise_prf(groups, truth), "max_distance_threshold": PHASH_DISTANCE, "seconds": time.time() - t}
    ph = PHash(verbose=False)
    best = best_over_thresholds(
        lambda d: [
            [x, y] for x, ys in ph.find_duplicates(encoding_map=enc, max_distance_threshold=int(d)).items() for y in ys
        ],
        range(0, 33, 2),
        truth,
    )
    return {"default": default, "best": best}


def timed_dedup(index_dir: Path) -> dict:
    """`retrieval dedup --format json` at the default threshold: verified (from cold, then again with the
    thumbnails from the cache) and with --no-verify; the groups and seconds of each."""
    (index_dir / CACHE_NAME).unlink(missing_ok=True)  # the first verified run reads every file it verifies
    out = {}
    for name, flag in (("verified", "--verify"), ("rerun", "--verify"), ("no_verify", "--no-verify")):
        t = time.time()
        groups = groups_from_json(json.loads(run("dedup", "--index", str(index_dir), "--format", "json", flag)))
        out[name] = {"groups": groups, "seconds": time.time() - t}
    if out["verified"]["groups"] != out["rerun"]["groups"]:
        raise RuntimeError("a rerun from the thumbnail cache gave other groups")
    return out


def eval_row(doc: dict, name: str, **extra: float) -> dict:
    """One headline row: `name`'s P/R/F1 at the chosen threshold in a `retrieval eval dedup` document, with
    the threshold and the command that printed it."""
    m = method(doc, name)
    return {**m["at_threshold"], "threshold": m["threshold"], "method": name, "command": doc["command"], **extra}


def check_against_dedup(doc: dict, groups: list[list[str]], truth: list[list[str]]) -> None:
    """Stop unless `retrieval eval dedup`'s P/R/F1 at the default threshold equal the pairwise P/R/F1 of
    `retrieval dedup --format json`'s groups of the same index: the two paths must not drift apart."""
    got, want = method(doc, "index")["at_threshold"], pairwise_prf(groups, truth)
    if got != want:
        raise RuntimeError(f"{doc['command']} gives {got}; `retrieval dedup`'s groups score {want}")


def check_same_random_init(trained_dir: Path, random_dir: Path) -> None:
    """--compare's random-init encoder (retrieval.evaluate.baseline: the index's architecture, input size and
    preprocessing, seed 0) must be the random-init/ encoder the descriptor table scores, or the two
    random-init figures would be of different encoders."""
    t, r = read_spec(trained_dir), read_spec(random_dir)
    fields = ("arch", "embed_size", "stem", "width", "layer", *DESCRIPTOR_FIELDS)
    diff = {f: (getattr(t, f), getattr(r, f)) for f in fields if getattr(t, f) != getattr(r, f)}
    if diff or r.trained.get("seed") != RANDOM_SEED:
        raise RuntimeError(f"random-init/ is not the encoder `retrieval eval --compare` builds: {diff or r.trained}")


def headline(run_dir: Path, random_dir: Path, images: Path, work: Path) -> dict:
    """`retrieval index` with the trained encoder, the timed `retrieval dedup` runs, and the figures of
    `retrieval eval dedup --compare` with and without verification (cross-checked against the groups)."""
    index_dir, truth_file = work / "index", work / "truth.json"
    truth = json.loads(truth_file.read_text())["groups"]
    check_same_random_init(run_dir, random_dir)
    run("index", str(images), "--model", str(run_dir), "--index", str(index_dir), "--rebuild")
    timed = timed_dedup(index_dir)
    verified = eval_dedup(index_dir, truth_file, verify=True, compare=True)
    plain = eval_dedup(index_dir, truth_file, verify=False, compare=True)
    check_against_dedup(verified, timed["verified"]["groups"], truth)
    check_against_dedup(plain, timed["no_verify"]["groups"], truth)
    ph = method(verified, "phash")
    seconds = {"seconds": timed["verified"]["seconds"], "rerun_seconds": timed["rerun"]["seconds"]}
    return {
        "retrieval_default": eval_row(verified, "index", **seconds),
        "random_default": eval_row(verified, "random-init"),
        "retrieval_no_verify": eval_row(plain, "index", seconds=timed["no_verify"]["seconds"]),
        "random_no_verify": eval_row(plain, "random-init"),
        "phash_default": {**eval_row(verified, "phash"), "seconds": ph["seconds"]},
        "phash_best": {**ph["best"], "method": "phash", "command": verified["command"]},
        "groups": timed["verified"]["groups"],
    }


def recall_by_edit(groups: list[list[str]], truth: dict) -> dict[str, dict[str, list[int]]]:
    """{edit: {strength: [copies found in their original's group, copies]}} (a copy carries 1-3 edits)."""
    group_of = {p: n for n, g in enumerate(groups) for p in g}
    out: dict[str, dict[str, list[int]]] = {}
    for g in truth["groups"]:
        for copy in g[1:]:
            found = copy in group_of and group_of.get(g[0]) == group_of[copy]
            for e in truth["edits"][copy]:
                kind, strength = e.split(":")
                cell = out.setdefault(kind, {}).setdefault(strength, [0, 0])
                cell[0] += found
                cell[1] += 1
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("src", type=Path)
    ap.add_argument("--work", type=Path, default=Path("/tmp/dedup-bench"))
    ap.add_argument("--budget", type=float, default=10.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--reuse", action="store_true", help="keep the encoder a previous run trained in WORK/run")
    ap.add_argument("--results", type=Path, default=RESULTS, help="where dedup_quality.json and .md go")
    a = ap.parse_args()
    images = a.work / "images"
    if not (a.work / "truth.json").exists():
        build(a.src, a.work, a.seed)
    truth_doc = json.loads((a.work / "truth.json").read_text())
    truth = truth_doc["groups"]
    run_dir = a.work / "run"
    trained = run_dir / "bench_train.json"  # how the encoder in run/ was trained, for --reuse
    if not (a.reuse and trained.exists()):
        trained.unlink(missing_ok=True)
        load_at_start = os.getloadavg()
        t0 = time.time()
        run(
            "train",
            str(images),
            "--out",
            str(run_dir),
            "--preset",
            "copy-detection",
            "--time-budget",
            str(a.budget),
            "--device",
            "cpu",
            "--no-resume",
        )
        metrics = read_metrics(run_dir)
        info = {
            "preset": "copy-detection",
            "budget_min": a.budget,
            "steps": max(m.get("step", 0) for m in metrics),
            "seconds": round(time.time() - t0),
            "load": [round(x, 1) for x in load_at_start],
        }
        trained.write_text(json.dumps(info))
    train_info = json.loads(trained.read_text())

    random_dir = a.work / "random-init"  # for the descriptor table (and dedup_threshold.py)
    spec = read_spec(run_dir)
    save_random_encoder(
        random_dir,
        spec.arch,
        spec.embed_size,
        dim=0,
        seed=RANDOM_SEED,
        preprocessing=PRESET_PREPROCESSING["copy-detection"],
    )
    rows = headline(run_dir, random_dir, images, a.work)
    ours_groups = rows.pop("groups")
    catalog = {r.path: r for r in SearchIndex.open(a.work / "index").records}
    ablation = {
        name: descriptor_steps(enc_dir, images, truth, a.work / f"steps-{name.replace(' ', '-')}", catalog)
        for name, enc_dir in (("trained", run_dir), ("random init", random_dir))
    }
    options = descriptor_options(run_dir, images, truth, a.work / "options-trained", catalog)
    result = {
        "machine": f"{os.cpu_count()} CPU cores, no GPU",
        "folder": {
            "originals": len(truth),
            "copies": sum(len(g) - 1 for g in truth),
            "files": sum(1 for _ in images.rglob("*.jpg")),
        },
        "train": train_info,
        **rows,
        "imagededup_phash": imagededup_reference(images, truth),
        "recall_by_edit": recall_by_edit(ours_groups, truth_doc),
        "descriptor_steps": ablation,
        "descriptor_options": options,
    }
    publish("dedup_quality", result, markdown(result, a), folder=a.results, echo=False)
    print(json.dumps(result, indent=1))


def markdown(r: dict, a: argparse.Namespace) -> str:
    def row(name: str, m: dict, setting: str, source: str | None = None) -> str:
        source = source or f"`{m['command']}`, method `{m['method']}`"
        return f"| {name} | {setting} | {m['precision']:.3f} | {m['recall']:.3f} | {m['f1']:.3f} | {source} |"

    t = r["train"]
    default = f"default ({r['retrieval_default']['threshold']:g})"
    ph, ref = r["phash_default"], r.get("imagededup_phash")
    lines = [
        "## Near-duplicate detection: `retrieval dedup` vs PHash",
        "",
        f"`python -m bench.dedup.quality ~/.cache/retrieval-datasets --budget {t['budget_min']:g}` on {r['machine']}"
        + (" (`--reuse`: scored again with the encoder trained by the previous run)." if a.reuse else "."),
        f"Folder: {r['folder']['files']} images, {r['folder']['originals']} originals (real photos and clip art) "
        f"with {r['folder']['copies']} edited copies, plus distractors (bench/kit/neardup_data.py).",
        f"Encoder: `retrieval train --preset copy-detection --time-budget {t['budget_min']:g}` on that folder "
        f"({t['steps']} steps in {t['seconds']} s; load average at the start {t['load']}), CPU defaults. Random "
        "init: the same ResNet-18 with torchvision's initialisation (seed 0), same input size and preprocessing "
        "(the one `--compare` builds). PHash: 64 bits, duplicates within "
        f"{ph['threshold']:g} bits (imagededup's default), and the best over 0-32 bits.",
        "",
        "Every figure of this table is the JSON of the `retrieval eval dedup` command in its row (pairwise "
        "precision / recall / F1 against WORK/truth.json, the planted groups); at the default threshold they equal "
        "the pairwise figures of `retrieval dedup --format json`'s groups of the same index (checked on each run).",
        "",
        "| method | threshold | precision | recall | F1 | figures from |",
        "|---|---|---|---|---|---|",
        row("retrieval dedup, trained encoder", r["retrieval_default"], default),
        row("retrieval dedup, random-init encoder", r["random_default"], default),
        row("retrieval dedup --no-verify, trained encoder", r["retrieval_no_verify"], default),
        row("retrieval dedup --no-verify, random-init encoder", r["random_no_verify"], default),
        row("PHash", ph, f"default (distance {ph['threshold']:g})"),
        row("PHash, best threshold", r["phash_best"], f"{r['phash_best']['threshold']:g}"),
    ]
    if ref is not None:
        source = "imagededup's `PHash` (bench/dedup/quality.py `imagededup_reference`), not `retrieval eval`"
        lines += [
            row("imagededup PHash (reference)", ref["default"], f"default (distance {PHASH_DISTANCE})", source),
            row("imagededup PHash, best threshold (reference)", ref["best"], f"{ref['best']['threshold']:g}", source),
        ]
    lines += [
        "",
        "What each descriptor step adds (moco/preprocess.py; the steps switched on one after another; best F1",
        f"over thresholds, of the raw cosine and of the score normalised against the {BACKGROUND_RANK}th neighbour):",
        "",
        "| descriptor | trained: cosine | trained: normalised | random init: cosine | random init: normalised |",
        "|---|---|---|---|---|",
    ]
    tr, rn = r["descriptor_steps"]["trained"], r["descriptor_steps"]["random init"]
    for name in tr:
        cells = [
            f"{m[name][kind]['f1']:.3f} (at {m[name][kind]['threshold']})"
            for m in (tr, rn)
            for kind in ("cosine", "normalised")
        ]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "The full descriptor (trained encoder) against one change at a time (bench/kit/dedup_descriptor.py; best F1 "
        "over thresholds, no verification):",
        "",
        "| descriptor | cosine | normalised |",
        "|---|---|---|",
    ]
    for name, m in r["descriptor_options"].items():
        cells = [f"{m[kind]['f1']:.3f} (at {m[kind]['threshold']})" for kind in ("cosine", "normalised")]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    diff = r["retrieval_default"]["f1"] - ph["f1"]
    v, nv = r["retrieval_default"], r["retrieval_no_verify"]
    lines += [
        "",
        f"F1 difference at the defaults (trained encoder): {diff:+.3f} (goal: F1 >= 0.90 and >= 0.3 above PHash).",
        "Verification (retrieval/dedup/groups.py, on by default; `--no-verify` rows without it): pairs scoring "
        "near the threshold are kept when a crop of one picture, stretched per axis and mirrored or not, lines up "
        "with the other in grey levels and in its edges (retrieval/dedup/verify/align.py), or when their ORB keypoints "
        "agree on one similarity that puts one frame inside the other (local_features.py); pairs under the "
        "threshold only on strong keypoint agreement, and only those keypoint votes propose (feature_votes.py). "
        f"It moves F1 at the default from {nv['f1']:.3f} to {v['f1']:.3f} (trained encoder) and from "
        f"{r['random_no_verify']['f1']:.3f} to {r['random_default']['f1']:.3f} (random init). "
        f"It took `retrieval dedup` from {nv['seconds']:.1f} s to {v['seconds']:.1f} s on this folder (the whole "
        "command: start-up, index load, search, reading the files of pairs near the threshold); a rerun, with the "
        f"thumbnails from indexes/NAME/verify-thumbs.sqlite, took {v['rerun_seconds']:.1f} s.",
        "",
        "Share of copies found in their original's group at the default, by edit and strength (a copy carries 1 "
        "to 3 edits; count in brackets), trained encoder:",
        "",
        "| edit | light | medium | strong |",
        "|---|---|---|---|",
    ]
    for kind, cells in sorted(r["recall_by_edit"].items()):
        shown = [cells.get(s, [0, 0]) for s in ("light", "medium", "strong")]
        lines.append(f"| {kind} | " + " | ".join(f"{f / n:.2f} ({n})" if n else "-" for f, n in shown) + " |")
    lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
