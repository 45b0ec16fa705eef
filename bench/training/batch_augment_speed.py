"""Augmentation throughput (image pairs/s) of the worker path against the batch path, same run, interleaved.

Worker path: `moco.data.PairDataset` with the moco-v2 PIL preset, one sample at a time in this process (what
one data-loader worker does). Batch path: `moco.augment.batch.BatchTwoCrops` on uint8 batches of the cached
squares (side = size x 1.25, as `moco.train` caches them), here on the CPU with the same thread count; the
ratio is batch / worker per core. Both make the query and the key view of every image. Rounds alternate the
two paths, `--rounds` times; medians are reported.

With CUDA present it also times the batch path on the GPU, and MoCo training steps (ResNet-18 and ResNet-50,
bf16 autocast, channels-last) fed by it from uint8 batches already on the GPU: training pairs/s, and the GPU
utilisation torch.cuda.utilization() reports during the steps where pynvml is installed.

    python -m bench.training.batch_augment_speed [--sizes 64,112] [--batch-size 64] [--rounds 3] [--threads 1]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

from bench.kit.machine import machine_info
from moco.augment.batch import BatchTwoCrops
from moco.augment.batch_params import batch_recipe
from moco.augment.presets import TwoCropsTransform, make_preset
from moco.data import CACHE_SCALE, PairDataset, sample_seed

BENCH = Path(__file__).resolve().parents[1]


def squares(n: int, side: int, seed: int = 0) -> np.ndarray:
    """n smooth-ish uint8 squares (noise upsampled), the cache's layout (n, side, side, 3)."""
    rng = np.random.default_rng(seed)
    small = torch.from_numpy(rng.integers(0, 256, (n, 3, side // 4, side // 4)).astype(np.float32))
    big = torch.nn.functional.interpolate(small, size=(side, side), mode="bilinear", align_corners=False)
    return big.clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).contiguous().numpy()


def worker_rate(ds: PairDataset, n: int, epoch: int) -> float:
    t = time.perf_counter()
    for i in range(n):
        ds[(epoch, i)]
    return n / (time.perf_counter() - t)


def batch_rate(crops: BatchTwoCrops, batch: torch.Tensor, epoch: int, sync: bool = False) -> float:
    seeds = [sample_seed(0, epoch, i) for i in range(batch.shape[0])]
    if sync:
        torch.cuda.synchronize()
    t = time.perf_counter()
    crops(batch, seeds)
    if sync:
        torch.cuda.synchronize()
    return batch.shape[0] / (time.perf_counter() - t)


def cpu_rows(sizes: list[int], n: int, rounds: int) -> list[dict]:
    rows = []
    for size in sizes:
        array = squares(n, round(size * CACHE_SCALE))
        ds = PairDataset(array, TwoCropsTransform(make_preset("moco-v2", size)), seed=0)
        crops = BatchTwoCrops(batch_recipe("moco-v2", size))
        batch = torch.from_numpy(array)
        worker_rate(ds, 4, -1), batch_rate(crops, batch[:4], -1)  # warm-up
        rates: dict[str, list[float]] = {"worker": [], "batch": []}
        for r in range(rounds):
            order = ("worker", "batch") if r % 2 == 0 else ("batch", "worker")
            for path in order:
                rate = worker_rate(ds, n, r) if path == "worker" else batch_rate(crops, batch, r)
                rates[path].append(rate)
        med = {k: statistics.median(v) for k, v in rates.items()}
        rows.append(
            {"size": size, "pairs_per_s": rates, "median": med, "batch_over_worker": med["batch"] / med["worker"]}
        )
        print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    return rows


def gpu_utilisation() -> float | None:
    try:
        return float(torch.cuda.utilization())
    except Exception:  # noqa: BLE001 - pynvml missing or no NVML: not measured
        return None


def cuda_rows(sizes: list[int], steps: int) -> dict:
    """Batch path alone on the GPU (batch 256), then MoCo steps fed by it (112 px, batch 256)."""
    import torch.nn.functional as F

    from moco.config import MoCoConfig
    from moco.model import MoCo

    dev = torch.device("cuda")
    out: dict = {"device": torch.cuda.get_device_name(0), "augment": [], "training": []}
    for size in sizes:
        batch = torch.from_numpy(squares(256, round(size * CACHE_SCALE))).to(dev)
        crops = BatchTwoCrops(batch_recipe("moco-v2", size))
        batch_rate(crops, batch, -1, sync=True)
        rates = [batch_rate(crops, batch, r, sync=True) for r in range(5)]
        out["augment"].append({"size": size, "batch": 256, "pairs_per_s": statistics.median(rates)})
    size = 112
    batch = torch.from_numpy(squares(256, round(size * CACHE_SCALE))).to(dev)
    crops = BatchTwoCrops(batch_recipe("moco-v2", size))
    for arch in ("resnet18", "resnet50"):
        torch.manual_seed(0)
        model = MoCo(MoCoConfig(arch=arch, queue_size=4096, bn_splits=1)).to(dev).to(memory_format=torch.channels_last)
        opt = torch.optim.SGD(model.encoder_q.parameters(), lr=0.03, momentum=0.9)
        util: list[float] = []
        t = 0.0
        for s in range(steps + 2):
            if s == 2:  # two warm-up steps (cuDNN autotuning)
                torch.cuda.synchronize()
                t = time.perf_counter()
            seeds = [sample_seed(0, s, i) for i in range(batch.shape[0])]
            im_q, im_k = (v.contiguous(memory_format=torch.channels_last) for v in crops(batch, seeds))
            with torch.autocast("cuda", dtype=torch.bfloat16):
                logits, labels = model(im_q, im_k, generator=torch.Generator().manual_seed(s))
                loss = F.cross_entropy(logits.float(), labels)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            u = gpu_utilisation()
            if u is not None and s >= 2:
                util.append(u)
        torch.cuda.synchronize()
        rate = steps * batch.shape[0] / (time.perf_counter() - t)
        row = {"arch": arch, "size": size, "batch": 256, "pairs_per_s": rate}
        row["gpu_utilisation_pct"] = statistics.mean(util) if util else None
        out["training"].append(row)
        print(json.dumps(row), file=sys.stderr, flush=True)
    return out


def markdown(result: dict) -> str:
    m = result["machine"]
    lines = [
        "## Augmentation throughput: PIL per sample (worker path) against whole uint8 batches (issue 14)",
        "",
        f"`{result['command']}`: moco-v2 views (query and key) of {result['images']} cached squares (side = size x "
        f"{CACHE_SCALE}), {result['threads']} torch thread(s), {m['cpus']} CPUs ({m['processor']}), load average "
        f"{m['load_avg_at_start'][0]:.1f} at the start and {result['load_avg_at_end'][0]:.1f} at the end. The two "
        "paths alternate round by round; medians of the rounds. Worker path: one sample at a time, as one "
        "data-loader worker; batch path: `moco.augment.batch.BatchTwoCrops` on the CPU, one call per batch. "
        "The batch path is there for the GPU (a loader's workers then only copy uint8 rows); on the CPU it runs "
        "about even with PIL. On a shared machine the spread of the rounds shows the noise.",
        "",
        "| px | worker pairs/s (rounds) | batch pairs/s (rounds) | batch / worker |",
        "|---|---|---|---|",
    ]
    for r in result["cpu"]:
        w, b = r["pairs_per_s"]["worker"], r["pairs_per_s"]["batch"]
        lines.append(
            f"| {r['size']} | {r['median']['worker']:.0f} ({', '.join(f'{x:.0f}' for x in w)}) "
            f"| {r['median']['batch']:.0f} ({', '.join(f'{x:.0f}' for x in b)}) | {r['batch_over_worker']:.2f} |"
        )
    cuda = result.get("cuda")
    if cuda:
        lines += ["", f"On {cuda['device']}: the batch path alone (batch 256)", "", "| px | pairs/s |", "|---|---|"]
        lines += [f"| {r['size']} | {r['pairs_per_s']:.0f} |" for r in cuda["augment"]]
        lines += [
            "",
            "MoCo steps fed by it (112 px, batch 256, bf16)",
            "",
            "| arch | pairs/s | GPU util % |",
            "|---|---|---|",
        ]
        for r in cuda["training"]:
            u = "n/a" if r["gpu_utilisation_pct"] is None else f"{r['gpu_utilisation_pct']:.0f}"
            lines.append(f"| {r['arch']} | {r['pairs_per_s']:.0f} | {u} |")
    else:
        lines += [
            "",
            "No CUDA device here: the GPU rows (batch path on the GPU, R18/R50 training, utilisation) were not run.",
        ]
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", default="64,112")
    ap.add_argument("--batch-size", type=int, default=64, help="images per round (one batch on the batch path)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1, help="torch threads for both paths (a worker runs one)")
    ap.add_argument("--cuda-steps", type=int, default=20)
    ap.add_argument("--out", type=Path, default=BENCH / "results" / "batch_augment_speed.json")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    sizes = [int(s) for s in a.sizes.split(",")]
    start = machine_info()
    result: dict = {
        "benchmark": "batch_augment_speed",
        "command": "python -m bench.training.batch_augment_speed " + " ".join(sys.argv[1:]),
        "machine": start,
        "threads": a.threads,
        "images": a.batch_size,
        "cpu": cpu_rows(sizes, a.batch_size, a.rounds),
    }
    if torch.cuda.is_available():
        result["cuda"] = cuda_rows(sizes, a.cuda_steps)
    result["load_avg_at_end"] = list(os.getloadavg())
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(result, indent=2) + "\n")
    md = markdown(result)
    a.out.with_suffix(".md").write_text(md)
    print(md)


if __name__ == "__main__":
    main()
