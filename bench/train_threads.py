"""Training img/s by torch threads and DataLoader workers on this CPU (does the default oversubscribe?).

Runs `moco.train.fit` (ResNet-18, `--image-size` px, batch 64) on every k-th of `--n` clip-art images for
30 steps per setting, each setting in its own subprocess, the settings in turn `--rounds` times, and reports
img/s over steps 10 to 30 (from metrics.jsonl `elapsed_s`).

    python -m bench.train_threads [--images ~/.cache/retrieval-datasets/clipart] [--n 1000] [--rounds 2]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SETTINGS = [(0, -1), (0, 0), (1, -1), (1, 0)]  # (torch threads, workers); 0 / -1 = fit's own default
FIRST, LAST = 10, 30


def child(images: Path, out: Path, threads: int, workers: int, size: int) -> dict:
    import torch

    if threads:
        torch.set_num_threads(threads)
    from moco.config import MoCoConfig, TrainConfig
    from moco.train import _workers, fit

    cfg = TrainConfig(
        images=str(images),
        out=str(out),
        model=MoCoConfig(arch="resnet18"),
        image_size=size,
        batch_size=64,
        epochs=1000,
        device="cpu",
        workers=workers,
        checkpoint_every=10**9,
        log_every=1,
        stop_after_steps=LAST,
        resume=False,
    )
    fit(cfg, progress=False)
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    elapsed = {r["step"]: r["elapsed_s"] for r in rows if "elapsed_s" in r}
    return {
        "threads": torch.get_num_threads(),
        "workers": _workers(cfg, torch.device("cpu")),
        "img_per_s": (LAST - FIRST) * 64 / (elapsed[LAST] - elapsed[FIRST]),
        "load": os.getloadavg()[0],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--images", type=Path, default=Path.home() / ".cache/retrieval-datasets/clipart")
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--image-size", type=int, default=64)
    ap.add_argument("--child", nargs=2, type=int, help=argparse.SUPPRESS)
    ap.add_argument("--work", type=Path, help=argparse.SUPPRESS)
    a = ap.parse_args()
    sys.path.insert(0, str(ROOT))
    if a.child:
        print(json.dumps(child(a.work / "images", a.work / "run", *a.child, a.image_size)))
        return
    from moco.images import list_images

    with tempfile.TemporaryDirectory(prefix="bench-threads-") as tmp:
        work = Path(tmp)
        (work / "images").mkdir()
        paths = list_images(a.images)
        for i, p in enumerate(paths[:: max(1, len(paths) // a.n)][: a.n]):
            (work / "images" / f"{i:05d}{p.suffix}").symlink_to(p.resolve())
        rows = []
        for r in range(a.rounds):
            for threads, workers in SETTINGS:
                out = subprocess.run(
                    [
                        sys.executable,
                        __file__,
                        "--child",
                        str(threads),
                        str(workers),
                        "--work",
                        str(work),
                        "--image-size",
                        str(a.image_size),
                    ],
                    check=True,
                    capture_output=True,
                    text=True,
                )
                rows.append({"round": r, **json.loads(out.stdout.strip().splitlines()[-1])})
                print(json.dumps(rows[-1]), flush=True)
    print("| torch threads | workers | " + " | ".join(f"img/s round {r + 1}" for r in range(a.rounds)) + " |")
    print("|---|---|" + "---|" * a.rounds)
    for threads, workers in sorted({(x["threads"], x["workers"]) for x in rows}, reverse=True):
        cells = [f"{x['img_per_s']:.1f}" for x in rows if (x["threads"], x["workers"]) == (threads, workers)]
        print(f"| {threads} | {workers} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
