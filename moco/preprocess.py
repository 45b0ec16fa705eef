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

import numpy as np
import torch
import torchvision.transforms.functional as TF
from PIL import Image

from moco.straighten import straighten as straighten_picture

RESIZES = ("shorter-side+center-crop", "squash")
TRIM_TOLERANCE = 12  # grey levels a border pixel may differ from the corner colour
TRIM_MIN_AREA = 0.1  # never trim to less than this share of the picture (a plain picture is not a frame)
TRIM_MAX_FRAMES = 3  # frames inside frames trimmed at most
TRIM_SHAVE = 0.01  # share of each cut side trimmed beyond the frame (at least one pixel)
TRIM_NOISE = 0.01  # a row or column with fewer differing pixels than this share of its length is still frame
TRIM_REVISION = 2  # bump whenever trim_borders cuts differently: part of the encoder identity (moco.export),
# so an index made with an earlier trim asks for --rebuild instead of mixing vectors
STANDARD_MEAN, STANDARD_STD = 0.45, 0.22  # per-image channel statistics after `standardize` (natural-image like)


def _content_span(counts: np.ndarray, least: float) -> tuple[int, int] | None:
    rows = np.flatnonzero(counts >= least)
    return (int(rows[0]), int(rows[-1]) + 1) if len(rows) else None


def _trim_once(im: Image.Image, tolerance: int, min_area: float) -> Image.Image:
    grey = np.asarray(im.convert("L"), dtype=np.int16)
    h, w = grey.shape
    content = np.abs(grey - grey[0, 0]) > tolerance
    # a row or column is picture when enough of it differs from the corner: stray JPEG noise in a frame is not
    ys = _content_span(content.sum(axis=1), max(2.0, TRIM_NOISE * w))
    xs = _content_span(content.sum(axis=0), max(2.0, TRIM_NOISE * h))
    if ys is None or xs is None:
        return im
    box = (xs[0], ys[0], xs[1], ys[1])
    if box == (0, 0, w, h) or (box[2] - box[0]) * (box[3] - box[1]) < min_area * w * h:
        return im
    # each side that was cut moves in a little further, past the pixels where frame and picture blend
    # (resampling and JPEG smear a frame's edge), so that a frame inside shows its true colour at the corner
    dx, dy = max(1, round(TRIM_SHAVE * (box[2] - box[0]))), max(1, round(TRIM_SHAVE * (box[3] - box[1])))
    left, top = box[0] + (dx if box[0] > 0 else 0), box[1] + (dy if box[1] > 0 else 0)
    right, bottom = box[2] - (dx if box[2] < w else 0), box[3] - (dy if box[3] < h else 0)
    return im.crop((left, top, right, bottom) if right - left > 2 and bottom - top > 2 else box)


def trim_borders(
    im: Image.Image, tolerance: int = TRIM_TOLERANCE, min_area: float = TRIM_MIN_AREA, max_frames: int = TRIM_MAX_FRAMES
) -> Image.Image:
    """Crop away frames of the top-left corner's colour (within `tolerance` grey levels), one inside the
    other: a border added around a drawing on a plain background goes, and then the background."""
    for _ in range(max_frames):
        trimmed = _trim_once(im, tolerance, min_area)
        if trimmed is im:
            break
        im = trimmed
    return im


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
    "copy-detection": {
        "resize": "squash",
        "grayscale": True,
        "standardize": True,
        "trim_borders": True,
        "straighten": True,
    },
}
