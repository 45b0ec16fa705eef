"""Checkpoints laid out as other programs write them, with random weights: the official MoCo
`main_moco.py` `.pth.tar` (v1 head `fc`, v2 head `fc.0`/`fc.2`) and a pickle whose payload would run."""

from __future__ import annotations

from pathlib import Path

import torch
import torchvision
from torch import nn


def tiny_official_checkpoint(path: Path, mlp: bool = True, dim: int = 16, K: int = 32, seed: int = 0) -> dict:
    """Save a resnet18 MoCo checkpoint in the official layout; returns its `state_dict`."""
    torch.manual_seed(seed)
    encoders = []
    for _ in range(2):  # encoder_q, encoder_k: different random weights, so a mix-up shows
        net = torchvision.models.resnet18(num_classes=dim)
        if mlp:
            c = net.fc.weight.shape[1]
            net.fc = nn.Sequential(nn.Linear(c, c), nn.ReLU(), net.fc)
        for m in net.modules():  # running statistics unlike a fresh BN's, so they are checked too
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-1, 1)
                m.running_var.uniform_(0.5, 2)
                m.num_batches_tracked.fill_(1234)
        encoders.append(net)
    state = {f"module.encoder_q.{k}": v for k, v in encoders[0].state_dict().items()}
    state |= {f"module.encoder_k.{k}": v for k, v in encoders[1].state_dict().items()}
    state["module.queue"] = nn.functional.normalize(torch.randn(dim, K), dim=0)
    state["module.queue_ptr"] = torch.zeros(1, dtype=torch.long)
    params = list(encoders[0].parameters())
    optimizer = {
        "state": {i: {"momentum_buffer": torch.randn_like(p)} for i, p in enumerate(params[:3])},
        "param_groups": [{"lr": 0.03, "momentum": 0.9, "weight_decay": 1e-4, "params": list(range(len(params)))}],
    }
    torch.save({"epoch": 200, "arch": "resnet18", "state_dict": state, "optimizer": optimizer}, path)
    return state


class CreatesFile:
    """Unpickling this opens (creates) `marker`: stands for any code a hostile pickle would run."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        return (open, (str(self.marker), "w"))


def hostile_checkpoint(path: Path, marker: Path) -> None:
    """A checkpoint with real-looking weights and the payload hidden next to them."""
    state = {k: v for k, v in torchvision.models.resnet18().state_dict().items()}
    torch.save({"state_dict": state, "extra": CreatesFile(marker)}, path)
