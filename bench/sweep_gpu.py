"""Hyper-parameter sweep at CPU-equivalent step counts, run on a GPU to save time (not a published result).

python -m bench.sweep_gpu CLIPART_DIR OUT_JSON '[{"steps": 400, "lr": 0.06}, ...]'

Each variant trains on CUDA when present, else on the CPU.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import torch

from bench.knn_quality import knn_top1
from moco.config import MoCoConfig, TrainConfig
from moco.train import fit


def main() -> None:
    data, out_json = Path(sys.argv[1]), Path(sys.argv[2])
    device = "cuda" if torch.cuda.is_available() else "cpu"
    variants = json.loads(sys.argv[3]) if len(sys.argv) > 3 else []
    results = []
    for i, v in enumerate(variants):
        steps = v.pop("steps")
        mkw = {k: v.pop(k) for k in list(v) if k in MoCoConfig.__dataclass_fields__}
        cfg = TrainConfig(
            images=str(data),
            out=f"runs/sweep{i}",
            model=MoCoConfig(**mkw),
            epochs=1000,
            stop_after_steps=0,
            workers=12,
            resume=False,
            **v,
        )
        cfg = TrainConfig(**{**cfg.__dict__, "epochs": max(1, -(-steps * cfg.batch_size // 7400))})
        t = time.time()
        r = fit(cfg, progress=False)
        top1 = knn_top1(Path(cfg.out), data, device)
        rec = {
            "variant": {**v, **mkw, "steps": steps},
            "trained_steps": r.steps,
            "knn_top1": top1,
            "train_s": time.time() - t,
            "loss": r.loss,
        }
        print(json.dumps(rec), flush=True)
        results.append(rec)
        out_json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
