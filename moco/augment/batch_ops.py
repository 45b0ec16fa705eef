"""Per-sample image operations on float batches (N, 3, H, W) in [0, 1]: the pixel half of moco.augment.batch.

Each takes its per-sample factors as a tensor on the batch's device and follows torchvision's tensor
functional of the same name (`adjust_brightness`, `adjust_contrast`, `adjust_saturation`, `adjust_hue`,
`rgb_to_grayscale`, `resized_crop`), so those are the tests' oracles.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

GREY_WEIGHTS = (0.2989, 0.587, 0.114)  # ITU-R 601-2 luma, as torchvision's rgb_to_grayscale


def _col(f: torch.Tensor) -> torch.Tensor:
    return f.view(-1, 1, 1, 1)  # (N,) -> (N, 1, 1, 1)


def crop_resize(x: torch.Tensor, box: torch.Tensor, size: int) -> torch.Tensor:
    """Bilinear resample of box (N, 4: top, left, h, w in px of x) of each image to size x size.

    One affine grid per sample: output pixel o samples input x = left + (o + 0.5) * w / size - 0.5, the same
    coordinates as `resized_crop(..., antialias=False)`; pixels sampled outside the box read its neighbours
    (inside the image) where resized_crop repeats the box's edge, which only an upscaled box's outer half-pixel
    ring sees.
    """
    N, _, H, W = x.shape
    top, left, h, w = box.unbind(1)  # (N,) each, float64
    theta = torch.zeros(N, 2, 3, dtype=torch.float64)
    theta[:, 0, 0] = w / W
    theta[:, 0, 2] = (2 * left + w) / W - 1  # the box centre in [-1, 1] (align_corners=False)
    theta[:, 1, 1] = h / H
    theta[:, 1, 2] = (2 * top + h) / H - 1
    grid = F.affine_grid(theta.to(x.device, x.dtype), [N, 3, size, size], align_corners=False)  # (N, s, s, 2)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)  # (N, 3, s, s)


def grey(x: torch.Tensor) -> torch.Tensor:
    """(N, 1, H, W) luma."""
    r, g, b = x.unbind(1)
    return (GREY_WEIGHTS[0] * r + GREY_WEIGHTS[1] * g + GREY_WEIGHTS[2] * b).unsqueeze(1)


def brightness(x: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    return (x * _col(f)).clamp(0.0, 1.0)


def contrast(x: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    mean = grey(x).mean(dim=(1, 2, 3), keepdim=True)  # (N, 1, 1, 1)
    return (_col(f) * x + (1 - _col(f)) * mean).clamp(0.0, 1.0)


def saturation(x: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    return (_col(f) * x + (1 - _col(f)) * grey(x)).clamp(0.0, 1.0)


def hue(x: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    """Rotate the hue by f (N,) turns: RGB -> HSV as torchvision's _rgb2hsv, h + f mod 1, and back with the
    closed form c_n = v - v s clamp(min(k, 4 - k), 0, 1), k = (n + 6h) mod 6, n = 5, 3, 1 for R, G, B (the
    same values as torchvision's sextant table, in a tenth of its memory traffic)."""
    r, g, b = x.unbind(1)
    v, minc = x.max(1).values, x.min(1).values  # (N, H, W)
    cr = v - minc
    eqc = cr == 0  # grey pixels: s = 0 and h = 0, no division by zero
    ones = torch.ones_like(v)
    s = cr / torch.where(eqc, ones, v)
    crd = torch.where(eqc, ones, cr)
    rc, gc, bc = (v - r) / crd, (v - g) / crd, (v - b) / crd
    h = torch.where(v == r, bc - gc, torch.where(v == g, 2.0 + rc - bc, 4.0 + gc - rc))
    h = torch.fmod(h / 6.0 + 1.0, 1.0)
    h = (h + f.view(-1, 1, 1)) % 1.0  # (N, H, W)
    n = torch.tensor([5.0, 3.0, 1.0], device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
    k = (n + 6.0 * h.unsqueeze(1)) % 6.0  # (N, 3, H, W)
    return (v - v * s).unsqueeze(1) + (v * s).unsqueeze(1) * (1 - torch.minimum(k, 4.0 - k).clamp(0.0, 1.0))


JITTER_OPS = (brightness, contrast, saturation, hue)  # ColorJitter's four, in the order of ViewParams.factors


def gaussian_blur(x: torch.Tensor, sigma: torch.Tensor, radius: int) -> torch.Tensor:
    """Separable Gaussian blur, sigma (N,) px per image, kernel taps -radius..radius, edges repeated (as
    PIL's GaussianBlur). Shifted sums rather than a convolution: the same arithmetic on every device."""
    taps = torch.arange(-radius, radius + 1, device=x.device, dtype=x.dtype)  # (k,)
    k = torch.exp(-(taps**2) / (2 * sigma.view(-1, 1) ** 2))  # (N, k)
    k = k / k.sum(1, keepdim=True)
    H, W = x.shape[-2:]
    xp = F.pad(x, (radius, radius, 0, 0), mode="replicate")
    x = sum(k[:, j].view(-1, 1, 1, 1) * xp[..., j : j + W] for j in range(2 * radius + 1))  # (N, 3, H, W)
    xp = F.pad(x, (0, 0, radius, radius), mode="replicate")
    return sum(k[:, j].view(-1, 1, 1, 1) * xp[..., j : j + H, :] for j in range(2 * radius + 1))
