"""Test-time augmentation (TTA): the descriptor of a picture averaged over a few rescalings and crops of its input.

The exported encoder (moco.export.ExportedEncoder) sums the L2-normalised descriptors of these views when its
spec asks for more than the input itself (`test_time_scales`, `test_time_crops`); each view costs one more forward.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

CROP_SIDE = 0.75  # side of each test-time crop, as a share of the input's side
CROPS = (0, 5)  # none, or the four corners and the centre
MIN_SCALE, MAX_SCALE = 0.25, 4.0


def tta_views(x: torch.Tensor, scales: tuple[float, ...] = (1.0,), crops: int = 0) -> list[torch.Tensor]:
    """(N, C, S, S) -> the views to average: x resized to round(S * s) px for each scale s (x itself at 1), then with
    `crops` 5 the four corner crops and the centre crop of CROP_SIDE of the side, each resized back to S px."""
    if not scales or not all(MIN_SCALE <= s <= MAX_SCALE for s in scales):
        raise ValueError(f"Illegal test-time scales {scales}: need at least one, each in [{MIN_SCALE}, {MAX_SCALE}]")
    if crops not in CROPS:
        raise ValueError(f"Illegal test-time crops {crops}: choose one of {CROPS}")
    S = x.shape[-1]
    views = [x if s == 1.0 else _resize(x, max(1, round(S * s))) for s in scales]
    if crops:
        c = max(1, round(S * CROP_SIDE))
        far, mid = S - c, (S - c) // 2
        for top, left in ((0, 0), (0, far), (far, 0), (far, far), (mid, mid)):
            views.append(_resize(x[..., top : top + c, left : left + c], S))  # (N, C, S, S)
    return views


def _resize(x: torch.Tensor, side: int) -> torch.Tensor:
    return F.interpolate(x, size=(side, side), mode="bilinear", align_corners=False, antialias=True)
