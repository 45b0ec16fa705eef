"""Category kNN top-1 of an exported encoder on a labelled folder (class subfolders).

Every 5th image of each class is a query, the rest the gallery (moco.measure.validation.holdout_split); each
query is classified by a weighted vote of its 20 nearest gallery images (T 0.07), computed with the
functions `retrieval eval knn` uses (retrieval.evaluate.metrics: exact_neighbours, knn_top1, whose vote is
moco.measure.knn's). `retrieval eval knn` itself scores leave one out with the MoCo monitor's k 200 and T 0.1.

    python -m bench.kit.knn_quality LABELLED_DIR --model runs/NAME [--model runs/OTHER ...] [--random-init]
"""

from __future__ import annotations

import argparse
import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from moco.export import save_random_encoder
from moco.measure.validation import holdout_split, labelled_images
from plumbing.images import load_image
from retrieval.embed import Embedder
from retrieval.evaluate import metrics

K = 20  # neighbours that vote (the published figures' setting)
TEMPERATURE = 0.07


def embed_paths(embedder: Embedder, paths: list[Path], batch: int = 128) -> np.ndarray:
    out = []
    with ThreadPoolExecutor(8) as pool:
        for i in range(0, len(paths), batch):
            ims = list(pool.map(lambda p: load_image(p, min_side=embedder.min_side), paths[i : i + batch]))
            out.append(embedder.encode(ims, batch_size=batch))
    return np.concatenate(out)


def holdout_top1(z: np.ndarray, labels: list[int]) -> float:
    """Weighted kNN top-1 of the held-out 20% (every 5th image of a class) against the rest."""
    y = np.asarray(labels)
    train, test = holdout_split(labels)
    D, I = metrics.exact_neighbours(z[train], z[test], K)  # noqa: E741  (Q, K)
    return float(metrics.knn_top1(D, I, y[train], y[test], K, TEMPERATURE).mean())


def knn_top1(model_dir: Path, root: Path, device: str = "auto") -> float:
    paths, labels, _ = labelled_images(root)
    return holdout_top1(embed_paths(Embedder.load(model_dir, device), paths), labels)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("data", type=Path)
    ap.add_argument("--model", type=Path, action="append", default=[])
    ap.add_argument("--random-init", type=int, default=0, help="also score a random-init encoder at this size")
    ap.add_argument("--device", default="auto")
    a = ap.parse_args()
    results = {}
    if a.random_init:
        rnd = Path("runs/random-init")
        save_random_encoder(rnd, embed_size=a.random_init, dim=0)
        results["random-init"] = knn_top1(rnd, a.data, a.device)
    for m in a.model:
        results[str(m)] = knn_top1(m, a.data, a.device)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
