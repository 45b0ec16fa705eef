"""torch.compile against eager for one MoCo training step on this CPU (image pairs/s), same run, interleaved.

One step is `moco.train.fit`'s: query forward + backward, shuffled key forward, momentum update, SGD step, on
random tensors (no data loading). The compiled variant wraps both encoders in `torch.compile` (inductor, the
default mode); its first steps (the compile itself) are timed apart. After one warm-up step of each, eager and
compiled steps alternate, `--steps` of each per round, `--rounds` rounds; medians are reported with the ratio.

    python -m bench.training.compile_speed [--stem cifar --width 16 --size 32] [--batch-size 64]
        [--steps 5] [--rounds 3]
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import time
from pathlib import Path

import torch

from bench.kit.machine import machine_info
from bench.training.step_speed import moco_step
from moco.config import MoCoConfig
from moco.devices import cpu_bf16_kind
from moco.model import MoCo

BENCH = Path(__file__).resolve().parents[1]


def step(model: MoCo, opt: torch.optim.Optimizer, x: torch.Tensor, s: int) -> None:
    moco_step(model, opt, x, x.flip(3), s)


def timed(model: MoCo, opt: torch.optim.Optimizer, x: torch.Tensor, steps: int, start: int) -> float:
    t = time.perf_counter()
    for s in range(steps):
        step(model, opt, x, start + s)
    return steps * x.shape[0] / (time.perf_counter() - t)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--stem", default="cifar")
    ap.add_argument("--width", type=int, default=16)
    ap.add_argument("--size", type=int, default=32)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--out", type=Path, default=BENCH / "results" / "compile_speed.json")
    a = ap.parse_args()
    torch.manual_seed(0)
    cfg = MoCoConfig(stem=a.stem, width=a.width, queue_size=4096, bn_splits=8)
    eager = MoCo(cfg)
    compiled = copy.deepcopy(eager)
    compiled.encoder_q = torch.compile(compiled.encoder_q)  # type: ignore[assignment]
    compiled.encoder_k = torch.compile(compiled.encoder_k)  # type: ignore[assignment]
    opts = {
        name: torch.optim.SGD([p for p in m.parameters() if p.requires_grad], lr=0.03, momentum=0.9)
        for name, m in (("eager", eager), ("compiled", compiled))
    }
    models = {"eager": eager, "compiled": compiled}
    x = torch.randn(a.batch_size, 3, a.size, a.size)
    t = time.perf_counter()
    step(compiled, opts["compiled"], x, 0)
    step(compiled, opts["compiled"], x, 1)  # a second call may recompile (dynamic shapes off: it should not)
    compile_s = time.perf_counter() - t
    step(eager, opts["eager"], x, 0)
    rates: dict[str, list[float]] = {"eager": [], "compiled": []}
    for r in range(a.rounds):
        order = ("eager", "compiled") if r % 2 == 0 else ("compiled", "eager")
        for name in order:
            rates[name].append(timed(models[name], opts[name], x, a.steps, 10 + r * a.steps))
    med = {k: statistics.median(v) for k, v in rates.items()}
    result = {
        "benchmark": "compile_speed",
        "command": "python -m bench.training.compile_speed " + f"--stem {a.stem} --width {a.width} --size {a.size}",
        "machine": machine_info(),
        "cpu_bf16": cpu_bf16_kind() or "none",
        "threads": torch.get_num_threads(),
        "batch_size": a.batch_size,
        "compile_s": compile_s,
        "img_per_s": rates,
        "median_img_per_s": med,
        "compiled_over_eager": med["compiled"] / med["eager"],
    }
    a.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k != "machine"}, indent=1))


if __name__ == "__main__":
    main()
