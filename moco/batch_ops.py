"""Per-sample image operations on float batches (N, 3, H, W) in [0, 1]: the pixel half of moco.batch_augment.

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
    """Rotate the hue by f (N,) turns: RGB -> HSV, h + f mod 1, back (torchvision's _rgb2hsv / _hsv2rgb)."""
    r, g, b = x.unbind(1)
    maxc, minc = x.max(1).values, x.min(1).values  # (N, H, W)
    eqc = maxc == minc
    cr = maxc - minc
    ones = torch.ones_like(maxc)
    s = cr / torch.where(eqc, ones, maxc)
    crd = torch.where(eqc, ones, cr)
    rc, gc, bc = (maxc - r) / crd, (maxc - g) / crd, (maxc - b) / crd
    hr = (maxc == r) * (bc - gc)
    hg = ((maxc == g) & (maxc != r)) * (2.0 + rc - bc)
    hb = ((maxc != g) & (maxc != r)) * (4.0 + gc - rc)
    h = torch.fmod((hr + hg + hb) / 6.0 + 1.0, 1.0)
    h = (h + f.view(-1, 1, 1)) % 1.0
    i = torch.floor(h * 6.0)
    frac = h * 6.0 - i
    i = i.to(torch.int32) % 6
    v = maxc
    p = (v * (1.0 - s)).clamp(0.0, 1.0)
    q = (v * (1.0 - s * frac)).clamp(0.0, 1.0)
    t = (v * (1.0 - s * (1.0 - frac))).clamp(0.0, 1.0)
    mask = (i.unsqueeze(1) == torch.arange(6, device=x.device).view(1, -1, 1, 1)).to(x.dtype)  # (N, 6, H, W)
    sextants = torch.stack(
        [torch.stack(c, 1) for c in ((v, q, p, p, t, v), (t, v, v, q, p, p), (p, p, t, v, v, q))], 1
    )  # (N, 3, 6, H, W)
    return (sextants * mask.unsqueeze(1)).sum(2)  # (N, 3, H, W)


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
