"""Real-photo data pipeline: epoch-2 time of ours (DecodeCache + PairDataset) vs a plain ImageFolder.

A temp folder of `--n` 4000x3000 JPEGs (quality 90) is made by upscaling the real photos of
`photos/*.jpg` (every repeat mirrored or flipped, so no two files are identical). Both pipelines produce
the same thing: two MoCo-v2 views (moco.augment.presets, at `--size` px) per image, batches of 64 (last partial
batch dropped), through a DataLoader with the same number of workers. No model: data only.

- ours: what moco/train.py does. Epoch 1 = DecodeCache.build (draft-mode decode to a (size*1.25)^2 uint8
  cache, once) + one pass; every epoch a new DataLoader over PairDataset with epoch_batches/BatchList.
- peer: torchvision.datasets.ImageFolder(root, transform=TwoCropsTransform(same preset)), which decodes
  every 12-MP JPEG in full every epoch, in a DataLoader(shuffle=True, drop_last=True).

Epoch 1 is the warm-up (it also fills the OS page cache for both); then epochs 2.. alternate between the
two pipelines (`--repeats` times each) and the median epoch time of each is reported.

    python -m bench.training.decode_pipeline [--photos ~/.cache/retrieval-datasets/photos] [--n 150] [--workers 1]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch
import torchvision
from PIL import Image
from torch.utils.data import DataLoader

from bench.kit.machine import machine_info
from moco.augment.presets import TwoCropsTransform, make_preset
from moco.data import CACHE_SCALE, BatchList, DecodeCache, PairDataset, epoch_batches
from plumbing.images import list_images

BENCH = Path(__file__).resolve().parents[1]
ROOT = BENCH.parent

DEFAULT_PHOTOS = Path.home() / ".cache/retrieval-datasets/photos"
VARIANTS = [None, Image.Transpose.FLIP_LEFT_RIGHT, Image.Transpose.FLIP_TOP_BOTTOM, Image.Transpose.ROTATE_180]


def make_big_jpegs(photos: Path, dst: Path, n: int, size: tuple[int, int] = (4000, 3000)) -> list[Path]:
    sources = sorted(photos.glob("*.jpg"))
    if not sources:
        raise SystemExit(f"{photos}: no *.jpg photos")
    dst.mkdir(parents=True, exist_ok=True)

    def one(i: int) -> Path:
        src = sources[i % len(sources)]
        img = Image.open(src).convert("RGB").resize(size, Image.BICUBIC)
        t = VARIANTS[(i // len(sources)) % len(VARIANTS)]
        if t is not None:
            img = img.transpose(t)
        out = dst / f"{i:04d}_{src.stem}.jpg"
        img.save(out, quality=90)
        return out

    with ThreadPoolExecutor(os.cpu_count() or 1) as pool:
        return list(pool.map(one, range(n)))


def drain(loader: DataLoader) -> int:
    n = 0
    for batch in loader:
        n += batch[-1].shape[0]  # ids (ours) or labels (ImageFolder)
    return n


class Ours:
    def __init__(self, root: Path, cache_dir: Path, size: int, batch: int, workers: int, seed: int = 0) -> None:
        self.root, self.cache_dir, self.size, self.batch, self.workers, self.seed = (
            root,
            cache_dir,
            size,
            batch,
            workers,
            seed,
        )
        self.dataset: PairDataset | None = None

    def epoch(self, epoch: int) -> tuple[float, int]:
        t = time.perf_counter()
        if self.dataset is None:  # once per run, as in moco.train._fit
            cache = DecodeCache.build(list_images(self.root), round(self.size * CACHE_SCALE), self.cache_dir)
            self.dataset = PairDataset(cache.array, TwoCropsTransform(make_preset("moco-v2", self.size)), self.seed)
        batches = epoch_batches(len(self.dataset), self.batch, epoch, self.seed)
        loader = DataLoader(
            self.dataset, batch_sampler=BatchList(batches), num_workers=self.workers, persistent_workers=False
        )
        n = drain(loader)
        return time.perf_counter() - t, n


class Peer:
    def __init__(self, root: Path, size: int, batch: int, workers: int) -> None:
        self.dataset = torchvision.datasets.ImageFolder(
            str(root), transform=TwoCropsTransform(make_preset("moco-v2", size))
        )
        self.batch, self.workers = batch, workers

    def epoch(self, epoch: int) -> tuple[float, int]:
        t = time.perf_counter()
        loader = DataLoader(self.dataset, batch_size=self.batch, shuffle=True, drop_last=True, num_workers=self.workers)
        n = drain(loader)
        return time.perf_counter() - t, n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--photos", type=Path, default=DEFAULT_PHOTOS)
    ap.add_argument("--n", type=int, default=150)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=3, help="timed epochs (2, 3, ...) per pipeline")
    ap.add_argument("--out", type=Path, default=BENCH / "results" / "decode_pipeline.json")
    a = ap.parse_args()
    torch.manual_seed(0)
    work = Path(tempfile.mkdtemp(prefix="bench-decode-"))
    try:
        t = time.perf_counter()
        make_big_jpegs(a.photos, work / "photos" / "all", a.n)
        make_s = time.perf_counter() - t
        root = work / "photos"
        ours = Ours(root, work / "cache", a.size, a.batch_size, a.workers)
        peer = Peer(root, a.size, a.batch_size, a.workers)
        warm = {"ours": ours.epoch(0), "peer": peer.epoch(0)}
        for name, (s, n) in warm.items():
            print(json.dumps({"pipeline": name, "epoch": 1, "seconds": s, "images": n}), file=sys.stderr, flush=True)
        times: dict[str, list[float]] = {"ours": [], "peer": []}
        for r in range(a.repeats):
            order = (("ours", ours), ("peer", peer)) if r % 2 == 0 else (("peer", peer), ("ours", ours))
            for name, pipe in order:
                s, n = pipe.epoch(r + 1)
                times[name].append(s)
                print(
                    json.dumps({"pipeline": name, "epoch": r + 2, "seconds": s, "images": n}),
                    file=sys.stderr,
                    flush=True,
                )
        # a second run on the same folder: the cache is only re-validated (stat), never decoded again
        t = time.perf_counter()
        DecodeCache.build(list_images(root), round(a.size * CACHE_SCALE), work / "cache")
        reopen_s = time.perf_counter() - t
    finally:
        shutil.rmtree(work, ignore_errors=True)
    ours_s, peer_s = statistics.median(times["ours"]), statistics.median(times["peer"])
    result = {
        "benchmark": "decode_pipeline",
        "machine": machine_info(),
        "settings": {
            "n_images": a.n,
            "image_px": "4000x3000",
            "jpeg_quality": 90,
            "preset": "moco-v2",
            "size": a.size,
            "cache_side": round(a.size * CACHE_SCALE),
            "batch_size": a.batch_size,
            "workers": a.workers,
            "images_per_epoch": warm["ours"][1],
            "timed_epochs_each": a.repeats,
        },
        "make_jpegs_s": make_s,
        "epoch1_s": {"ours (incl. cache build)": warm["ours"][0], "peer": warm["peer"][0]},
        "epoch2plus_s": times,
        "ours_epoch2_s": ours_s,
        "peer_epoch2_s": peer_s,
        "cache_revalidate_s": reopen_s,
        "ratio": peer_s / ours_s,
        "goal": 5.0,
    }
    result["goal_met"] = result["ratio"] >= result["goal"]
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    print()
    print("| pipeline | epoch 1 (s) | epoch 2+ (s, median) | per epoch |")
    print("|---|---|---|---|")
    print(
        f"| retrieval: DecodeCache + PairDataset | {warm['ours'][0]:.2f} | {ours_s:.2f} | "
        f"{', '.join(f'{x:.2f}' for x in times['ours'])} |"
    )
    print(
        f"| torchvision ImageFolder | {warm['peer'][0]:.2f} | {peer_s:.2f} | "
        f"{', '.join(f'{x:.2f}' for x in times['peer'])} |"
    )
    print(f"| **ratio (epoch 2+)** | | **{result['ratio']:.1f}x** (goal >= {result['goal']:.0f}x) | |")


if __name__ == "__main__":
    main()
