"""Training throughput (images/s) of `retrieval train` (moco.train.fit) vs lightly's MoCo example loop.

Same images (a deterministic subset of the clip-art PNGs, enough for a full K = 4096 queue), ResNet-18,
96 px, batch 64, K 4096, same data-loader workers, same CPU, same run. Each loop runs in its own subprocess.

--mode concurrent (default): both loops run AT THE SAME TIME, each with `--threads` torch threads (1) and
  `--workers` data-loader workers (0), so on a shared, noisy machine both see the same load; the OS splits
  the cores between them.
--mode interleaved: one loop at a time with the whole machine (torch's default threads, `--workers`),
  alternating ours, lightly, lightly, ours, ...

Steady state: the first `--warmup` steps are skipped, the next `--steps` are timed (ours from the
per-step `elapsed_s` of metrics.jsonl, lightly's from a clock read after each step). Our decode cache is
built before the timed runs (a one-off per folder, and fit() starts its clock after it).

--photos N: instead of clip art, the folder is N distinct 4000x3000 JPEGs made from the real photos (as
  bench/training/decode_pipeline.py makes them), each linked repeatedly up to --n-images files: what a camera folder
  costs to decode. Our steady state reads the decode cache; lightly decodes every file on every step.

    python -m bench.training.throughput [--images ~/.cache/retrieval-datasets/clipart] [--mode concurrent]
    python -m bench.training.throughput --photos 160      # 12-MP JPEGs; writes train_throughput-photos.json
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from bench.kit.machine import machine_info
from moco.measure.metrics_log import read_metrics

BENCH = Path(__file__).resolve().parents[1]
ROOT = BENCH.parent
DEFAULT_IMAGES = Path.home() / ".cache/retrieval-datasets/clipart"
DEFAULT_PHOTOS = Path.home() / ".cache/retrieval-datasets/photos"


def make_subset(src: Path, dst: Path, n: int) -> Path:
    """Every k-th image of the sorted source list, symlinked flat into dst/all/ (one folder for both loaders)."""
    from plumbing.images import list_images

    paths = list_images(src)
    stride = max(1, len(paths) // n)
    picked = paths[::stride][:n]
    folder = dst / "all"
    folder.mkdir(parents=True, exist_ok=True)
    for i, p in enumerate(picked):
        link = folder / f"{i:05d}_{p.parent.name}_{p.name}"
        if not link.exists():
            link.symlink_to(p.resolve())
    return dst


def make_photo_subset(photos: Path, dst: Path, n_distinct: int, n: int) -> Path:
    """n_distinct 12-MP JPEGs (decode_pipeline.make_big_jpegs), linked round-robin into dst/all/ up to n files."""
    from bench.training.decode_pipeline import make_big_jpegs

    big = make_big_jpegs(photos, dst.parent / "big-jpegs", n_distinct)  # outside dst: not part of the folder
    folder = dst / "all"
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        (folder / f"{i:05d}.jpg").symlink_to(big[i % len(big)].resolve())
    return dst


class _StartTime(logging.Handler):
    """Wall-clock time of fit()'s "training ..." log line, emitted just before its clock starts."""

    t: float = 0.0

    def emit(self, record: logging.LogRecord) -> None:
        if record.getMessage().startswith("training "):
            _StartTime.t = record.created


def ours_config(a: argparse.Namespace, out: Path):  # -> TrainConfig
    from moco.config import MoCoConfig, TrainConfig

    return TrainConfig(
        images=str(a.subset),
        out=str(out),
        model=MoCoConfig(arch="resnet18", queue_size=a.queue_size),
        crop_size=a.image_size,
        batch_size=a.batch_size,
        epochs=1000,
        device=a.device,
        workers=a.workers,
        checkpoint_every=10**9,
        log_every=1,
        stop_after_steps=a.warmup + a.steps,
        resume=False,
    )


def run_ours(a: argparse.Namespace) -> dict:
    from moco.train import fit

    out = Path(a.work) / "ours-run"
    (out / "metrics.jsonl").unlink(missing_ok=True)
    cfg = ours_config(a, out)
    log = logging.getLogger("moco.train")
    log.setLevel(logging.INFO)
    log.addHandler(_StartTime())
    t = time.monotonic()
    r = fit(cfg)
    wall = time.monotonic() - t
    rows = read_metrics(out)
    elapsed = {row["step"]: row["elapsed_s"] for row in rows if "elapsed_s" in row}
    dt = elapsed[a.warmup + a.steps] - elapsed[a.warmup]
    return {
        "loop": "ours",
        "img_per_s": a.steps * a.batch_size / dt,
        "timed_steps": a.steps,
        "timed_s": dt,
        "window": [_StartTime.t + elapsed[a.warmup], _StartTime.t + elapsed[a.warmup + a.steps]],
        "queue_size": r.model_config.queue_size,
        "bn_splits": r.model_config.bn_splits,
        "wall_s": wall,
        "loss": r.loss,
        "threads": torch.get_num_threads(),
        "workers": a.workers,
    }


def run_lightly(a: argparse.Namespace) -> dict:
    from bench.kit.lightly_moco import train

    t = time.monotonic()
    offset = time.time() - t  # monotonic -> wall clock
    r = train(
        Path(a.subset),
        input_size=a.image_size,
        batch_size=a.batch_size,
        workers=a.workers,
        memory_bank_size=a.queue_size,
        max_steps=a.warmup + a.steps,
        device=a.device,
    )
    wall = time.monotonic() - t
    t_a, t_b = r.step_end_times[a.warmup - 1], r.step_end_times[a.warmup + a.steps - 1]
    return {
        "loop": "lightly",
        "img_per_s": a.steps * a.batch_size / (t_b - t_a),
        "timed_steps": a.steps,
        "timed_s": t_b - t_a,
        "window": [t_a + offset, t_b + offset],
        "queue_size": a.queue_size,
        "wall_s": wall,
        "loss": r.loss,
        "threads": torch.get_num_threads(),
        "workers": a.workers,
    }


def spawn(a: argparse.Namespace, loop: str) -> subprocess.Popen:
    cmd = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--child",
        loop,
        "--subset",
        str(a.subset),
        "--work",
        a.work,
        "--workers",
        str(a.workers),
        "--warmup",
        str(a.warmup),
        "--steps",
        str(a.steps),
        "--device",
        a.device,
        "--image-size",
        str(a.image_size),
        "--batch-size",
        str(a.batch_size),
        "--queue-size",
        str(a.queue_size),
        "--threads",
        str(a.threads),
    ]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    if a.threads:
        env.update(OMP_NUM_THREADS=str(a.threads), MKL_NUM_THREADS=str(a.threads))
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def collect(loop: str, p: subprocess.Popen, load: float) -> dict:
    stdout, stderr = p.communicate()
    if p.returncode != 0:
        raise SystemExit(f"{loop} failed:\n{stderr[-3000:]}")
    rec = json.loads(stdout.strip().splitlines()[-1])
    rec["loadavg_1min_before"] = load
    print(json.dumps(rec), file=sys.stderr, flush=True)
    return rec


def overlap(w1: list[float], w2: list[float]) -> float:
    """Fraction of the longer timed window that both loops spent running together."""
    both = max(0.0, min(w1[1], w2[1]) - max(w1[0], w2[0]))
    return both / max(w1[1] - w1[0], w2[1] - w2[0])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--images", type=Path, default=DEFAULT_IMAGES)
    ap.add_argument("--n-images", type=int, default=4224, help="subset size (>= K + batch for a full queue)")
    ap.add_argument("--rounds", type=int, default=2, help="each round runs both loops once (order alternates)")
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--mode", choices=["concurrent", "interleaved"], default="concurrent")
    ap.add_argument(
        "--workers", type=int, default=None, help="data-loader workers per loop (default: 0 concurrent, 1 interleaved)"
    )
    ap.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch threads per loop (default: 1 concurrent, torch's own interleaved)",
    )
    ap.add_argument(
        "--photos",
        type=int,
        default=0,
        help="use this many distinct 12-MP JPEGs made from the real photos instead of --images",
    )
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--image-size", type=int, default=96)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--queue-size", type=int, default=4096)
    ap.add_argument(
        "--out",
        type=Path,
        default=None,
        help="default bench/results/train_throughput.json (-interleaved.json for that mode)",
    )
    ap.add_argument("--child", choices=["ours", "lightly"], help=argparse.SUPPRESS)
    ap.add_argument("--subset", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--work", default="", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        if a.threads:
            torch.set_num_threads(a.threads)
        print(json.dumps(run_ours(a) if a.child == "ours" else run_lightly(a)))
        return
    concurrent = a.mode == "concurrent"
    if a.out is None:
        a.out = (
            BENCH
            / "results"
            / (f"train_throughput{'-photos' if a.photos else ''}{'' if concurrent else '-interleaved'}.json")
        )
    if a.workers is None:
        a.workers = 0 if concurrent else 1
    if a.threads is None:
        a.threads = 1 if concurrent else 0

    from moco.data import CACHE_SCALE, DecodeCache
    from plumbing.images import list_images

    work = tempfile.mkdtemp(prefix="bench-throughput-")
    try:
        a.work = work
        a.subset = (
            make_photo_subset(DEFAULT_PHOTOS, Path(work) / "images", a.photos, a.n_images)
            if a.photos
            else make_subset(a.images, Path(work) / "images", a.n_images)
        )
        t = time.monotonic()
        DecodeCache.build(list_images(a.subset), round(a.image_size * CACHE_SCALE), Path(work) / "ours-run" / "cache")
        cache_s = time.monotonic() - t
        runs = []
        for r in range(a.rounds):
            load = os.getloadavg()[0]
            if concurrent:
                procs = [(loop, spawn(a, loop)) for loop in ("ours", "lightly")]
                recs = [collect(loop, p, load) for loop, p in procs]
                ov = overlap(recs[0]["window"], recs[1]["window"])
                runs += [{"round": r, "window_overlap": ov, **rec} for rec in recs]
            else:
                for loop in ("ours", "lightly") if r % 2 == 0 else ("lightly", "ours"):
                    runs.append({"round": r, **collect(loop, spawn(a, loop), os.getloadavg()[0])})
    finally:
        shutil.rmtree(work, ignore_errors=True)
    ours = [x["img_per_s"] for x in runs if x["loop"] == "ours"]
    peer = [x["img_per_s"] for x in runs if x["loop"] == "lightly"]
    result = {
        "benchmark": "train_throughput",
        "machine": machine_info(),
        "settings": {
            "images": f"{a.photos} distinct 4000x3000 JPEGs from {DEFAULT_PHOTOS}" if a.photos else str(a.images),
            "n_images": a.n_images,
            "arch": "resnet18",
            "image_size": a.image_size,
            "batch_size": a.batch_size,
            "queue_size": a.queue_size,
            "mode": a.mode,
            "device": a.device,
            "workers_per_loop": a.workers,
            "torch_threads_per_loop": a.threads or torch.get_num_threads(),
            "warmup_steps": a.warmup,
            "timed_steps": a.steps,
            "rounds": a.rounds,
            "ours": "TrainConfig(arch resnet18, image_size, batch_size, queue_size, preset moco-v2, lr 0.06 "
            "(x batch/256), SGD momentum 0.9, wd 5e-4, m 0.99, T 0.2, ghost BN 4 groups, "
            "shuffled key batch, GeM, decode cache at image_size*1.25 px, device cpu, amp off)",
            "lightly": "examples/pytorch/moco.py of lightly 1.6.0: resnet18 children[:-1] (avg pool), "
            "MoCoProjectionHead(512,512,128), MoCoV2Transform(input_size), LightlyDataset(folder), "
            "DataLoader(shuffle, drop_last), NTXentLoss(memory_bank_size=(K,128), T 0.5), "
            "SGD(lr 0.06), update_momentum (cosine 0.996->1) on backbone and head",
        },
        "ours_cache_build_s": cache_s,
        "runs": runs,
        "ours_img_per_s": statistics.mean(ours),
        "lightly_img_per_s": statistics.mean(peer),
        "ratio": statistics.mean(ours) / statistics.mean(peer),
        "ratio_per_round": [o / p for o, p in zip(ours, peer, strict=True)],
        "goal": 1.5,
    }
    result["goal_met"] = result["ratio"] >= result["goal"]
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    print()
    print("| loop | img/s (mean) | per run |")
    print("|---|---|---|")
    print(f"| retrieval (moco.train.fit) | {result['ours_img_per_s']:.1f} | {', '.join(f'{x:.1f}' for x in ours)} |")
    print(f"| lightly 1.6.0 MoCo example | {result['lightly_img_per_s']:.1f} | {', '.join(f'{x:.1f}' for x in peer)} |")
    print(f"| **ratio** | **{result['ratio']:.2f}x** (goal >= {result['goal']}x) | |")


if __name__ == "__main__":
    main()
