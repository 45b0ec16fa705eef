"""Geometric verification of near-duplicate candidates: do two pictures line up, pixel for pixel?

A global descriptor compares whole pictures, so a copy that shows only part of the original (a crop,
then resized to any shape) or has part of it covered (a caption, a logo) scores lower than its edit
deserves, while two different drawings in the same style can score high. Verification looks at the
pictures themselves: each one is brought to the descriptor's canonical form (frames trimmed, a rotated
copy turned upright, grey, squashed to a square: `moco.preprocess`), and one is searched for a crop,
stretched independently in x and y and mirrored or not, that matches the other. The alignment score is
the best normalised cross-correlation (Pearson correlation of grey levels, blind to brightness and
contrast) over those crops, in both directions: in [-1, 1], 1 for a picture and any crop of it. Grey levels
alone let two different shapes of one tone on a plain background (two silhouettes, two blobs) line up, so
the best crop must also match in its edges: where the correlation of gradient magnitudes at that crop is
below MIN_EDGE_CORRELATION, the crop does not count (0).

Cost: the CROPS crops of a picture come from two matrix products (each crop is a scale and an offset per
axis, so the resampling is separable), made once per picture; a pair then costs one product of the other
picture (and its mirror image) with them. `alignments` works through the pairs one picture at a time;
`retrieval.dedup.verify.cache` keeps the thumbnails for the next run.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from moco.preprocess import trim_borders
from moco.straighten import straighten
from plumbing.errors import InputError
from plumbing.images import load_image
from plumbing.progress import Progress, report

logger = logging.getLogger(__name__)
T = TypeVar("T")

THUMB_SIDE = 48  # thumbnail side the crops are cut from
COMPARE_SIDE = 32  # side at which a crop and a whole picture are compared
CROP_SCALES = (1.0, 0.92, 0.85, 0.78, 0.7, 0.62)  # share of the width (height) a crop keeps, each axis alone
CROP_POSITIONS = 5  # positions per axis, from one edge to the other
FLAT = 2e-3  # a thumbnail whose grey levels (0..1) spread less than this is flat: it has no pattern
LOAD_WORKERS = 4  # threads decoding the files of the pairs to verify
LOAD_SIDE = 256  # pictures are decoded at least this large (JPEG draft mode) before trimming and straightening
MIN_EDGE_CORRELATION = 0.5  # the best crop's gradient magnitudes must correlate this well with the other's
# (chosen on the held-out seed-1 benchmark folder, bench/dedup/threshold.py)


def canonical_thumbnail(im: Image.Image) -> np.ndarray:
    """(THUMB_SIDE, THUMB_SIDE) uint8 grey levels of the picture in the descriptor's canonical
    form: frames trimmed, straightened (and trimmed again when it was rotated), grey, squashed."""
    im = trim_borders(im)
    upright = straighten(im)
    if upright is not im:
        im = trim_borders(upright)
    grey = im.convert("L").resize((THUMB_SIDE, THUMB_SIDE), Image.BILINEAR)
    return np.array(grey, dtype=np.uint8)  # a writable copy (torch.from_numpy)


def _axis_crops() -> list[tuple[float, float]]:
    """(scale, centre offset) of every crop along one axis, in [-1, 1] picture coordinates."""
    return sorted(
        {(s, round(t, 4)) for s in CROP_SCALES for t in np.linspace(-(1 - s), 1 - s, CROP_POSITIONS).tolist()}
    )


def _resampling(crops: list[tuple[float, float]], size_in: int, size_out: int) -> torch.Tensor:
    """(A * size_out, size_in): row a * size_out + k takes output sample k of axis crop a from the input
    row by linear interpolation (the sampling of `grid_sample` with align_corners=False, edges clamped)."""
    u = (2 * np.arange(size_out) + 1) / size_out - 1  # (size_out,) output sample centres in [-1, 1]
    m = np.zeros((len(crops) * size_out, size_in))
    for a, (scale, offset) in enumerate(crops):
        p = ((scale * u + offset + 1) * size_in - 1) / 2  # input pixel coordinate of each sample
        p = np.clip(p, 0, size_in - 1)
        lo = np.floor(p).astype(int)
        hi = np.minimum(lo + 1, size_in - 1)
        w = p - lo
        rows = a * size_out + np.arange(size_out)
        np.add.at(m, (rows, lo), 1 - w)
        np.add.at(m, (rows, hi), w)
    return torch.from_numpy(m.astype(np.float32))


# every crop is a scale and an offset per axis, so all of them come from two matrix products: one picks the
# rows of each vertical crop, the other the columns of each horizontal crop
_AXIS = _resampling(_axis_crops(), THUMB_SIDE, COMPARE_SIDE)  # (A * COMPARE_SIDE, THUMB_SIDE)
_AXIS_CROPS = _AXIS.shape[0] // COMPARE_SIDE
CROPS = _AXIS_CROPS * _AXIS_CROPS


def _unit(x: torch.Tensor) -> torch.Tensor:
    """Rows of (..., P) centred and scaled to unit length; a flat row (grey levels spread less than FLAT)
    becomes zero: it matches nothing."""
    x = x - x.mean(dim=-1, keepdim=True)
    norm = x.norm(dim=-1, keepdim=True)  # (..., 1)
    return x * torch.where(norm > FLAT * x.shape[-1] ** 0.5, 1.0 / norm.clamp_min(1e-12), 0.0)


def _grey(thumb: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(thumb).float()[None, None] / 255.0  # (1, 1, S, S) in [0, 1]


def _crops(thumb: np.ndarray) -> torch.Tensor:
    """(A, S, A, S) every crop of a thumbnail at COMPARE_SIDE: crop (a, b) is [a, :, b, :], a the vertical
    and b the horizontal axis crop; crop number a * A + b."""
    rows = _AXIS @ _grey(thumb)[0, 0]  # (A * S, THUMB_SIDE): each vertical crop's rows
    return (rows @ _AXIS.T).view(_AXIS_CROPS, COMPARE_SIDE, _AXIS_CROPS, COMPARE_SIDE)


def crop_correlations(thumb: np.ndarray, targets: torch.Tensor, both: torch.Tensor | None = None) -> torch.Tensor:
    """(T, CROPS) Pearson correlation of every crop of a thumbnail, resampled to COMPARE_SIDE, with each
    of `targets` (T, P) unit rows (`whole_of`). A target has zero mean, so its dot product with a crop
    needs no centring of the crop, only the crop's spread; a flat crop correlates 0 with everything.
    `both` is the thumbnail's `_crops` when the caller has made them already."""
    both = _crops(thumb) if both is None else both
    dots = torch.einsum("aibj,tij->tab", both, targets.view(-1, COMPARE_SIDE, COMPARE_SIDE))  # (T, A, A)
    p = COMPARE_SIDE * COMPARE_SIDE
    spread = ((both * both).sum(dim=(1, 3)) - both.sum(dim=(1, 3)) ** 2 / p).clamp_min(0).sqrt()  # (A, A)
    scale = torch.where(spread > FLAT * p**0.5, 1.0 / spread.clamp_min(1e-12), 0.0)
    return (dots * scale).reshape(len(targets), CROPS)


def edge_correlations(crops: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """(T,) Pearson correlation of the gradient magnitudes of crops[t] (T, S, S) and targets[t] (T, P), the
    matching `whole_of` rows: do the two pictures' edges fall in the same places?"""

    def edges(x: torch.Tensor) -> torch.Tensor:  # (T, S, S) -> (T, S * S) unit rows
        dx = F.pad(x[:, :, 1:] - x[:, :, :-1], (0, 1))
        dy = F.pad(x[:, 1:, :] - x[:, :-1, :], (0, 0, 0, 1))
        return _unit((dx * dx + dy * dy).sqrt().flatten(1))

    return (edges(crops) * edges(targets.view(-1, COMPARE_SIDE, COMPARE_SIDE))).sum(dim=1)


def whole_of(thumb: np.ndarray) -> torch.Tensor:
    """(2, P) the whole thumbnail at COMPARE_SIDE and its mirror image, as unit rows."""
    t = F.interpolate(_grey(thumb), size=(COMPARE_SIDE, COMPARE_SIDE), mode="area")[0, 0]
    return _unit(torch.stack([t, t.flip(-1)]).flatten(1))


def alignment(a: np.ndarray, b: np.ndarray) -> float:
    """Alignment score of two canonical thumbnails: the best correlation of a crop of one with the other."""
    return float(alignments([a, b], np.array([0]), np.array([1]))[0])


def alignments(
    thumbs: list[np.ndarray] | Callable[[int], np.ndarray | None],
    src: np.ndarray,
    dst: np.ndarray,
    workers: int = LOAD_WORKERS,
    progress: Progress | None = None,
) -> np.ndarray:
    """(E,) float32 alignment score of each pair (src[e], dst[e]). `thumbs` maps an id to its canonical
    thumbnail (a list, or a function that may return None for a picture it cannot read: its pairs score
    NaN; called from `workers` threads, each id once, reported to `progress` as stage "verifying").
    Each picture's crops are made once; memory is one thumbnail (THUMB_SIDE squared bytes) per picture in
    the pairs."""
    src, dst = np.asarray(src, dtype=np.int64), np.asarray(dst, dtype=np.int64)
    out = np.full(src.size, np.nan, dtype=np.float32)
    if src.size == 0:
        return out
    ids = np.unique(np.concatenate([src, dst])).tolist()
    if isinstance(thumbs, list):
        loaded = {i: thumbs[i] for i in ids}
    else:
        loaded = read_each(thumbs, ids, workers=workers, progress=progress, stage="verifying")
    readable = {i for i, t in loaded.items() if t is not None}
    ends = np.concatenate([src, dst])  # (2E,) each pair listed under both of its pictures
    other = np.concatenate([dst, src])
    edge = np.concatenate([np.arange(src.size), np.arange(src.size)])
    order = np.argsort(ends, kind="stable")
    ends, other, edge = ends[order], other[order], edge[order]
    starts = np.flatnonzero(np.r_[True, ends[1:] != ends[:-1]])
    for lo, hi in zip(starts.tolist(), [*starts[1:].tolist(), ends.size], strict=True):
        i = int(ends[lo])
        if i not in readable:
            continue
        partners = [(int(j), int(e)) for j, e in zip(other[lo:hi], edge[lo:hi], strict=True) if int(j) in readable]
        if not partners:
            continue
        # a partner's whole is remade for each of its pairs (cheap) rather than kept: memory stays one uint8
        # thumbnail per picture
        targets = torch.cat([whole_of(loaded[j]) for j, _ in partners])  # (2 * n, P): each whole and its mirror
        both = _crops(loaded[i])
        corr, crop = crop_correlations(loaded[i], targets, both).max(dim=1)  # (2n,) best crop per target
        a, b = crop // _AXIS_CROPS, crop % _AXIS_CROPS
        edges = edge_correlations(both[a, :, b, :], targets)  # (2n,)
        kept = torch.where(edges >= MIN_EDGE_CORRELATION, corr, torch.zeros_like(corr))
        best = kept.view(len(partners), 2).amax(dim=1)  # (n,)
        for (_, e), s in zip(partners, best.tolist(), strict=True):
            out[e] = s if np.isnan(out[e]) else max(out[e], s)
    return out


def read_each(
    load: Callable[[int], T],
    ids: Sequence[int],
    *,
    workers: int = LOAD_WORKERS,
    progress: Progress | None = None,
    stage: str,
    done: int = 0,
    total: int | None = None,
) -> dict[int, T]:
    """{id: load(id)} for every id, `workers` files at a time (decoding releases the GIL); each one reported to
    `progress` as `stage`, counted from `done` of `total` (default: done + the ids)."""
    total = done + len(ids) if total is None else total
    out: dict[int, T] = {}
    with ThreadPoolExecutor(max(1, workers)) as pool:
        for i, item in zip(ids, pool.map(load, ids), strict=True):
            out[i] = item
            report(progress, stage, done + len(out), total)
    return out


def folder_thumbnails(root: Path, paths: Sequence[str]) -> Callable[[int], np.ndarray | None]:
    """id -> canonical thumbnail of the file root / paths[id], decoded on demand; None (logged) for a file
    that cannot be read now (moved, deleted or damaged since it was indexed): its pairs are not verified."""

    def thumbnail(i: int) -> np.ndarray | None:
        path = root / paths[i]
        try:
            return canonical_thumbnail(load_image(path, min_side=LOAD_SIDE))
        except InputError as e:  # load_image's only failure (BadImageError), naming the file and the reason
            logger.debug("not verified: %s", e)
            return None

    return thumbnail
