"""InfoNCE over 1 + K logits: the positive key at index 0, the K queue keys after it."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def info_nce_logits(q: torch.Tensor, k: torch.Tensor, queue: torch.Tensor, T: float) -> torch.Tensor:
    """q, k: (N, C) L2-normalised; queue: (K, C) L2-normalised keys. Returns logits (N, 1+K) / T."""
    l_pos = torch.einsum("nc,nc->n", q, k).unsqueeze(-1)  # (N, 1)
    l_neg = torch.einsum("nc,kc->nk", q, queue)  # (N, K)
    return torch.cat([l_pos, l_neg], dim=1) / T  # (N, 1+K)


class InfoNCELoss(nn.Module):
    """Cross-entropy of the logits against label 0 (the positive), as in the MoCo paper (Eq. 1)."""

    def __init__(self, temperature: float = 0.2) -> None:
        super().__init__()
        if temperature <= 0:
            raise ValueError(f"Illegal temperature {temperature}: must be positive")
        self.temperature = temperature

    def forward(self, q: torch.Tensor, k: torch.Tensor, queue: torch.Tensor) -> torch.Tensor:
        logits = info_nce_logits(q, k, queue, self.temperature)  # (N, 1+K)
        labels = torch.zeros(logits.shape[0], dtype=torch.long, device=logits.device)  # (N,)
        return F.cross_entropy(logits, labels)
