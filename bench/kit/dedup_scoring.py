"""Scoring helpers the near-duplicate benchmarks share (dedup_quality, dedup_threshold, dedup_descriptor):
embed a folder, form groups as `retrieval dedup` does (optionally verified), best F1 over thresholds."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path

import numpy as np

from plumbing.images import list_images, load_image
from retrieval.dedup.groups import GroupingConfig, PairChecks, find_groups
from retrieval.dedup.verify.align import alignments, folder_thumbnails
from retrieval.embed import Embedder
from retrieval.evaluate.metrics import best_f1, precision_recall_curve
from retrieval.records import FileRecord


def best_over_thresholds(score_groups: Callable[[float], list[list[str]]], thresholds, truth) -> dict:  # noqa: ANN001
    """The best F1 over `thresholds` (the first of equal ones), as `retrieval eval dedup` finds it
    (retrieval.evaluate.metrics.precision_recall_curve and best_f1)."""
    best = best_f1(precision_recall_curve(score_groups, thresholds, truth))
    return {**best.score.as_dict(), "threshold": round(best.threshold, 3)}


def folder_verifier(images: Path, rel: list[str]) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    """find_groups' `verify` for the files rel[id] under `images`, each pair aligned once (memoised), so
    a sweep over thresholds pays for each pair once."""
    thumbs = folder_thumbnails(images, rel)
    cached: dict[int, np.ndarray | None] = {}
    memo: dict[tuple[int, int], float] = {}

    def thumb(i: int) -> np.ndarray | None:
        if i not in cached:
            cached[i] = thumbs(i)
        return cached[i]

    def verify(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
        pairs = list(zip(src.tolist(), dst.tolist(), strict=True))
        new = [p for p in dict.fromkeys(pairs) if p not in memo]
        if new:
            got = alignments(thumb, np.array([a for a, _ in new]), np.array([b for _, b in new]))
            memo.update(zip(new, got.tolist(), strict=True))
        return np.array([memo[p] for p in pairs], dtype=np.float32)

    return verify


def embed_folder(encoder_dir: Path, images: Path) -> tuple[list[str], np.ndarray]:
    emb = Embedder.load(encoder_dir, "cpu")
    paths = list_images(images)
    vecs = [
        emb.encode([load_image(p, min_side=emb.min_side) for p in paths[i : i + 64]]) for i in range(0, len(paths), 64)
    ]
    return [str(p.relative_to(images)) for p in paths], np.concatenate(vecs)


def scorer(
    rel: list[str],
    vecs: np.ndarray,
    rank: int,
    catalog: dict[str, FileRecord],
    verify: Callable[[np.ndarray, np.ndarray], np.ndarray] | None = None,
) -> Callable[[float], list[list[str]]]:
    """Groups at a threshold as `retrieval dedup` forms them: the catalog's sizes and hashes (keeper rule,
    exact copies), ids renumbered to the rows of `vecs`; with `verify` (`folder_verifier`), verified."""
    recs = [dataclasses.replace(catalog[r], id=i) for i, r in enumerate(rel)]
    return lambda t: [
        [g.keep.path] + [d.record.path for d in g.duplicates]
        for g in find_groups(
            recs,
            vecs,
            GroupingConfig(float(t), background_rank=rank),
            checks=None if verify is None else PairChecks(verify),
        )
    ]
