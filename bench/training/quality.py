"""Quality after a fixed CPU budget: weighted kNN top-1 by category on the clip-art set, in the bench's own
holdout protocol and from `retrieval eval knn` (the command a user runs).

`retrieval`'s fit (time_budget_min) and lightly's MoCo example loop train CONCURRENTLY for the same
wall-clock budget, each in its own process with torch.set_num_threads(1) and DataLoader workers=0 (no
taskset: the OS splits the two cores, and whatever else runs on the machine hits both alike). Labels are
never used in training. Then each encoder, and a random-init one, embeds every image with exactly the same
code (bench/kit/knn_quality.py's path: retrieval.embed.Embedder preprocessing, shorter side resized to
--eval-size, centre crop, flip-averaged, L2-normalised), pooled two ways from one backbone pass: GeM p=3
(what `retrieval` indexes with) and average pooling (GeM p=1, what lightly's backbone trains with). Scored
by weighted kNN (k=20, T=0.07; bench/kit/knn_quality.py's holdout_top1, through retrieval.evaluate.metrics,
the functions `retrieval eval knn` uses) with every 5th image of each category held out
(moco.measure.validation.holdout_split, 20%).

Beside that holdout figure, each encoder's figures as a user measures them: `retrieval index DATA --model
ENCODER --index WORK/index-NAME`, then kNN top-1, MAP@R and recall@1 from `retrieval eval knn --index
WORK/index-NAME --format json` (bench/kit/eval_cli.py): every image a query against all the others (leave one
out), the MoCo kNN monitor's k and T, GeM as indexed. The two columns differ by protocol (held-out fifth,
k 20, T 0.07 vs leave one out), not by encoder; the random-init row indexes the same random-init encoder.

`--extra` adds rows: more runs of our fit with other settings (JSON list of TrainConfig overrides, e.g.
'[{"crop_size": 32}, {"crop_min_scale": 0.5}]'), two at a time, concurrently, with the same budget.

    python -m bench.training.quality [--data .data/clipart] [--budget-min 20] [--extra JSON]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from bench.kit.eval_cli import command, eval_knn, method, run
from bench.kit.machine import machine_info
from moco.backbone import gem
from moco.measure.metrics_log import epoch_records, read_metrics

BENCH = Path(__file__).resolve().parents[1]
ROOT = BENCH.parent

DEFAULT_DATA = ROOT / ".data" / "clipart"


def child_ours(a: argparse.Namespace) -> dict:
    from moco.config import MoCoConfig, TrainConfig
    from moco.train import fit

    over = json.loads(a.overrides)
    mkw = {k: over.pop(k) for k in list(over) if k in MoCoConfig.__dataclass_fields__}
    kw = {
        "crop_size": a.image_size,
        "embed_size": a.eval_size or None,
        "batch_size": a.batch_size,
        "epochs": 10_000,
        "time_budget_min": a.budget_min,
        "device": "cpu",
        "workers": 0,
        "resume": False,
        **over,
    }
    model = MoCoConfig(**{"arch": "resnet18", "queue_size": a.queue_size, **mkw})
    cfg = TrainConfig(images=str(a.data), out=a.run_dir, model=model, **kw)
    r = fit(cfg)
    rows = read_metrics(Path(a.run_dir))
    health = epoch_records(rows)
    # fit stops at the first step that would start past the budget: it trained for the whole budget
    elapsed = a.budget_min * 60 if r.stopped == "time budget" else max(row.get("elapsed_s", 1e-9) for row in rows)
    return {
        "loop": "ours",
        "settings": {
            **json.loads(a.overrides),
            "image_size": cfg.crop_size,
            "batch_size": cfg.batch_size,
            "queue_size": r.model_config.queue_size,
            "bn_splits": r.model_config.bn_splits,
            "momentum": r.model_config.momentum,
            "temperature": r.model_config.temperature,
            "lr": cfg.lr,
            "crop_min_scale": cfg.crop_min_scale or 0.2,
            "preset": cfg.preset,
        },
        "steps": r.steps,
        "epochs": r.epochs,
        "loss": r.loss,
        "stopped": r.stopped,
        "img_per_s": r.steps * cfg.batch_size / max(1e-9, elapsed),
        "last_health": health[-1] if health else None,
        "encoder": a.run_dir,
    }


def child_lightly(a: argparse.Namespace) -> dict:
    from bench.kit.lightly_moco import export_backbone, train

    r = train(
        Path(a.data),
        input_size=a.image_size,
        batch_size=a.batch_size,
        workers=0,
        memory_bank_size=a.queue_size,
        time_budget_s=a.budget_min * 60,
    )
    export_backbone(r.model, Path(a.run_dir), image_size=a.eval_size)
    return {
        "loop": "lightly",
        "settings": {
            "image_size": a.image_size,
            "batch_size": a.batch_size,
            "memory_bank_size": a.queue_size,
            "temperature": 0.5,
            "lr": 0.06,
            "momentum": "cosine 0.996 -> 1",
            "min_scale": 0.2,
        },
        "steps": r.steps,
        "loss": r.loss,
        "img_per_s": r.images_seen / r.seconds,
        "encoder": a.run_dir,
    }


def spawn(a: argparse.Namespace, loop: str, run_dir: Path, overrides: dict | None = None) -> subprocess.Popen:
    cmd = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--child",
        loop,
        "--run-dir",
        str(run_dir),
        "--data",
        str(a.data),
        "--budget-min",
        str(a.budget_min),
        "--image-size",
        str(a.image_size),
        "--batch-size",
        str(a.batch_size),
        "--queue-size",
        str(a.queue_size),
        "--eval-size",
        str(a.eval_size),
        "--overrides",
        json.dumps(overrides or {}),
    ]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def collect(procs: list[tuple[str, subprocess.Popen]]) -> list[dict]:
    out = []
    for name, p in procs:
        stdout, stderr = p.communicate()
        if p.returncode != 0:
            raise SystemExit(f"{name} failed:\n{stderr[-3000:]}")
        rec = json.loads(stdout.strip().splitlines()[-1])
        rec["row"] = name
        print(json.dumps(rec), file=sys.stderr, flush=True)
        out.append(rec)
    return out


def embed_poolings(encoder_dir: Path, paths: list[Path], batch: int = 128) -> dict[str, np.ndarray]:
    """One backbone pass per image, two descriptors: GeM with the encoder's p (exactly what
    retrieval.embed.Embedder computes: flip-averaged, L2-normalised) and average pooling (GeM p=1)."""
    from plumbing.images import load_image  # the same decoder and decode size as knn_quality.embed_paths
    from retrieval.embed import Embedder

    emb = Embedder.load(encoder_dir, "cpu")
    backbone, p = emb.module.encoder.backbone, emb.spec.gem_p
    out: dict[str, list[torch.Tensor]] = {"gem": [], "avg": []}
    with ThreadPoolExecutor(8) as pool, torch.no_grad():
        for i in range(0, len(paths), batch):
            ims = list(pool.map(lambda q: load_image(q, min_side=emb.min_side), paths[i : i + batch]))
            x = torch.stack([emb.preprocess(im) for im in ims])  # (B, 3, S, S)
            f, f_flip = backbone(x), backbone(torch.flip(x, dims=[3]))  # (B, C, h, w) each
            for name, pp in (("gem", p), ("avg", 1.0)):
                z = F.normalize(gem(f, pp), dim=1) + F.normalize(gem(f_flip, pp), dim=1)  # (B, C)
                out[name].append(F.normalize(z, dim=1))
    return {k: torch.cat(v).numpy() for k, v in out.items()}


def score(encoder_dir: Path, data: Path) -> dict[str, float]:
    """Weighted kNN top-1 (knn_quality.holdout_top1: knn_quality's split, `retrieval eval`'s metric functions)
    for GeM and average pooling."""
    from bench.kit.knn_quality import holdout_top1
    from moco.measure.validation import labelled_images

    t = time.monotonic()
    paths, labels, _ = labelled_images(data)
    zs = embed_poolings(encoder_dir, paths)
    out = {name: holdout_top1(z, labels) for name, z in zs.items()}
    print(json.dumps({"encoder": str(encoder_dir), **out, "eval_s": time.monotonic() - t}), file=sys.stderr, flush=True)
    return out


def eval_figures(encoder_dir: Path, data: Path, index_dir: Path) -> dict:
    """`retrieval index DATA --model ENCODER --index INDEX`, then `retrieval eval knn --index INDEX --format
    json`: the overall kNN top-1, MAP@R and recall@1 (leave one out over the index), its k and T, and both
    commands."""
    index_args = ["index", str(data), "--model", str(encoder_dir), "--index", str(index_dir), "--rebuild"]
    run(*index_args, "--device", "cpu")
    doc = eval_knn(index_dir)
    o = method(doc, "index")["overall"]
    return {
        "knn_top1": o["knn_top1"],
        "map_at_r": o["map_at_r"],
        "recall@1": o["recall@1"],
        "queries": o["queries"],
        "k_used": doc["settings"]["k_used"],
        "temperature": doc["settings"]["temperature"],
        "index_command": command([*index_args, "--device", "cpu"]),
        "command": doc["command"],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--budget-min", type=float, default=20.0)
    ap.add_argument("--image-size", type=int, default=64, help="training crop (the CPU default of `retrieval train`)")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--queue-size", type=int, default=4096)
    ap.add_argument("--eval-size", type=int, default=128, help="embedding input size for all encoders")
    ap.add_argument("--extra", default="[]", help="JSON list of TrainConfig/MoCoConfig overrides for extra rows")
    ap.add_argument("--skip-main", action="store_true", help="only the --extra rows (and random init)")
    ap.add_argument("--skip-random", action="store_true", help="no random-init row")
    ap.add_argument("--work", type=Path, default=None, help="keep runs here (default: a temp dir, removed)")
    ap.add_argument("--out", type=Path, default=BENCH / "results" / "train_quality.json")
    ap.add_argument("--child", choices=["ours", "lightly"], help=argparse.SUPPRESS)
    ap.add_argument("--run-dir", default="", help=argparse.SUPPRESS)
    ap.add_argument("--overrides", default="{}", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        torch.set_num_threads(1)
        print(json.dumps(child_ours(a) if a.child == "ours" else child_lightly(a)))
        return

    from moco.data import CACHE_SCALE, DecodeCache
    from moco.export import save_random_encoder
    from plumbing.images import list_images

    work = a.work or Path(tempfile.mkdtemp(prefix="bench-quality-"))
    work.mkdir(parents=True, exist_ok=True)
    poolings = ["gem", "avg"]
    extras = json.loads(a.extra)
    rows: list[dict] = []
    t0 = time.monotonic()
    try:
        # decode caches first (one-off, outside the budget, as fit() itself starts its clock after them)
        sizes = {a.image_size} | {e.get("image_size", a.image_size) for e in extras}
        paths = list_images(a.data)
        for i, e in enumerate([None] + extras):
            if e is None and a.skip_main:
                continue
            run = work / ("ours" if e is None else f"ours-extra{i}")
            side = round((a.image_size if e is None else e.get("image_size", a.image_size)) * CACHE_SCALE)
            DecodeCache.build(paths, side, run / "cache")
        print(json.dumps({"caches_built_for_sizes": sorted(sizes), "s": time.monotonic() - t0}), file=sys.stderr)
        if not a.skip_main:
            rows += collect(
                [("retrieval", spawn(a, "ours", work / "ours")), ("lightly", spawn(a, "lightly", work / "lightly"))]
            )
        for j in range(0, len(extras), 2):
            batch = [(i, extras[i]) for i in range(j, min(j + 2, len(extras)))]
            rows += collect(
                [(f"retrieval {json.dumps(e)}", spawn(a, "ours", work / f"ours-extra{i + 1}", e)) for i, e in batch]
            )
        if not a.skip_random:
            rnd = work / "random-init"
            save_random_encoder(rnd, embed_size=a.eval_size or a.image_size, dim=0)
            rows.append({"row": "random init", "loop": "random", "steps": 0, "img_per_s": None, "encoder": str(rnd)})
        for row in rows:
            encoder = Path(row.pop("encoder"))
            row["knn_top1"] = score(encoder, a.data)
            row["eval_knn"] = eval_figures(encoder, a.data, work / f"index-{encoder.name}")
    finally:
        if a.work is None:
            shutil.rmtree(work, ignore_errors=True)
    by = {r["row"]: r for r in rows}
    result = {
        "benchmark": "train_quality",
        "machine": machine_info(),
        "settings": {
            "data": str(a.data),
            "budget_min": a.budget_min,
            "image_size": a.image_size,
            "batch_size": a.batch_size,
            "queue_size": a.queue_size,
            "eval_size": a.eval_size,
            "poolings": {"gem": "GeM p=3 (what retrieval indexes with)", "avg": "average (GeM p=1)"},
            "embedding": "shorter side -> eval_size, centre crop, ImageNet mean/std, flip-averaged, "
            "L2-normalised (retrieval.embed.Embedder's preprocessing)",
            "knn": "weighted, k=20, T=0.07, every 5th image per category held out",
            "eval_knn": "retrieval eval knn --index WORK/index-NAME --format json on retrieval index DATA --model "
            "ENCODER: leave one out over every image, the MoCo kNN monitor's k and T (k cut to the smallest class "
            "minus one), GeM as indexed",
            "concurrency": "2 processes at once, torch.set_num_threads(1) each, workers=0, no taskset",
        },
        "rows": rows,
        "goal": "ours >= random init + 0.15 and ours > lightly (kNN top-1, GeM)",
        "total_s": time.monotonic() - t0,
    }
    if "retrieval" in by and "random init" in by:
        ours_top1 = by["retrieval"]["knn_top1"]["gem"]
        result["ours_minus_random"] = ours_top1 - by["random init"]["knn_top1"]["gem"]
        result["ours_minus_lightly"] = ours_top1 - by["lightly"]["knn_top1"]["gem"]
        result["goal_met"] = result["ours_minus_random"] >= 0.15 and result["ours_minus_lightly"] > 0
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    print()
    print(markdown(rows, poolings))


def markdown(rows: list[dict], poolings: list[str]) -> str:
    """The table of both protocols, the notes that tell them apart, and each row's `retrieval` commands."""
    cols = " | ".join(f"holdout kNN top-1 ({p})" for p in poolings)
    lines = [
        f"| encoder | {cols} | eval knn: kNN top-1 | eval knn: MAP@R | eval knn: recall@1 | steps | img/s |",
        "|---|" + "---|" * (len(poolings) + 5),
    ]
    for r in rows:
        ips = f"{r['img_per_s']:.1f}" if r.get("img_per_s") else "-"
        vals = " | ".join(f"{r['knn_top1'][p]:.4f}" for p in poolings)
        e = r["eval_knn"]
        lines.append(
            f"| {r['row']} | {vals} | {e['knn_top1']:.4f} | {e['map_at_r']:.4f} | {e['recall@1']:.4f} | "
            f"{r['steps']} | {ips} |"
        )
    e = rows[0]["eval_knn"] if rows else {"k_used": "-", "temperature": "-", "queries": "-"}
    lines += [
        "",
        "holdout: this bench's protocol (every 5th image per category held out, weighted kNN k 20, T 0.07, "
        "embedded in-process, GeM and average pooling). eval knn: `retrieval eval knn --index INDEX --format json` "
        "on `retrieval index DATA --model ENCODER --index INDEX` (GeM, as indexed): every image a query against "
        f"all the others, leave one out ({e['queries']} queries; weighted kNN k {e['k_used']}, T {e['temperature']}, "
        "the MoCo kNN monitor's, k cut to the smallest class minus one), MAP@R and recall@1 by category. The two "
        "differ by protocol, not by encoder; the random-init row indexes the same random-init encoder.",
        "",
    ]
    lines += [f"- {r['row']}: `{r['eval_knn']['index_command']}`, then `{r['eval_knn']['command']}`" for r in rows]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
