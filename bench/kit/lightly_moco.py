"""The peer: the MoCo example training loop of the `lightly` package (PyPI `lightly==1.6.0`).

Follows lightly's documented example (`examples/pytorch/moco.py`) line for line: a torchvision ResNet-18
without its fc as the backbone (`nn.Sequential(*children[:-1])`, i.e. avg pooling), `MoCoProjectionHead(512,
512, 128)`, deep-copied momentum backbone and head with `deactivate_requires_grad`, `MoCoV2Transform`,
`LightlyDataset(folder, transform=...)` in a shuffled DataLoader with `drop_last=True`,
`NTXentLoss(memory_bank_size=(4096, 128))` (temperature 0.5, its default), plain `SGD(lr=0.06)` and
`update_momentum` before every step with the momentum cosine-scheduled from 0.996 to 1.

Only the sizes change (input size, batch, workers) and the schedule's progress, which can run on
wall-clock time (a time budget) instead of epochs. `export_backbone` writes the trained backbone as a
`retrieval` encoder (encoder.safetensors + encoder.json), so it is scored by exactly the same embedding
code as ours.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torchvision
from lightly.data import LightlyDataset
from lightly.loss import NTXentLoss
from lightly.models.modules import MoCoProjectionHead
from lightly.models.utils import deactivate_requires_grad, update_momentum
from lightly.transforms.moco_transform import MoCoV2Transform
from lightly.utils.scheduler import cosine_schedule
from torch import nn

from moco.export import EncoderSpec, export_encoder


class LightlyMoCo(nn.Module):
    """The example's model, verbatim in structure."""

    def __init__(self, backbone: nn.Module) -> None:
        super().__init__()
        self.backbone = backbone
        self.projection_head = MoCoProjectionHead(512, 512, 128)
        self.backbone_momentum = copy.deepcopy(self.backbone)
        self.projection_head_momentum = copy.deepcopy(self.projection_head)
        deactivate_requires_grad(self.backbone_momentum)
        deactivate_requires_grad(self.projection_head_momentum)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        query = self.backbone(x).flatten(start_dim=1)
        return self.projection_head(query)

    def forward_momentum(self, x: torch.Tensor) -> torch.Tensor:
        key = self.backbone_momentum(x).flatten(start_dim=1)
        return self.projection_head_momentum(key).detach()


def build_model(seed: int = 0) -> LightlyMoCo:
    torch.manual_seed(seed)
    resnet = torchvision.models.resnet18()
    backbone = nn.Sequential(*list(resnet.children())[:-1])
    return LightlyMoCo(backbone)


def build_loader(images: Path, input_size: int, batch_size: int, workers: int) -> torch.utils.data.DataLoader:
    transform = MoCoV2Transform(input_size=input_size)
    dataset = LightlyDataset(str(images), transform=transform)
    return torch.utils.data.DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=True,
        drop_last=True,
        num_workers=workers,
    )


@dataclass
class LightlyRun:
    steps: int
    images_seen: int
    seconds: float
    step_end_times: list[float]  # time.monotonic() after each step
    loss: float
    model: LightlyMoCo


def train(
    images: Path,
    input_size: int = 96,
    batch_size: int = 64,
    workers: int = 1,
    memory_bank_size: int = 4096,
    max_steps: int = 0,
    time_budget_s: float = 0.0,
    epochs: int = 10,
    seed: int = 0,
    device: str = "cpu",
    on_step: Callable[[int, float], None] | None = None,
) -> LightlyRun:
    """lightly's example loop. Stops after `max_steps` steps, or at `time_budget_s` (the momentum schedule then
    runs on the fraction of the budget used), or after `epochs` epochs (the example's schedule)."""
    model = build_model(seed).to(device)
    loader = build_loader(images, input_size, batch_size, workers)
    criterion = NTXentLoss(memory_bank_size=(memory_bank_size, 128))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.06)
    t0 = time.monotonic()
    ends: list[float] = []
    step, loss_value = 0, float("nan")
    for epoch in range(epochs if not (max_steps or time_budget_s) else 10**6):
        momentum_val = cosine_schedule(epoch, epochs, 0.996, 1)
        for batch in loader:
            if time_budget_s:
                frac = (time.monotonic() - t0) / time_budget_s
                if frac >= 1.0:
                    return LightlyRun(step, step * batch_size, time.monotonic() - t0, ends, loss_value, model)
                momentum_val = cosine_schedule(int(frac * 1000), 1000, 0.996, 1)
            x_query, x_key = batch[0]
            x_query, x_key = x_query.to(device), x_key.to(device)
            update_momentum(model.backbone, model.backbone_momentum, m=momentum_val)
            update_momentum(model.projection_head, model.projection_head_momentum, m=momentum_val)
            query = model(x_query)
            key = model.forward_momentum(x_key)
            loss = criterion(query, key)
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
            step += 1
            loss_value = float(loss.detach())  # syncs the device: the step is done
            ends.append(time.monotonic())
            if on_step is not None:
                on_step(step, loss_value)
            if max_steps and step >= max_steps:
                return LightlyRun(step, step * batch_size, time.monotonic() - t0, ends, loss_value, model)
    return LightlyRun(step, step * batch_size, time.monotonic() - t0, ends, loss_value, model)


def export_backbone(model: LightlyMoCo, out_dir: Path, image_size: int, gem_p: float = 3.0) -> EncoderSpec:
    """Adapter: lightly's backbone (Sequential of resnet children) -> a `retrieval` encoder directory.

    The Sequential's children are conv1, bn1, relu, maxpool, layer1..layer4, avgpool; our backbone wraps
    the same torchvision ResNet as `net.<name>`. The descriptor is then computed exactly as for ours
    (GeM with `gem_p`, flip-averaged, `image_size` px), so the comparison is of weights only.
    """
    names = ["conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4", "avgpool"]
    state = {}
    for key, value in model.backbone.state_dict().items():
        idx, rest = key.split(".", 1)
        state[f"net.{names[int(idx)]}.{rest}"] = value
    spec = EncoderSpec(
        arch="resnet18",
        embedding_dim=512,
        embed_size=image_size,
        gem_p=gem_p,
        trained={"peer": "lightly-1.6.0 MoCo example"},
    )
    return export_encoder(state, None, spec, out_dir)
