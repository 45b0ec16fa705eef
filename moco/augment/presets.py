"""Augmentation presets: the MoCo v2 recipe, a copy-detection preset, and the eval transform."""

from __future__ import annotations

import io
import random
from collections.abc import Callable

import torch
from PIL import Image, ImageDraw, ImageFilter, ImageOps
from torchvision import transforms as T

from moco.preprocess import make_preprocess

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
MOCO_V2_MIN_SCALE = 0.2  # smallest crop area (fraction of the image)
CROP_RATIO = (3 / 4, 4 / 3)  # crop aspect ratios (torchvision's RandomResizedCrop default)
BLUR_SIGMA = (0.1, 2.0)  # Gaussian blur sigma in px for a 224 px image, scaled to the actual size
MOCO_V2_BLUR_P = 0.5
FLIP_P = 0.5


class GaussianBlur:
    """PIL Gaussian blur with a random sigma in [sigma_min, sigma_max] (MoCo v2 / SimCLR)."""

    def __init__(self, sigma: tuple[float, float] = (0.1, 2.0)) -> None:
        self.sigma = sigma

    def __call__(self, img: Image.Image) -> Image.Image:
        # sigma is given for 224 px images; scale it to the actual size
        s = random.uniform(*self.sigma) * min(img.size) / 224
        return img.filter(ImageFilter.GaussianBlur(radius=s))


class JpegReencode:
    """Re-encode as JPEG at a random quality: the artefacts real duplicates carry."""

    def __init__(self, quality: tuple[int, int] = (10, 80)) -> None:
        self.quality = quality

    def __call__(self, img: Image.Image) -> Image.Image:
        buf = io.BytesIO()
        img.save(buf, format="JPEG", quality=random.randint(*self.quality))
        buf.seek(0)
        return Image.open(buf).convert("RGB")


class RandomPad:
    """Add a border (solid colour) of up to `max_frac` of the size on each side: letterboxing, frames."""

    def __init__(self, max_frac: float = 0.25) -> None:
        self.max_frac = max_frac

    def __call__(self, img: Image.Image) -> Image.Image:
        w, h = img.size
        pads = [int(random.uniform(0, self.max_frac) * s) for s in (w, h, w, h)]
        fill = tuple(random.randint(0, 255) for _ in range(3)) if random.random() < 0.5 else (0, 0, 0)
        return ImageOps.expand(img, border=tuple(pads), fill=fill)


class RandomOverlay:
    """Draw random text-like strokes or a filled box (a logo, a caption) over part of the image."""

    def __call__(self, img: Image.Image) -> Image.Image:
        img = img.copy()
        d = ImageDraw.Draw(img)
        w, h = img.size
        colour = tuple(random.randint(0, 255) for _ in range(3))
        if random.random() < 0.5:
            x0, y0 = random.uniform(0, 0.7) * w, random.uniform(0, 0.8) * h
            d.rectangle([x0, y0, x0 + random.uniform(0.1, 0.3) * w, y0 + random.uniform(0.05, 0.2) * h], fill=colour)
        else:
            text = "".join(random.choice("ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 ") for _ in range(12))
            d.text((random.uniform(0, 0.5) * w, random.uniform(0, 0.9) * h), text, fill=colour)
        return img


class RandomRescale:
    """Downscale then upscale back: the loss of detail of a resized copy."""

    def __init__(self, scale: tuple[float, float] = (0.3, 1.0)) -> None:
        self.scale = scale

    def __call__(self, img: Image.Image) -> Image.Image:
        w, h = img.size
        s = random.uniform(*self.scale)
        small = img.resize((max(8, int(w * s)), max(8, int(h * s))), Image.BILINEAR)
        return small.resize((w, h), Image.BILINEAR)


def _normalize() -> list[Callable]:
    return [T.ToTensor(), T.Normalize(IMAGENET_MEAN, IMAGENET_STD)]


def colour_magnitudes(strength: float = 1.0) -> tuple[float, float, float, float]:
    """(jitter, hue, jitter_p, grey_p) of MoCo v2's colour steps at `strength`: brightness, contrast and
    saturation factors in [1 - jitter, 1 + jitter], hue shifts in [-hue, hue], jitter applied with jitter_p,
    grey with grey_p; strength 0 turns both off. The one source for the PIL and the batch path."""
    if strength <= 0:
        return 0.0, 0.0, 0.0, 0.0
    return 0.4 * strength, min(0.5, 0.1 * strength), 0.8, min(1.0, 0.2 * strength)


def colour_steps(strength: float = 1.0) -> list[Callable]:
    """MoCo v2's colour jitter (p 0.8) and grey (p 0.2), their magnitudes and the grey probability scaled by
    `strength` (1 = the paper's; 0 = colour kept as it is)."""
    if strength <= 0:
        return []
    b, hue, jitter_p, grey_p = colour_magnitudes(strength)
    return [T.RandomApply([T.ColorJitter(b, b, b, hue)], p=jitter_p), T.RandomGrayscale(p=grey_p)]


def moco_v2(size: int, min_scale: float = MOCO_V2_MIN_SCALE, colour: float = 1.0, max_scale: float = 1.0) -> T.Compose:
    """The MoCo v2 augmentation recipe (Chen et al., 2020), at `size` px; `colour` scales its colour steps;
    crops cover `min_scale` to `max_scale` of the image area."""
    return T.Compose(
        [
            T.RandomResizedCrop(size, scale=(min_scale, max_scale), ratio=CROP_RATIO),
            *colour_steps(colour),
            T.RandomApply([GaussianBlur(BLUR_SIGMA)], p=MOCO_V2_BLUR_P),
            T.RandomHorizontalFlip(FLIP_P),
            *_normalize(),
        ]
    )


def copy_detection(size: int, min_scale: float = 0.3, colour: float = 1.0, max_scale: float = 1.0) -> T.Compose:
    """MoCo v2 plus the edits near duplicates really have: re-encoding, resizing, borders, aspect
    changes, overlays, small rotations, flips. Crops are milder than v2 (a copy keeps most content)."""
    return T.Compose(
        [
            T.RandomApply([RandomPad(0.2)], p=0.25),
            T.RandomApply([T.RandomRotation(10, fill=0)], p=0.25),
            T.RandomResizedCrop(size, scale=(min_scale, max_scale), ratio=(0.6, 1.6)),
            *colour_steps(colour),
            T.RandomApply([GaussianBlur((0.1, 2.0))], p=0.3),
            T.RandomApply([RandomRescale((0.3, 1.0))], p=0.3),
            T.RandomApply([RandomOverlay()], p=0.3),
            T.RandomApply([JpegReencode((10, 80))], p=0.4),
            T.RandomHorizontalFlip(),
            *_normalize(),
        ]
    )


PRESETS: dict[str, Callable[..., T.Compose]] = {"moco-v2": moco_v2, "copy-detection": copy_detection}


def make_preset(
    name: str, size: int, min_scale: float | None = None, colour: float = 1.0, max_scale: float = 1.0
) -> T.Compose:
    """The named preset at `size` px; `min_scale` overrides its smallest crop area (fraction of the image),
    `max_scale` sets its largest, `colour` scales its colour jitter and grey (moco.augment.presets.colour_steps)."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}: choose one of {', '.join(PRESETS)}")
    if min_scale is None:
        return PRESETS[name](size, colour=colour, max_scale=max_scale)
    return PRESETS[name](size, min_scale, colour=colour, max_scale=max_scale)


LOCAL_MIN_SCALE = 0.05  # multi-crop: the smallest local crop, as in SwAV (Caron et al., 2020)


def eval_transform(
    size: int, mean: tuple[float, ...] = IMAGENET_MEAN, std: tuple[float, ...] = IMAGENET_STD
) -> Callable[[Image.Image], torch.Tensor]:
    """Resize the shorter side to `size`, centre crop, normalise: `moco.preprocess.make_preprocess` with its
    default steps (the --val kNN check uses it; index and query time use the encoder's own steps)."""
    return make_preprocess(size, mean, std)


class TwoCropsTransform:
    """Two independent augmentations of one image: the query view and the key view; with `n_local` > 0 also
    that many small views (multi-crop), stacked as a third tensor (n_local, 3, h, w). With `key_views` > 1 the key is
    that many independent views stacked (key_views, 3, S, S), averaged into one target by the model (FastSiam)."""

    def __init__(
        self,
        base: Callable[[Image.Image], torch.Tensor],
        local: Callable[[Image.Image], torch.Tensor] | None = None,
        n_local: int = 0,
        key_views: int = 1,
    ) -> None:
        if n_local and local is None:
            raise ValueError("n_local local views need the local transform")
        if key_views < 1:
            raise ValueError(f"Illegal key_views {key_views}: must be >= 1")
        self.base = base
        self.local = local
        self.n_local = n_local
        self.key_views = key_views

    def __call__(self, img: Image.Image) -> tuple[torch.Tensor, ...]:
        q = self.base(img)
        k = self.base(img) if self.key_views == 1 else torch.stack([self.base(img) for _ in range(self.key_views)])
        views = (q, k)
        if not self.n_local:
            return views
        assert self.local is not None
        return (*views, torch.stack([self.local(img) for _ in range(self.n_local)]))
