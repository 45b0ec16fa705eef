"""Near-duplicate F1 of encoders trained on the benchmark folder itself, at several settings (a tuning aid).

python -m bench.neardup_sweep BENCH_DIR OUT_JSON '[{"steps": 200, "image_size": 64, ...}, ...]'
"""

from __future__ import annotations

import json
import shutil
import sys
import time
from pathlib import Path

import numpy as np

from bench.knn_quality import embed_paths
from bench.neardup_eval import pairwise_prf
from moco.config import MoCoConfig, TrainConfig
from moco.train import fit
from retrieval.dedup.groups import find_groups
from retrieval.embed import Embedder
from retrieval.records import FileRecord


def best_f1(vectors: np.ndarray, rel: list[str], truth: list[list[str]]) -> tuple[float, dict]:
    recs = [FileRecord(i, r, 1, 0, f"h{i}", 100, 100) for i, r in enumerate(rel)]
    best: tuple[float, dict] = (0.0, {"f1": -1.0})
    for t in np.arange(0.3, 0.995, 0.01):
        groups = find_groups(recs, vectors, float(t))
        m = pairwise_prf([[g.keep.path] + [d.record.path for d in g.duplicates] for g in groups], truth)
        if m["f1"] > best[1]["f1"]:
            best = (round(float(t), 2), m)
    return best


def centred(v: np.ndarray) -> np.ndarray:
    x = v - v.mean(0)
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def main() -> None:
    data, out_json, variants = Path(sys.argv[1]), Path(sys.argv[2]), json.loads(sys.argv[3])
    root = data / "images"
    truth = json.loads((data / "truth.json").read_text())["groups"]
    paths = sorted(root.rglob("*.jpg"))
    rel = [str(p.relative_to(root)) for p in paths]
    results = []
    for i, v in enumerate(variants):
        steps = v.pop("steps")
        sizes = v.pop("embed_sizes", [64, 128])
        mkw = {k: v.pop(k) for k in list(v) if k in MoCoConfig.__dataclass_fields__}
        bs = v.get("batch_size", 64)
        cfg = TrainConfig(
            images=str(root),
            out=f"runs/nd{i}",
            model=MoCoConfig(**mkw),
            epochs=max(1, -(-steps * bs // len(paths))),
            workers=12,
            resume=False,
            **v,
        )
        t = time.time()
        r = fit(cfg, progress=False)
        for size in sizes:
            d = Path(f"runs/nd{i}-e{size}")
            shutil.copytree(cfg.out, d, dirs_exist_ok=True, ignore=shutil.ignore_patterns("cache", "*.pt"))
            spec = json.loads((d / "encoder.json").read_text())
            spec["image_size"] = size
            (d / "encoder.json").write_text(json.dumps(spec))
            vec = embed_paths(Embedder.load(d, "auto"), paths)
            for name, x in (("raw", vec), ("centred", centred(vec))):
                t_best, m = best_f1(x, rel, truth)
                rec = {
                    "variant": {**v, **mkw, "steps": steps},
                    "trained_steps": r.steps,
                    "embed": size,
                    "descriptor": name,
                    "threshold": t_best,
                    **m,
                    "train_s": round(time.time() - t),
                }
                print(json.dumps(rec), flush=True)
                results.append(rec)
        out_json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
