"""--val DIR: a labelled folder (one subfolder per class) scored each epoch by what a searcher sees (precision@10:
the share of a held-out query's first 10 results in its class) and by weighted kNN top-1."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import torch

from moco.augment.presets import eval_transform
from moco.measure.knn import precision_at_k, weighted_knn_top1
from moco.model import MoCo
from plumbing.errors import InputError
from plumbing.images import BadImageError, list_images, load_image

logger = logging.getLogger(__name__)

FIRST_PAGE = 10  # results a searcher sees first: precision@FIRST_PAGE is the verdict's measure


def labelled_images(root: Path) -> tuple[list[Path], list[int], list[str]]:
    """Images under root/<class>/..., their class indices and the class names (sorted)."""
    if not root.is_dir():
        raise InputError(f"{root}: labelled folder does not exist")
    classes = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    paths, labels = [], []
    for c, name in enumerate(classes):
        for p in list_images(root / name):
            paths.append(p)
            labels.append(c)
    if len(classes) < 2 or not paths:
        raise InputError(f"{root}: needs at least two class subfolders with images")
    return paths, labels, classes


def holdout_split(labels: list[int], every: int = 5) -> tuple[list[int], list[int]]:
    """Deterministic 80/20 split: every 5th image of each class is held out as a query."""
    seen: dict[int, int] = {}
    train, test = [], []
    for i, y in enumerate(labels):
        seen[y] = seen.get(y, 0) + 1
        (test if seen[y] % every == 0 else train).append(i)
    return train, test


@dataclass(frozen=True)
class ValScores:
    """One encoder on the held-out queries: kNN top-1 and each query's first-page precision (same query order for
    every encoder of one validator, so two encoders' precisions pair up query by query)."""

    knn_top1: float
    first_page: tuple[float, ...]  # per held-out query: the share of its first FIRST_PAGE results in its class

    @property
    def precision_at_10(self) -> float:
        return sum(self.first_page) / max(1, len(self.first_page))


@dataclass
class KnnValidator:
    x: torch.Tensor  # (N, 3, S, S) preprocessed images
    y: torch.Tensor  # (N,)
    train_idx: list[int]
    test_idx: list[int]

    @staticmethod
    def load(root: Path, size: int) -> KnnValidator:
        paths, labels, _ = labelled_images(root)
        tf = eval_transform(size)
        xs, ys = [], []
        for p, y in zip(paths, labels, strict=True):
            try:
                xs.append(tf(load_image(p, min_side=size)))
                ys.append(y)
            except BadImageError as e:
                logger.warning("validation: skipped %s", e)
        train, test = holdout_split(ys)
        if not train or not test:
            raise InputError(
                f"{root}: too few readable images to score kNN (every 5th of a class is held out "
                "as a query: give some class at least 5)"
            )
        return KnnValidator(torch.stack(xs), torch.tensor(ys), train, test)

    @torch.no_grad()
    def scores(self, model: MoCo, device: torch.device, batch: int = 128) -> ValScores:
        """The held-out queries (every 5th of a class) searched among the rest with `model.encode`."""
        was_training = model.training
        model.eval()
        z = torch.cat([model.encode(self.x[i : i + batch].to(device)).cpu() for i in range(0, len(self.x), batch)])
        model.train(was_training)
        gallery, queries = (z[self.train_idx], self.y[self.train_idx]), (z[self.test_idx], self.y[self.test_idx])
        knn = weighted_knn_top1(*gallery, *queries)
        return ValScores(knn, tuple(precision_at_k(*gallery, *queries, FIRST_PAGE).tolist()))

    def evaluate(self, model: MoCo, device: torch.device, batch: int = 128) -> float:
        """kNN top-1 of the held-out queries (`scores` has the first-page precision too)."""
        return self.scores(model, device, batch).knn_top1
