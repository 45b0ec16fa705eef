"""Continuing from weights trained elsewhere (`--init`) without wrecking them in the first steps.

Three measures, in order:
1. Before the first step the queue, which starts as random unit vectors, is filled with keys of the
   initial key encoder (train-mode BN on a shuffled batch, as every later key), so the first negatives are
   real pictures' keys.
2. For the first `head_steps` steps only the projection head learns: it starts random, and gradients
   through a random head would pull the backbone towards whatever that head needs (linear-probe-then-
   fine-tune). The backbone's learning rate is 0 and its SGD momentum is cleared when it is released.
3. After that the backbone learns at `init_lr_scale` times the head's rate, warmed up linearly again.
BN keeps its usual training behaviour throughout: batch statistics, running averages updated on the new
pictures (which the exported encoder then uses).
"""

from __future__ import annotations

import math

import torch
from torch.utils.data import DataLoader

from moco.augment.views import ViewsOf, worker_views
from moco.config import TrainConfig
from moco.data import BatchList, CachedRows, epoch_batches
from moco.model import MoCo, concat_all_gather

FILL_EPOCH = -1  # augmentation seeds of the fill views: distinct from every training epoch's


def param_groups(model: MoCo, cfg: TrainConfig) -> list[dict]:
    """One group as in a plain run; with --init, the backbone and the head apart (their rates differ)."""
    if not cfg.init:
        return [{"params": list(model.encoder_q.parameters()), "part": "all"}]
    return [
        {"params": list(model.encoder_q.backbone.parameters()), "part": "backbone"},
        {"params": list(model.encoder_q.head.parameters()), "part": "head"},
    ]


def head_only_steps(cfg: TrainConfig, total_steps: int) -> int:
    """Steps in which only the head learns: `init_head_steps`, at most a quarter of the run; 0 without --init."""
    return min(cfg.init_head_steps, total_steps // 4) if cfg.init else 0


def backbone_lr_factor(cfg: TrainConfig, step: int, head_steps: int) -> float:
    if not cfg.init:
        return 1.0
    if step < head_steps:
        return 0.0
    return cfg.init_lr_scale * min(1.0, (step - head_steps + 1) / max(1, cfg.warmup_steps))


def set_learning_rates(
    optimizer: torch.optim.Optimizer, cfg: TrainConfig, step: int, lr: float, head_steps: int
) -> None:
    """The step's rate on every group; at the step the backbone is released its momentum starts from zero
    (what it gathered while its rate was 0 came through the untrained head)."""
    for group in optimizer.param_groups:
        backbone = group.get("part") == "backbone"
        group["lr"] = lr * backbone_lr_factor(cfg, step, head_steps) if backbone else lr
        if backbone and head_steps and step == head_steps:
            for p in group["params"]:
                optimizer.state.pop(p, None)


@torch.no_grad()
def fill_queue(
    model: MoCo,
    dataset: CachedRows,
    n: int,
    cfg: TrainConfig,
    device: torch.device,
    rank: int = 0,
    world: int = 1,
    views: ViewsOf | None = None,
) -> int:
    """Replace the whole queue with keys of the current key encoder; returns the number of keys written.

    The images are the last ones of the first epoch's order (the first steps' images come last, if at all),
    seen in views of their own (augmentation epoch FILL_EPOCH). Every rank runs the same number of batches.
    `views` turns a loader batch into views on the device (moco.augment.views; default: the worker path's).
    """
    views = views or worker_views(device)
    K = model.K
    batches = epoch_batches(n, cfg.batch_size, 0, cfg.seed, rank, world)[::-1]
    batches = [[(FILL_EPOCH, i) for _, i in b] for b in batches[: math.ceil(K / (cfg.batch_size * world))]]
    loader = DataLoader(dataset, batch_sampler=BatchList(batches), num_workers=0)
    was_training = model.training
    model.train()
    written = 0
    for s, batch in enumerate(loader):
        _, im_k, ids, _ = views(batch)
        gen = torch.Generator().manual_seed(cfg.seed * 7_777_777 - 1 - s)
        k = model._keys(im_k, gen)  # (N, dim)
        model.enqueue(concat_all_gather(k), concat_all_gather(ids))
        written += k.shape[0] * world
    model.train(was_training)
    return min(written, K)
