"""The random parameters of batched views, drawn on the CPU from per-sample seeds (moco.augment.batch).

Each sample's generator is seeded with its `moco.data.sample_seed(seed, epoch, index)` and draws one row of
N_PARAMS uniforms per view (query, key, then the local views), so a sample's views depend on nothing but its
seed: not on the batch it lands in, the rank, the device or a resume. The parameters are computed from those
uniforms in float64 on the CPU, so they are bit-identical on every machine; only the pixel arithmetic that
follows runs on the device.

Layout of one row: ATTEMPTS crop areas, ATTEMPTS log-ratios, ATTEMPTS tops, ATTEMPTS lefts (torchvision's
RandomResizedCrop: the first attempt whose box fits wins, else a centre crop), then flip, jitter on/off,
brightness, contrast, saturation, hue, four order keys (ColorJitter's random order), grey on/off, blur on/off,
blur sigma.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from moco.augment.presets import BLUR_SIGMA, CROP_RATIO, FLIP_P, MOCO_V2_BLUR_P, MOCO_V2_MIN_SCALE, colour_magnitudes
from plumbing.errors import InputError

ATTEMPTS = 10  # crop boxes tried per view, as torchvision's RandomResizedCrop
_FLIP, _JITTER, _FACTORS, _ORDER, _GREY, _BLUR, _SIGMA = (4 * ATTEMPTS + k for k in (0, 1, 2, 6, 10, 11, 12))
N_PARAMS = 4 * ATTEMPTS + 13


@dataclass(frozen=True)
class BatchRecipe:
    """One view's augmentation: crop area `scale` and aspect `ratio`, colour jitter (factors in [1 - jitter,
    1 + jitter], hue in [-hue, hue]) with `jitter_p`, grey with `grey_p`, blur with `blur_p` (sigma in
    `blur_sigma` px for a 224 px view, scaled to `size`), flip with `flip_p`; output `size` px square."""

    size: int
    scale: tuple[float, float] = (MOCO_V2_MIN_SCALE, 1.0)
    ratio: tuple[float, float] = CROP_RATIO
    jitter: float = 0.4
    hue: float = 0.1
    jitter_p: float = 0.8
    grey_p: float = 0.2
    blur_p: float = MOCO_V2_BLUR_P
    blur_sigma: tuple[float, float] = BLUR_SIGMA
    flip_p: float = FLIP_P

    def __post_init__(self) -> None:
        if self.size < 1:
            raise ValueError(f"Illegal size {self.size}: must be positive")
        if not 0.0 < self.scale[0] <= self.scale[1] <= 1.0:
            raise ValueError(f"Illegal scale {self.scale}: need 0 < min <= max <= 1")
        if not 0.0 < self.ratio[0] <= self.ratio[1]:
            raise ValueError(f"Illegal ratio {self.ratio}: need 0 < min <= max")
        if self.jitter < 0 or not 0.0 <= self.hue <= 0.5:
            raise ValueError(f"Illegal jitter {self.jitter} / hue {self.hue}: need jitter >= 0, hue in [0, 0.5]")
        if not all(0.0 <= p <= 1.0 for p in (self.jitter_p, self.grey_p, self.blur_p, self.flip_p)):
            raise ValueError("Illegal probability: jitter_p, grey_p, blur_p and flip_p must be in [0, 1]")
        if not 0.0 < self.blur_sigma[0] <= self.blur_sigma[1]:
            raise ValueError(f"Illegal blur_sigma {self.blur_sigma}: need 0 < min <= max")

    @property
    def blur_radius(self) -> int:
        """Half width of the blur kernel in px: three of the largest sigma at this size."""
        return max(1, math.ceil(3 * self.blur_sigma[1] * self.size / 224))


def batch_recipe(
    preset: str, size: int, min_scale: float | None = None, colour: float = 1.0, max_scale: float = 1.0
) -> BatchRecipe:
    """`moco.augment.presets.make_preset`'s recipe for the batch path. moco-v2 only: the copy-detection preset's
    pads, rotations, overlays, rescales and JPEG re-encodes are PIL steps, and it is refused (InputError)."""
    if preset != "moco-v2":
        raise InputError(
            f"preset {preset!r}: its pads, rotations, overlays and JPEG re-encodes run on PIL images in the "
            "data-loader workers only; use --augment-on workers (or auto) with it"
        )
    jitter, hue, jitter_p, grey_p = colour_magnitudes(colour)
    lo = MOCO_V2_MIN_SCALE if min_scale is None else min_scale
    return BatchRecipe(size, (lo, max_scale), jitter=jitter, hue=hue, jitter_p=jitter_p, grey_p=grey_p)


def draw_uniforms(seeds: Sequence[int] | torch.Tensor, n_views: int) -> torch.Tensor:
    """(B, n_views, N_PARAMS) float64 uniforms in [0, 1), row b from a generator seeded with seeds[b]."""
    values = seeds.tolist() if isinstance(seeds, torch.Tensor) else list(seeds)
    g = torch.Generator()
    rows = [torch.rand(n_views, N_PARAMS, generator=g.manual_seed(int(s)), dtype=torch.float64) for s in values]
    return torch.stack(rows) if rows else torch.zeros(0, n_views, N_PARAMS, dtype=torch.float64)


@dataclass(frozen=True)
class ViewParams:
    """One view of every sample of a batch, on the CPU: crop boxes (B, 4) as top, left, height, width in px of
    the H x W input; flip, jitter, grey and blur flags (B,); jitter factors (B, 4) for brightness, contrast,
    saturation, hue; order (B, 4): the op applied at each of the four jitter positions; blur sigma (B,) in px."""

    box: torch.Tensor
    flip: torch.Tensor
    jitter: torch.Tensor
    factors: torch.Tensor
    order: torch.Tensor
    grey: torch.Tensor
    blur: torch.Tensor
    sigma: torch.Tensor


def crop_boxes(u: torch.Tensor, recipe: BatchRecipe, H: int, W: int) -> torch.Tensor:
    """(B, 4) float64 boxes (top, left, h, w) from uniforms u (B, N_PARAMS): torchvision's RandomResizedCrop
    get_params, all attempts at once."""
    a = ATTEMPTS
    area = H * W * (recipe.scale[0] + u[:, :a] * (recipe.scale[1] - recipe.scale[0]))  # (B, a)
    lo, hi = math.log(recipe.ratio[0]), math.log(recipe.ratio[1])
    aspect = torch.exp(lo + u[:, a : 2 * a] * (hi - lo))  # (B, a)
    w = torch.round(torch.sqrt(area * aspect))
    h = torch.round(torch.sqrt(area / aspect))
    fits = (w > 0) & (w <= W) & (h > 0) & (h <= H)  # (B, a)
    first = fits.to(torch.int8).argmax(1, keepdim=True)  # the first attempt that fits (0 if none)
    h, w = h.gather(1, first)[:, 0], w.gather(1, first)[:, 0]  # (B,)
    top = torch.floor(u[:, 2 * a : 3 * a].gather(1, first)[:, 0] * (H - h + 1)).clamp(max=H - h)
    left = torch.floor(u[:, 3 * a : 4 * a].gather(1, first)[:, 0] * (W - w + 1)).clamp(max=W - w)
    # no attempt fits: torchvision's fallback, the whole image cut to the nearest allowed ratio, centred
    in_ratio = W / H
    if in_ratio < recipe.ratio[0]:
        fh, fw = round(W / recipe.ratio[0]), W
    elif in_ratio > recipe.ratio[1]:
        fh, fw = H, round(H * recipe.ratio[1])
    else:
        fh, fw = H, W
    none = ~fits.any(1)
    h, w = torch.where(none, float(fh), h), torch.where(none, float(fw), w)
    top = torch.where(none, float((H - fh) // 2), top)
    left = torch.where(none, float((W - fw) // 2), left)
    return torch.stack([top, left, h, w], 1)  # (B, 4)


def view_params(u: torch.Tensor, recipe: BatchRecipe, H: int, W: int) -> ViewParams:
    """The parameters of one view from uniforms u (B, N_PARAMS) of an H x W input."""
    b, hue = recipe.jitter, recipe.hue
    lo = torch.tensor([max(0.0, 1 - b)] * 3 + [-hue], dtype=torch.float64)
    hi = torch.tensor([1 + b] * 3 + [hue], dtype=torch.float64)
    sigma_px = recipe.blur_sigma[0] + u[:, _SIGMA] * (recipe.blur_sigma[1] - recipe.blur_sigma[0])
    return ViewParams(
        box=crop_boxes(u, recipe, H, W),
        flip=u[:, _FLIP] < recipe.flip_p,
        jitter=u[:, _JITTER] < recipe.jitter_p,
        factors=lo + u[:, _FACTORS : _FACTORS + 4] * (hi - lo),  # (B, 4)
        order=u[:, _ORDER : _ORDER + 4].argsort(1),  # (B, 4): a random permutation of the four ops
        grey=u[:, _GREY] < recipe.grey_p,
        blur=u[:, _BLUR] < recipe.blur_p,
        sigma=sigma_px * recipe.size / 224,  # GaussianBlur's sigma is for 224 px: scaled to the view's size
    )
