"""InfoNCE over 1 + K logits: the positive key at index 0, the K queue keys after it.

The loss is the cross-entropy of these logits against label 0 (the MoCo paper, Eq. 1), as `moco.train` computes it.
"""

from __future__ import annotations

import torch


def info_nce_logits(q: torch.Tensor, k: torch.Tensor, queue: torch.Tensor, T: float) -> torch.Tensor:
    """q, k: (N, C) L2-normalised; queue: (K, C) L2-normalised keys. Returns logits (N, 1+K) / T."""
    l_pos = torch.einsum("nc,nc->n", q, k).unsqueeze(-1)  # (N, 1)
    l_neg = torch.einsum("nc,kc->nk", q, queue)  # (N, K)
    return torch.cat([l_pos, l_neg], dim=1) / T  # (N, 1+K)
