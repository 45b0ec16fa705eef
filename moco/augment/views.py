"""From one data-loader batch to the training views on the device, for either augmentation path.

Both return (im_q, im_k, ids, im_local): the query and key views (N, 3, s, s), the images' indices (N,), and
the multi-crop views (N, L, 3, h, w) or None. Worker path (`moco.data.PairDataset`): the loader made the
views, they are moved. Device path (`moco.data.SquareDataset`): the loader hands over uint8 squares, indices
and seeds, and `moco.augment.batch.BatchTwoCrops` makes the views where the network runs.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from moco.augment.batch import BatchTwoCrops

Views = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None]
ViewsOf = Callable[[Sequence[torch.Tensor]], Views]


def worker_views(device: torch.device) -> ViewsOf:
    def views(batch: Sequence[torch.Tensor]) -> Views:
        im_q, im_k, ids, *local = (t.to(device, non_blocking=True) for t in batch)
        return im_q, im_k, ids, local[0] if local else None

    return views


def device_views(crops: BatchTwoCrops, device: torch.device) -> ViewsOf:
    def views(batch: Sequence[torch.Tensor]) -> Views:
        squares, ids, seeds = batch  # (N, S, S, 3) uint8, (N,), (N,) seeds on the CPU
        im_q, im_k, *local = crops(squares.to(device, non_blocking=True), seeds)
        return im_q, im_k, ids.to(device, non_blocking=True), local[0] if local else None

    return views
