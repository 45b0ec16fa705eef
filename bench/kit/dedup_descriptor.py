"""What each part of the near-duplicate descriptor adds, scored on the benchmark folder (dedup_quality.py).

- `descriptor_steps`: the preprocessing steps of moco/preprocess.py switched on one after another
  (centre crop -> squash -> + border trim -> + grayscale -> + standardise -> + straighten).
- `descriptor_options`: the full descriptor against one change at a time: average pooling instead of GeM,
  no flip averaging, vectors centred on the corpus mean, PCA-whitened on the corpus (SSCD's
  post-processing).
Each is scored by raw cosine and by the score normalised against the 5th neighbour, at its best threshold,
without verification (the descriptor alone).
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np

from bench.kit.dedup_scoring import best_over_thresholds, embed_folder, scorer
from moco.export import LEGACY_PREPROCESSING
from retrieval.dedup.groups import BACKGROUND_RANK
from retrieval.records import FileRecord

STEPS: list[tuple[str, dict]] = [
    ("centre crop (legacy)", {"resize": "shorter-side+center-crop"}),
    ("squash", {"resize": "squash"}),
    ("+ border trim", {"resize": "squash", "trim_borders": True}),
    ("+ grayscale", {"resize": "squash", "trim_borders": True, "grayscale": True}),
    ("+ standardise", {"resize": "squash", "trim_borders": True, "grayscale": True, "standardize": True}),
    (
        "+ straighten",
        {"resize": "squash", "trim_borders": True, "grayscale": True, "standardize": True, "straighten": True},
    ),
]
WHITENING_EPS = 0.01  # eigenvalues below this share of the largest are held at it (regularised PCA whitening)


def variant(encoder_dir: Path, out: Path, overrides: dict) -> Path:
    """A copy of the encoder at `out` whose encoder.json differs by `overrides` (same weights)."""
    out.mkdir(parents=True, exist_ok=True)
    shutil.copy(encoder_dir / "encoder.safetensors", out / "encoder.safetensors")
    desc = json.loads((encoder_dir / "encoder.json").read_text())
    (out / "encoder.json").write_text(json.dumps({**desc, **overrides}))
    return out


def unit_rows(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def centred(x: np.ndarray) -> np.ndarray:
    return unit_rows(x - x.mean(axis=0))


def whitened(x: np.ndarray, eps: float = WHITENING_EPS) -> np.ndarray:
    """PCA whitening fitted on the corpus itself: centred, rotated onto the principal axes, each axis
    scaled to unit variance (small eigenvalues regularised), L2-normalised."""
    c = x - x.mean(axis=0)
    w, v = np.linalg.eigh(np.cov(c.T))
    return unit_rows(c @ v / np.sqrt(w + eps * w.max()))


def best_f1s(rel: list[str], vecs: np.ndarray, truth: list[list[str]], catalog: dict[str, FileRecord]) -> dict:
    return {
        "cosine": best_over_thresholds(scorer(rel, vecs, 0, catalog), np.arange(-0.2, 1.0, 0.004), truth),
        "normalised": best_over_thresholds(
            scorer(rel, vecs, BACKGROUND_RANK, catalog), np.arange(-0.1, 0.8, 0.01), truth
        ),
    }


def _report(name: str, out: dict) -> None:
    print(name, {k: round(v["f1"], 3) for k, v in out[name].items()}, file=sys.stderr, flush=True)


def descriptor_steps(
    encoder_dir: Path, images: Path, truth: list[list[str]], scratch: Path, catalog: dict[str, FileRecord]
) -> dict:
    """Best-threshold F1 of raw cosine and of the normalised score, for each preprocessing step."""
    out = {}
    for i, (name, steps) in enumerate(STEPS):
        overrides = {**LEGACY_PREPROCESSING, "straighten": False, **steps}
        rel, vecs = embed_folder(variant(encoder_dir, scratch / f"step-{i}", overrides), images)
        out[name] = best_f1s(rel, vecs, truth, catalog)
        _report(name, out)
    return out


def descriptor_options(
    encoder_dir: Path, images: Path, truth: list[list[str]], scratch: Path, catalog: dict[str, FileRecord]
) -> dict:
    """Best-threshold F1 of the full descriptor and of each one-change variant of it."""
    rel, vecs = embed_folder(encoder_dir, images)
    out = {"full descriptor (GeM p=3, flip-averaged)": best_f1s(rel, vecs, truth, catalog)}
    changes = (
        ("average pooling (GeM p=1)", "avg-pool", {"gem_p": 1.0}),
        ("no flip averaging", "no-flip", {"flip_average": False}),
    )
    for name, folder, overrides in changes:
        rel_v, vecs_v = embed_folder(variant(encoder_dir, scratch / folder, overrides), images)
        out[name] = best_f1s(rel_v, vecs_v, truth, catalog)
        _report(name, out)
    out["centred on the corpus mean"] = best_f1s(rel, centred(vecs), truth, catalog)
    out[f"PCA-whitened on the corpus (eps {WHITENING_EPS})"] = best_f1s(rel, whitened(vecs), truth, catalog)
    return out
