"""MoCo v2 views of a whole uint8 batch on the training device (`TrainConfig.augment_on = "device"`).

The worker path (`moco.augment.presets` + `moco.data.PairDataset`) augments one PIL image at a time in data-loader
workers; at GPU speeds that bounds the step. Here the loader only hands over cached uint8 squares, their
indices and their augmentation seeds, and this module makes every view of the batch with a few tensor ops:

    u = uniforms(seed_b) for each sample b          # (B, V, P), CPU, one generator per sample (batch_params)
    x = images / 255                                 # (B, 3, H, W) float on the device
    for each view v:                                 # query, key, then the local views (multi-crop)
        y = grid_sample(x, affine_grid(theta_v))     # random resized crop (scale, ratio 3/4-4/3), bilinear
        y = jitter(y) in a random order, p 0.8       # brightness, contrast, saturation 0.4, hue 0.1 (x colour)
        y = grey(y), p 0.2                           # 0.2 x colour strength
        y = blur(y, sigma 0.1-2.0 x size/224), p 0.5 # separable Gaussian, per-sample sigma
        y = flip(y), p 0.5
        y = (y - mean) / std                         # moco.augment.presets's ImageNet constants

Preset: moco-v2 only (with `crop_min_scale`, `colour_strength` and the multi-crop local views);
copy-detection's PIL steps (pads, rotations, overlays, rescales, JPEG re-encode) stay on the worker path and
`moco.augment.batch_params.batch_recipe` refuses it with an InputError.

What is bit-identical: a sample's random parameters (crop box, flags, factors, order, sigma) depend only on
`sample_seed(seed, epoch, index)` and are computed on the CPU in float64, so they are the same on every
device, batch composition, rank count and resume; a resumed run on the same device and library versions
makes the same pixels. What is not: the pixels across devices (CPU and CUDA round grid_sample and the
float32 sums differently, ~1e-6), and either against the worker path, which draws other numbers (Python's
`random`) and works on uint8 PIL images (antialiased PIL resampling, rounding after every step) where this
path resamples bilinearly without antialias (crops are 1x-2x downscales of the cached square) and stays in
float32 throughout.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from moco.augment import batch_ops
from moco.augment.batch_params import BatchRecipe, ViewParams, draw_uniforms, view_params
from moco.augment.presets import IMAGENET_MEAN, IMAGENET_STD
from plumbing.errors import InputError


def as_float_chw(images: torch.Tensor) -> torch.Tensor:
    """uint8 (B, H, W, 3) or (B, 3, H, W) -> float (B, 3, H, W) in [0, 1] on the same device."""
    if images.dtype != torch.uint8 or images.dim() != 4:
        raise InputError(
            f"batch augmentation needs a uint8 (B, H, W, 3) or (B, 3, H, W) batch, got {images.dtype} "
            f"{tuple(images.shape)}"
        )
    if images.shape[1] == 3:
        x = images
    elif images.shape[-1] == 3:
        x = images.permute(0, 3, 1, 2)
    else:
        raise InputError(f"batch augmentation needs 3 channels, got shape {tuple(images.shape)}")
    return x.float().div_(255.0).contiguous()


def _where(mask: torch.Tensor, device: torch.device) -> torch.Tensor | None:
    """The indices (on `device`) of the True entries of a CPU mask; None when there are none."""
    idx = mask.nonzero().flatten()
    return idx.to(device, non_blocking=True) if len(idx) else None


def _apply(x: torch.Tensor, mask: torch.Tensor, op: Callable[..., torch.Tensor], *args: torch.Tensor) -> torch.Tensor:
    """x with `op` applied to the samples where the CPU mask is True; per-sample args are indexed alike."""
    idx = _where(mask, x.device)
    if idx is None:
        return x
    picked = [a.to(x.device, x.dtype, non_blocking=True)[idx] for a in args]
    return x.index_copy(0, idx, op(x[idx], *picked))


def augment_view(x: torch.Tensor, p: ViewParams, recipe: BatchRecipe) -> torch.Tensor:
    """One view of a float batch x (B, 3, H, W) in [0, 1]: (B, 3, size, size), normalised."""
    y = batch_ops.crop_resize(x, p.box, recipe.size)  # (B, 3, s, s)
    for pos in range(4):  # ColorJitter: the four ops in each sample's own order
        for k, op in enumerate(batch_ops.JITTER_OPS):
            y = _apply(y, p.jitter & (p.order[:, pos] == k), op, p.factors[:, k])
    y = _apply(y, p.grey, lambda t: batch_ops.grey(t).expand(-1, 3, -1, -1))
    y = _apply(y, p.blur, lambda t, s: batch_ops.gaussian_blur(t, s, recipe.blur_radius), p.sigma)
    y = _apply(y, p.flip, lambda t: t.flip(-1))
    mean = torch.tensor(IMAGENET_MEAN, device=y.device, dtype=y.dtype).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=y.device, dtype=y.dtype).view(1, 3, 1, 1)
    return (y - mean) / std


class BatchTwoCrops:
    """`moco.augment.presets.TwoCropsTransform` for whole batches: the query and key views of every image, and with
    `n_local` > 0 that many small views stacked as (B, n_local, 3, h, w)."""

    def __init__(self, base: BatchRecipe, local: BatchRecipe | None = None, n_local: int = 0) -> None:
        if n_local and local is None:
            raise ValueError("n_local local views need the local recipe")
        self.base = base
        self.local = local
        self.n_local = n_local

    def params(self, seeds: Sequence[int] | torch.Tensor, H: int, W: int) -> list[ViewParams]:
        """Every view's parameters (query, key, local views), from the per-sample seeds, on the CPU."""
        u = draw_uniforms(seeds, 2 + self.n_local)  # (B, V, P)
        recipes = [self.base, self.base] + [self.local] * self.n_local
        return [view_params(u[:, v], r, H, W) for v, r in enumerate(recipes)]  # type: ignore[arg-type]

    def __call__(self, images: torch.Tensor, seeds: Sequence[int] | torch.Tensor) -> tuple[torch.Tensor, ...]:
        x = as_float_chw(images)  # (B, 3, H, W)
        if len(seeds) != x.shape[0]:
            raise ValueError(f"{len(seeds)} seeds for a batch of {x.shape[0]}")
        ps = self.params(seeds, x.shape[2], x.shape[3])
        q, k = augment_view(x, ps[0], self.base), augment_view(x, ps[1], self.base)  # (B, 3, s, s) each
        if not self.n_local:
            return q, k
        assert self.local is not None
        local = torch.stack([augment_view(x, p, self.local) for p in ps[2:]], 1)  # (B, L, 3, h, w)
        return q, k, local
