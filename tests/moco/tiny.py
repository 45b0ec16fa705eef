"""Tiny, seeded fixtures shared by the training tests: image folders made with numpy/PIL, a light view
transform, and a TrainConfig sized for a 2-core CPU (resnet18, 32 px, dim 16, K <= 32, workers 0)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from torchvision import transforms as T

from moco.augment.presets import IMAGENET_MEAN, IMAGENET_STD
from moco.config import MoCoConfig, TrainConfig


def make_images(root: Path, n: int, seed: int = 0, size: int = 40, start: int = 0) -> list[Path]:
    """n distinct RGB noise images (size x size PNG), named img000.png ... under root."""
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(start, start + n):
        p = root / f"img{i:03d}.png"
        Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(p)
        paths.append(p)
    return paths


def make_colour_classes(root: Path, per_class: int = 10, seed: int = 0) -> None:
    """A labelled folder root/red/*.png, root/blue/*.png: shades of one hue per class, with noise."""
    rng = np.random.default_rng(seed)
    for name, channel in (("red", 0), ("blue", 2)):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            a = rng.integers(0, 60, (24, 24, 3)).astype(np.uint8)
            a[..., channel] = rng.integers(150, 256)
            Image.fromarray(a).save(root / name / f"{i:02d}.png")


def light_views(size: int) -> T.Compose:
    """Stand-in for the augmentation preset: both views are the resized image itself.

    At 32 px a resnet18 does not learn the MoCo v2 pretext task (crops, colour jitter, grey, blur) in the
    few dozen steps a unit test can afford; with easy views InfoNCE must fall, so the loop's optimisation
    (gradients, LR, momentum encoder, queue) is what the test measures.
    """
    return T.Compose([T.Resize(size), T.CenterCrop(size), T.ToTensor(), T.Normalize(IMAGENET_MEAN, IMAGENET_STD)])


def tiny_config(images: Path, out: Path, model: dict[str, Any] | None = None, **train: Any) -> TrainConfig:
    m = {"arch": "resnet18", "dim": 16, "queue_size": 32, **(model or {})}
    t = {
        "crop_size": 32,
        "batch_size": 8,
        "epochs": 2,
        "workers": 0,
        "device": "cpu",
        "seed": 0,
        "warmup_steps": 1,
        "checkpoint_every": 10_000,
        **train,
    }
    return TrainConfig(images=str(images), out=str(out), model=MoCoConfig(**m), **t)
