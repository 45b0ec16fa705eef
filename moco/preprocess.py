"""Descriptor preprocessing at index and query time, as recorded in encoder.json.

Each step makes the descriptor blind to an edit that duplicates commonly carry, at no training cost:

- resize "squash": the whole picture resized to a square, as training's decode cache does; an aspect
  change is undone exactly and a crop removes only what was cropped (a centre crop loses the borders).
- trim_borders: a uniform frame (padding, letterbox bars) around the picture is cut off first.
- straighten: a picture rotated on an expanded canvas (fill-coloured corners) is turned back upright and
  cut out (moco.straighten).
- grayscale: colour changes and black-and-white copies map to the same input.
- standardize: each image's channels are brought to a fixed mean and spread, so brightness and contrast
  edits cancel out.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torchvision.transforms.functional as TF
from PIL import Image, ImageChops

from moco.straighten import straighten as straighten_picture

RESIZES = ("shorter-side+center-crop", "squash")
TRIM_TOLERANCE = 12  # grey levels a border pixel may differ from the corner colour
TRIM_MIN_AREA = 0.25  # never trim to less than this share of the picture (a plain picture is not a frame)
STANDARD_MEAN, STANDARD_STD = 0.45, 0.22  # per-image channel statistics after `standardize` (natural-image like)


def trim_borders(im: Image.Image, tolerance: int = TRIM_TOLERANCE, min_area: float = TRIM_MIN_AREA) -> Image.Image:
    """Crop away a frame of the top-left corner's colour (within `tolerance` grey levels)."""
    grey = im.convert("L")
    corner = grey.getpixel((0, 0))
    diff = ImageChops.difference(grey, Image.new("L", grey.size, corner)).point(lambda v: 255 if v > tolerance else 0)
    box = diff.getbbox()
    w, h = im.size
    if box is None or (box[2] - box[0]) * (box[3] - box[1]) < min_area * w * h:
        return im
    return im.crop(box)


def standardize(x: torch.Tensor, eps: float = 0.02) -> torch.Tensor:
    """(3, H, W) in [0, 1] -> each channel at mean STANDARD_MEAN and std STANDARD_STD (flat images stay flat)."""
    mean = x.mean(dim=(1, 2), keepdim=True)
    std = x.std(dim=(1, 2), keepdim=True)
    return (x - mean) / (std + eps) * STANDARD_STD + STANDARD_MEAN


def make_preprocess(
    size: int,
    mean: tuple[float, ...],
    std: tuple[float, ...],
    resize: str = "shorter-side+center-crop",
    grayscale: bool = False,
    standardize_channels: bool = False,
    trim: bool = False,
    straighten: bool = False,
) -> Callable[[Image.Image], torch.Tensor]:
    """RGB image -> normalised (3, size, size) tensor."""
    if resize not in RESIZES:
        raise ValueError(f"unknown resize {resize!r}: choose one of {', '.join(RESIZES)}")
    mean_t = torch.tensor(mean).view(3, 1, 1)
    std_t = torch.tensor(std).view(3, 1, 1)

    def preprocess(im: Image.Image) -> torch.Tensor:
        if trim:
            im = trim_borders(im)
        if straighten:
            upright = straighten_picture(im)
            if upright is not im and trim:
                upright = trim_borders(upright)  # a frame that was rotated with the picture
            im = upright
        if grayscale:
            im = im.convert("L").convert("RGB")
        if resize == "squash":
            im = im.resize((size, size), Image.BICUBIC)
        else:
            im = TF.center_crop(TF.resize(im, size), size)
        x = TF.to_tensor(im)
        if standardize_channels:
            x = standardize(x)
        return (x - mean_t) / std_t

    return preprocess

# what `retrieval train` records for each augmentation preset: squash everywhere (as the training cache
# sees pictures); the copy-detection preset adds the steps that cancel duplicates' edits
PRESET_PREPROCESSING: dict[str, dict[str, str | bool]] = {
    "moco-v2": {"resize": "squash"},
    "copy-detection": {"resize": "squash", "grayscale": True, "standardize": True, "trim_borders": True,
                       "straighten": True},
}
