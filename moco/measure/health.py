"""Label-free training health, accumulated over one epoch: pretext top-1, dimension std, effective rank."""

from __future__ import annotations

import math

import torch

from moco.measure.knn import dimension_std, effective_rank

SAMPLE = 1024  # most recent query embeddings kept for the std / rank estimates


class EpochHealth:
    def __init__(self) -> None:
        self.batches = 0
        self.correct = 0
        self.total = 0
        self.recent: list[torch.Tensor] = []

    def update(self, logits: torch.Tensor, q: torch.Tensor) -> None:
        """logits (N', 1+K) with the positive at 0; q (N, dim) the batch's normalised queries."""
        self.batches += 1
        self.correct += int((logits.argmax(dim=1) == 0).sum())
        self.total += logits.shape[0]
        self.recent.append(q.float().cpu())
        while sum(t.shape[0] for t in self.recent) - self.recent[0].shape[0] >= SAMPLE:
            self.recent.pop(0)

    def summary(self, dim: int) -> dict[str, float | bool]:
        z = torch.cat(self.recent)[-SAMPLE:]  # (<=SAMPLE, dim)
        std = dimension_std(z)
        return {
            "pretext_top1": self.correct / max(1, self.total),
            "dim_std": std,
            "dim_std_healthy": 1.0 / math.sqrt(dim),
            "effective_rank": effective_rank(z),
            "collapse_warning": std < 0.2 / math.sqrt(dim),
        }
