"""Continued training from an init: which warm-start measures keep the initial features (CPU, no labels in training).

1. A source encoder, "trained elsewhere": `fit` for --source-min minutes on the clip-art categories of part A
   (every other category, sorted by name).
2. From it, the same number of steps of continued training on part B (the other categories; at most
   --per-class images each), four ways, one after the other:
   - naive: queue left random, backbone and head learn together at the full rate (init_head_steps 0, init_lr_scale 1);
   - fill: the queue filled with the initial encoder's keys, nothing else;
   - head first + 0.1x: the head alone for a quarter of the run, then the backbone at 0.1x (queue random);
   - all three: the default.
3. Scored on part B: weighted kNN top-1 by category (every 5th image held out; moco.measure.knn, k=20) and the mean
   cosine between each image's descriptor under the init and after training (1.0 = features unchanged),
   with the init itself and a random-init encoder as the reference rows.

    python -m bench.training.init_warm_start [--data ~/.cache/retrieval-datasets/clipart] [--source-min 6] [--epochs 4]
        [--work DIR --reuse-source]
    python -m bench.training.init_warm_start --markdown-only   # rebuild the .md from the .json
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import tempfile
import time
from pathlib import Path

import torch

import moco.train
from bench.kit.knn_quality import embed_paths
from bench.kit.machine import machine_info
from bench.kit.results import RESULTS, publish
from moco.config import MoCoConfig, TrainConfig
from moco.export import read_spec, save_random_encoder
from moco.measure.knn import weighted_knn_top1
from moco.measure.validation import holdout_split, labelled_images
from retrieval.embed import Embedder

VARIANTS = {
    "naive": {"fill": False, "init_head_steps": 0, "init_lr_scale": 1.0},
    "fill": {"fill": True, "init_head_steps": 0, "init_lr_scale": 1.0},
    "head first + 0.1x": {"fill": False},
    "all three (default)": {"fill": True},
}


def bf16_flags() -> list[str]:
    """Which of amx_bf16 / avx512_bf16 this CPU has (Linux), as `lscpu` would show them."""
    try:
        flags = set(Path("/proc/cpuinfo").read_text().split())
    except OSError:
        return []
    return [f for f in ("amx_bf16", "avx512_bf16") if f in flags]


def split_folder(data: Path, work: Path, per_class: int) -> None:
    """work/A/<cat>/ and work/B/<cat>/: symlinks to every other category; B capped at `per_class` each."""
    cats = sorted(p for p in data.iterdir() if p.is_dir())
    for j, cat in enumerate(cats):
        part = "A" if j % 2 == 0 else "B"
        files = sorted(cat.glob("*.png"))
        if part == "B":
            files = files[:per_class]
        (work / part / cat.name).mkdir(parents=True, exist_ok=True)
        for f in files:
            (work / part / cat.name / f.name).symlink_to(f)


def score(model_dir: Path, root: Path, reference: torch.Tensor | None) -> tuple[dict, torch.Tensor]:
    paths, labels, _ = labelled_images(root)
    z = torch.from_numpy(embed_paths(Embedder.load(model_dir, "cpu"), paths))
    y = torch.tensor(labels)
    train, test = holdout_split(labels)
    row = {"knn_top1": weighted_knn_top1(z[train], y[train], z[test], y[test])}
    if reference is not None:
        row["cosine_to_init"] = float((z * reference).sum(dim=1).mean())
    return row, z


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", type=Path, default=Path.home() / ".cache" / "retrieval-datasets" / "clipart")
    ap.add_argument("--work", type=Path, default=None)
    ap.add_argument("--source-min", type=float, default=6.0)
    ap.add_argument("--epochs", type=int, default=4, help="epochs of continued training on part B")
    ap.add_argument("--per-class", type=int, default=160)
    ap.add_argument("--image-size", type=int, default=64, help="training and index size (64: the CPU default)")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--reuse-source", action="store_true", help="keep --work's source encoder if it exists")
    a = ap.parse_args()
    work = a.work or Path(tempfile.mkdtemp(prefix="init-warm-start-"))
    info = machine_info()
    if not (work / "data").is_dir():
        split_folder(a.data, work / "data", a.per_class)
    part_a, part_b = work / "data" / "A", work / "data" / "B"
    base = TrainConfig(
        images="",
        out="",
        model=MoCoConfig(),
        crop_size=a.image_size,
        batch_size=a.batch_size,
        device="cpu",
        resume=False,
    )
    t0 = time.monotonic()
    source_cfg = dataclasses.replace(
        base, images=str(part_a), out=str(work / "source"), epochs=10_000, time_budget_min=a.source_min
    )
    if a.reuse_source and (work / "source" / "encoder.json").is_file():  # a source made by an earlier run
        source_steps = read_spec(work / "source").trained["steps"]
    else:
        source_steps = moco.train.fit(source_cfg).steps
    rows = {}
    init_row, z_init = score(work / "source", part_b, None)
    rows["init (source encoder, no training on B)"] = {**init_row, "cosine_to_init": 1.0, "steps": 0}
    save_random_encoder(work / "random", "resnet18", base.embed_size, dim=0)
    rows["random init"] = {**score(work / "random", part_b, z_init)[0], "steps": 0}
    real_fill = moco.train.fill_queue
    for name, v in VARIANTS.items():
        over = {k: x for k, x in v.items() if k != "fill"}
        moco.train.fill_queue = real_fill if v["fill"] else (lambda *args, **kw: 0)
        cfg = dataclasses.replace(
            base,
            images=str(part_b),
            out=str(work / name.split()[0]),
            epochs=a.epochs,
            init=str(work / "source"),
            **over,
        )
        t = time.monotonic()
        result = moco.train.fit(cfg)
        rows[name] = {
            **score(result.out_dir, part_b, z_init)[0],
            "steps": result.steps,
            "train_s": time.monotonic() - t,
        }
        print(name, json.dumps(rows[name]), flush=True)
    moco.train.fill_queue = real_fill
    n_b = len(labelled_images(part_b)[0])
    result = {
        "machine": info,
        "cpu_bf16": bf16_flags(),
        "data": str(a.data),
        "source": {"images": len(labelled_images(part_a)[0]), "steps": source_steps, "minutes": a.source_min},
        "part_b_images": n_b,
        "queries": len(holdout_split(labelled_images(part_b)[1])[1]),
        "epochs_on_b": a.epochs,
        "image_size": a.image_size,
        "batch_size": a.batch_size,
        "head_steps": moco.train.head_only_steps(dataclasses.replace(base, init="x"), rows["naive"]["steps"]),
        "rows": rows,
        "total_s": time.monotonic() - t0,
    }
    publish("init_warm_start", result, markdown(result), indent=2, newline=True)


def rewrite_markdown() -> None:
    """Only rebuild init_warm_start.md from init_warm_start.json."""
    r = json.loads((RESULTS / "init_warm_start.json").read_text())
    (RESULTS / "init_warm_start.md").write_text(markdown(r))


def markdown(r: dict) -> str:
    lines = [
        "## Continued training from an init: keeping the initial features (bench/training/init_warm_start.py)",
        "",
        f"Source encoder: ResNet-18, {r['image_size']} px, batch {r['batch_size']}, trained "
        f"{r['source']['minutes']:g} min ({r['source']['steps']} steps) on clip-art part A "
        f"({r['source']['images']} images). Continued on part B ({r['part_b_images']} images, the "
        f"other categories) for {r['epochs_on_b']} epoch(s), same size and batch; head-only steps where used: "
        f"{r['head_steps']}. Scored on part B: kNN top-1 ({r['queries']} held-out queries, so one query is "
        f"{1 / r['queries']:.4f}) and the mean cosine of each image's descriptor to its descriptor under the init. "
        "One seed.",
        "",
        "| encoder | steps on B | kNN top-1 | cosine to init |",
        "|---|---|---|---|",
    ]
    for name, row in r["rows"].items():
        lines.append(f"| {name} | {row['steps']} | {row['knn_top1']:.3f} | {row['cosine_to_init']:.3f} |")
    m = r["machine"]
    lines += [
        "",
        f"Machine: {m['cpus']} CPUs ({m['processor']}; {', '.join(r['cpu_bf16']) or 'no bf16 flags'}, shared with "
        f"other work), load average at start {m['load_avg_at_start'][0]:.2f}; "
        f"torch {m['torch']}. Total {r['total_s'] / 60:.1f} min (without the source when it was reused).",
        "",
        f"    python -m bench.training.init_warm_start --data ~/.cache/retrieval-datasets/clipart --source-min "
        f"{r['source']['minutes']:g} --epochs {r['epochs_on_b']} --image-size {r['image_size']} "
        f"--batch-size {r['batch_size']}",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    import sys

    rewrite_markdown() if sys.argv[1:] == ["--markdown-only"] else main()
