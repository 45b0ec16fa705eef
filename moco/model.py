"""MoCo (He et al., 2020; v2 head and augmentations, Chen et al., 2020) as one nn.Module.

The paper's pseudocode, line by line:
    q = f_q(x_q); k = f_k(x_k).detach()            # queries and keys, (N, C), L2-normalised
    l_pos = q . k;  l_neg = q . queue              # (N, 1) and (N, K)
    logits = cat([l_pos, l_neg]) / T; labels = 0   # (N, 1+K), positive at index 0
    loss = CE(logits, labels); update f_q by SGD
    f_k.params = m * f_k.params + (1 - m) * f_q.params
    enqueue(k); dequeue(oldest)

Combinatorial patches (Fast-MoCo, Ci et al., 2022), with `patch_queries`: x_q is cut into a 2x2 grid, each patch
is encoded alone, and the mean backbone feature of every pair of patches (6) goes through the head as one query
against the image's one key: six positives per image for about the backbone cost of one view.

Averaged keys (FastSiam, Pototzky et al., 2022), with `key_views` V > 1: x_k holds V views of each image; each is
encoded by f_k and L2-normalised, and their mean, normalised again, is the image's one key (a steadier target):
    k = normalize(mean_v normalize(f_k(x_k[:, v])))   # (N, C) from (N, V, 3, H, W)
"""

from __future__ import annotations

from itertools import combinations

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from moco.backbone import build_backbone, feature_dim, gem
from moco.config import MoCoConfig
from moco.loss import info_nce_logits

PATCH_PAIRS = tuple(combinations(range(4), 2))  # the 6 pairs of a 2x2 grid's patches, (row-major index, index)


def grid_patches(x: torch.Tensor) -> torch.Tensor:
    """(N, C, H, W) -> (4N, C, H//2, W//2): each image's 2x2 grid, row-major, image by image (an odd side loses
    its last row or column)."""
    N, C, H, W = x.shape
    h, w = H // 2, W // 2
    p = x[:, :, : 2 * h, : 2 * w].reshape(N, C, 2, h, 2, w).permute(0, 2, 4, 1, 3, 5).reshape(4 * N, C, h, w)
    if x.is_contiguous(memory_format=torch.channels_last):
        p = p.contiguous(memory_format=torch.channels_last)
    return p


class Encoder(nn.Module):
    """f_q / f_k: ResNet feature map -> GeM pooling -> 2-layer MLP head (MoCo v2) -> dim."""

    def __init__(self, cfg: MoCoConfig, bn_splits: int) -> None:
        super().__init__()
        c = feature_dim(cfg.arch, cfg.width)
        self.backbone = build_backbone(cfg.arch, bn_splits, cfg.stem, cfg.width)
        self.head = nn.Sequential(nn.Linear(c, c), nn.ReLU(inplace=True), nn.Linear(c, cfg.dim))
        self.gem_p = cfg.gem_p

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The retrieval descriptor before normalisation: (N, 3, H, W) -> (N, C)."""
        return gem(self.backbone(x), self.gem_p)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))  # (N, dim)


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


@torch.no_grad()
def concat_all_gather(x: torch.Tensor) -> torch.Tensor:
    """All ranks' tensors concatenated along dim 0 (no gradient), identical on every rank."""
    if not _distributed():
        return x
    out = [torch.empty_like(x) for _ in range(dist.get_world_size())]
    dist.all_gather(out, x.contiguous())
    return torch.cat(out, dim=0)


class MoCo(nn.Module):
    def __init__(self, cfg: MoCoConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.K = cfg.queue_size
        self.m = cfg.momentum
        self.T = cfg.temperature
        self.encoder_q = Encoder(cfg, max(1, cfg.bn_splits))
        self.encoder_k = Encoder(cfg, max(1, cfg.bn_splits))
        for p_q, p_k in zip(self.encoder_q.parameters(), self.encoder_k.parameters(), strict=True):
            p_k.data.copy_(p_q.data)
            p_k.requires_grad = False
        self.register_buffer("queue", F.normalize(torch.randn(self.K, cfg.dim), dim=1))  # (K, dim)
        self.register_buffer("queue_ids", torch.full((self.K,), -1, dtype=torch.long))  # (K,) image ids
        self.register_buffer("queue_ptr", torch.zeros(1, dtype=torch.long))

    @torch.no_grad()
    def momentum_update(self) -> None:
        """theta_k <- m * theta_k + (1 - m) * theta_q; BN running statistics are copied."""
        p_k = [p for p in self.encoder_k.parameters()]
        p_q = [p.detach() for p in self.encoder_q.parameters()]
        torch._foreach_mul_(p_k, self.m)
        torch._foreach_add_(p_k, p_q, alpha=1.0 - self.m)
        for b_k, b_q in zip(self.encoder_k.buffers(), self.encoder_q.buffers(), strict=True):
            b_k.copy_(b_q)

    @torch.no_grad()
    def enqueue(self, k: torch.Tensor, ids: torch.Tensor) -> None:
        """Ring buffer: write the newest keys over the oldest; any batch size, K need not divide it."""
        n = k.shape[0]
        if n >= self.K:
            k, ids, n = k[-self.K :], ids[-self.K :], self.K
        ptr = int(self.queue_ptr)
        slots = (ptr + torch.arange(n, device=k.device)) % self.K  # (n,)
        self.queue[slots] = k.to(self.queue.dtype)
        self.queue_ids[slots] = ids
        self.queue_ptr[0] = (ptr + n) % self.K

    def _queries(self, im_q: torch.Tensor) -> torch.Tensor:
        """q = f_q(x_q), L2-normalised: (N, 3, H, W) -> (N, dim), or (6N, dim) with patch queries (image n's six
        pair queries in rows 6n..6n+5, in PATCH_PAIRS order)."""
        if not self.cfg.patch_queries:
            return F.normalize(self.encoder_q(im_q).float(), dim=1)
        N = im_q.shape[0]
        f = self.encoder_q.features(grid_patches(im_q)).view(N, 4, -1)  # (N, 4, C)
        first, second = (list(t) for t in zip(*PATCH_PAIRS, strict=True))
        pairs = (f[:, first] + f[:, second]) / 2  # (N, 6, C)
        return F.normalize(self.encoder_q.head(pairs.flatten(0, 1)).float(), dim=1)  # (6N, dim)

    @torch.no_grad()
    def _keys(self, im_k: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        """k = f_k(x_k) computed on a shuffled batch (shuffle BN), returned in the original order. im_k (N, 3, H, W),
        or (N, V, 3, H, W): V views of each image, their unit keys averaged into one (averaged keys)."""
        if im_k.dim() == 5:
            N, V = im_k.shape[:2]
            k_views = self._keys(im_k.flatten(0, 1), generator).view(N, V, -1)  # (N, V, dim), each unit
            return F.normalize(k_views.mean(dim=1), dim=1)  # (N, dim)
        if _distributed():
            return self._keys_ddp(im_k, generator)
        N = im_k.shape[0]
        idx_shuffle = torch.randperm(N, generator=generator).to(im_k.device)  # (N,)
        idx_unshuffle = torch.argsort(idx_shuffle)  # (N,)
        k = self.encoder_k(im_k[idx_shuffle])  # (N, dim), shuffled order
        return F.normalize(k.float(), dim=1)[idx_unshuffle]  # (N, dim)

    @torch.no_grad()
    def _keys_ddp(self, im_k: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        """Shuffle BN across ranks: gather the key batch, permute it globally, each rank encodes a slice."""
        n_local = im_k.shape[0]
        x_all = concat_all_gather(im_k)  # (N_global, 3, H, W)
        n_all = x_all.shape[0]
        idx_shuffle = torch.randperm(n_all, generator=generator).to(im_k.device)  # (N_global,)
        dist.broadcast(idx_shuffle, src=0)
        idx_unshuffle = torch.argsort(idx_shuffle)  # (N_global,)
        rank = dist.get_rank()
        mine = idx_shuffle.view(-1, n_local)[rank]  # (n_local,)
        k = F.normalize(self.encoder_k(x_all[mine]).float(), dim=1)  # (n_local, dim)
        k_all = concat_all_gather(k)  # (N_global, dim), shuffled order
        return k_all[idx_unshuffle].view(-1, n_local, k.shape[1])[rank]  # (n_local, dim)

    def forward(
        self,
        im_q: torch.Tensor,
        im_k: torch.Tensor,
        ids: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
        im_local: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """im_q, im_k: (N, 3, H, W) two views of the same N images (im_k (N, V, 3, H, W) with averaged keys).
        Returns logits (N', 1+K), labels (N',).

        N' = N, or 2N with the symmetric loss. Keys are enqueued after the logits are formed.
        Multi-crop: `im_local` (N, L, 3, h, w) are L small views of each image, each one more query against
        its image's key k (and the same queue), adding N * L rows.
        """
        N = im_q.shape[0]
        if ids is None:
            ids = torch.full((N,), -1, dtype=torch.long, device=im_q.device)
        with torch.no_grad():
            self.momentum_update()
        queue = self.queue.clone().detach()  # (K, dim)
        q = self._queries(im_q)  # (N*P, dim): P = 6 with patch queries, else 1
        P = q.shape[0] // N
        k = self._keys(im_k, generator)  # (N, dim)
        logits = info_nce_logits(q, k.repeat_interleave(P, dim=0), queue, self.T)  # (N*P, 1+K)
        if self.cfg.symmetric:
            q2 = self._queries(im_k)  # (N*P, dim)
            k2 = self._keys(im_q, generator)  # (N, dim)
            logits = torch.cat([logits, info_nce_logits(q2, k2.repeat_interleave(P, dim=0), queue, self.T)], dim=0)
        if im_local is not None and im_local.shape[1] > 0:
            L = im_local.shape[1]
            q_local = F.normalize(self.encoder_q(im_local.flatten(0, 1)).float(), dim=1)  # (N*L, dim)
            k_local = k.repeat_interleave(L, dim=0)  # (N*L, dim): image n's key for each of its L views
            logits = torch.cat([logits, info_nce_logits(q_local, k_local, queue, self.T)], dim=0)  # (N'+N*L, 1+K)
        labels = torch.zeros(logits.shape[0], dtype=torch.long, device=logits.device)  # (N',)
        self.enqueue(concat_all_gather(k), concat_all_gather(ids.to(k.device)))
        self.last_q = q.detach()  # (N*P, dim): read by the trainer's health metrics
        return logits, labels

    @torch.no_grad()
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Retrieval embedding: GeM-pooled backbone features, L2-normalised. (N, 3, H, W) -> (N, C)."""
        return F.normalize(self.encoder_q.features(x).float(), dim=1)
