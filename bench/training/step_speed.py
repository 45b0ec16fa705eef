"""MoCo training-step speed (image pairs/s) per backbone, input size and precision, on this CPU.

One step is what `moco.train.fit` computes: query forward + backward, shuffled key forward, momentum update,
SGD step, channels-last, ghost BN as fit picks it. Inputs are random tensors (no data loading): this measures
the network, not the pipeline. Variants run one at a time with the whole machine; within a variant fp32 and
bf16 steps alternate (`--steps` of each after one warm-up of each, `--rounds` times); medians are reported.
bf16 rows use `torch.autocast("cpu", bfloat16)`, the path `moco.devices.autocast` takes where it turns bf16 on.

    python -m bench.training.step_speed [--batch-size 64] [--steps 4] [--rounds 3]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from bench.kit.machine import machine_info
from moco.config import MoCoConfig
from moco.devices import cpu_bf16_kind
from moco.model import MoCo

BENCH = Path(__file__).resolve().parents[1]
ROOT = BENCH.parent

VARIANTS = [  # (stem, width, size)
    ("imagenet", 64, 64),
    ("imagenet", 64, 32),
    ("imagenet", 32, 64),
    ("cifar", 64, 32),
    ("cifar", 32, 32),
    ("cifar", 32, 48),
    ("cifar", 16, 64),
]


def moco_step(
    model: MoCo,
    opt: torch.optim.Optimizer,
    im_q: torch.Tensor,
    im_k: torch.Tensor,
    seed: int,
    precision: contextlib.AbstractContextManager | None = None,
) -> None:
    """One step as `moco.train.fit` computes it (forward under `precision`, e.g. an autocast; backward; SGD)."""
    with precision or contextlib.nullcontext():
        logits, labels = model(im_q, im_k, generator=torch.Generator().manual_seed(seed))
        loss = F.cross_entropy(logits.float(), labels)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()


def time_steps(stem: str, width: int, size: int, batch: int, steps: int) -> dict[bool, list[float]]:
    """Seconds per step in fp32 and in bf16, alternating step by step on one model (so that a change in the
    machine's load hits both alike), after one warm-up step of each."""
    torch.manual_seed(0)
    model = MoCo(MoCoConfig(stem=stem, width=width, queue_size=4096, bn_splits=4)).to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.encoder_q.parameters(), lr=0.01, momentum=0.9)
    x = [torch.randn(batch, 3, size, size).contiguous(memory_format=torch.channels_last) for _ in range(2)]
    times: dict[bool, list[float]] = {False: [], True: []}
    for s in range(steps + 1):
        for bf16 in (False, True):
            ctx = torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else None
            t = time.perf_counter()
            moco_step(model, opt, x[0], x[1], s, ctx)
            if s:
                times[bf16].append(time.perf_counter() - t)
    return times


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    ap.add_argument("--variants", default="", help="JSON list of [stem, width, size] (default: the built-in list)")
    ap.add_argument("--out", type=Path, default=BENCH / "results" / "train_step_speed.json")
    a = ap.parse_args()
    variants = [tuple(v) for v in json.loads(a.variants)] if a.variants else VARIANTS
    if a.threads:
        torch.set_num_threads(a.threads)
    start = machine_info()
    per: dict[tuple, list[float]] = {}
    for _ in range(a.rounds):
        for stem, width, size in variants:
            for bf16, ts in time_steps(stem, width, size, a.batch_size, a.steps).items():
                per.setdefault((stem, width, size, bf16), []).extend(ts)
                print(json.dumps({"variant": [stem, width, size, bf16], "s_per_step": ts}), file=sys.stderr, flush=True)
    rows = []
    for (stem, width, size, bf16), ts in per.items():
        s = statistics.median(ts)
        rows.append(
            {"stem": stem, "width": width, "size": size, "bf16": bf16, "s_per_step": s, "pairs_per_s": a.batch_size / s}
        )
    result = {
        "benchmark": "train_step_speed",
        "command": "python " + " ".join(["bench/training/step_speed.py", *sys.argv[1:]]),
        "machine": start,
        "cpu_bf16": cpu_bf16_kind() or "none",
        "load_avg_at_end": list(__import__("os").getloadavg()),
        "batch_size": a.batch_size,
        "rows": rows,
    }
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(result, indent=2) + "\n")
    print("| stem | width | px | fp32 pairs/s | bf16 pairs/s | bf16 / fp32 |")
    print("|---|---|---|---|---|---|")
    by = {(r["stem"], r["width"], r["size"], r["bf16"]): r["pairs_per_s"] for r in rows}
    for stem, width, size in variants:
        f32, b16 = by[(stem, width, size, False)], by[(stem, width, size, True)]
        print(f"| {stem} | {width} | {size} | {f32:.1f} | {b16:.1f} | {b16 / f32:.2f} |")


if __name__ == "__main__":
    main()
