"""Is CPU bf16 autocast safe for training on this CPU? One convolution's weight gradient, repeated.

    python -m bench.training.bf16_conv_check [--runs 100]

ResNet-18's layer4.0.conv1 (256 -> 512 channels, 3x3, stride 2, padding 1) on a batch of 16 inputs of 1x1, 2x2
and 4x4 pixels (a 16 px multi-crop view reaches layer4 at 1x1), forward and backward under CPU bf16 autocast and
in fp32, `--runs` times on the same input and weights. Reported per case: runs whose weight gradient has
non-finite values, and the largest difference between the finite runs' gradients (0 = deterministic). Also which
bf16 units the CPU has (moco.devices.cpu_bf16_kind). Writes bench/results/bf16_conv_check.json and .md.
"""

from __future__ import annotations

import argparse

import torch

from bench.kit.machine import machine_info
from bench.kit.results import publish
from moco.devices import cpu_bf16_kind


def check(side: int, bf16: bool, runs: int) -> dict:
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(256, 512, 3, stride=2, padding=1, bias=False)
    x = torch.randn(16, 256, side, side)
    ref: torch.Tensor | None = None
    worst, bad = 0.0, 0
    for _ in range(runs):
        conv.zero_grad()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            y = conv(x.clone().requires_grad_(True))
        y.float().sum().backward()
        g = conv.weight.grad.clone()
        if not torch.isfinite(g).all():
            bad += 1
            continue
        ref = g if ref is None else ref
        worst = max(worst, (g - ref).abs().max().item())
    scale = 0.0 if ref is None else ref.abs().max().item()
    return {"side": side, "bf16": bf16, "runs": runs, "nonfinite_runs": bad, "max_diff": worst, "grad_scale": scale}


# runs on other machines, kept here because a rerun rewrites the table above
PREVIOUS = [
    "An earlier run on a 2-vCPU Intel Xeon @ 2.80 GHz (AVX512-BF16, no AMX), torch 2.14.1: the same picture, with 0 of",
    "100 non-finite 1x1 bf16 runs but differences up to 1.28e+38 between them; 2x2 and 4x4 exact.",
]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", type=int, default=100)
    a = ap.parse_args()
    info = {**machine_info(), "bf16_kind": cpu_bf16_kind() or "none", "torch": torch.__version__}
    rows = [check(side, bf16, a.runs) for side in (1, 2, 4) for bf16 in (False, True)]
    for r in rows:
        print(r, flush=True)
    lines = [
        "### CPU bf16 autocast: one convolution's weight gradient, repeated (bench/training/bf16_conv_check.py)",
        "",
        f"`python -m bench.training.bf16_conv_check --runs {a.runs}`, torch {info['torch']}, "
        f"CPU {info['cpu_model']}, bf16 "
        f"units: {info['bf16_kind']}. ResNet-18's layer4.0.conv1 (256 -> 512, 3x3, stride 2) forward and backward on "
        "the same 16 inputs and weights each run; a 16 px multi-crop view reaches it at 1x1.",
        "",
        "| input | precision | runs with non-finite weight gradients | largest difference between finite runs "
        "| gradient scale |",
        "|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['side']}x{r['side']} | {'bf16' if r['bf16'] else 'fp32'} | {r['nonfinite_runs']} of {r['runs']} "
            f"| {r['max_diff']:.3g} | {r['grad_scale']:.3g} |"
        )
    lines += ["", *PREVIOUS, ""]
    publish("bf16_conv_check", {"machine": info, "rows": rows}, "\n".join(lines), echo=False)


if __name__ == "__main__":
    main()
