"""Starting from weights trained elsewhere: the queue is filled with keys of the initial encoder before the
first step, the backbone does not move while the new head trains, and learns (slowly) once released."""

from __future__ import annotations

import copy
import dataclasses

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import moco.train
from moco.checkpoint import load_checkpoint
from moco.config import MoCoConfig
from moco.data import PairDataset, epoch_batches
from moco.init.warm_start import FILL_EPOCH, backbone_lr_factor, fill_queue, param_groups, set_learning_rates
from moco.model import MoCo
from moco.train import fit
from tests.moco.init.official_layout import tiny_official_checkpoint
from tests.moco.tiny import light_views, make_images, tiny_config


class _Views:
    def __init__(self, size: int) -> None:
        self.t = light_views(size)

    def __call__(self, img):  # two slightly different views: a flip of one
        x = self.t(img)
        return x, torch.flip(x, dims=[-1])


def test_fill_queue_holds_keys_of_the_initial_key_encoder(tmp_path):
    torch.manual_seed(0)
    n, batch, K = 40, 8, 24
    array = np.random.default_rng(0).integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)
    dataset = PairDataset(array, _Views(32), seed=0)
    model = MoCo(MoCoConfig(arch="resnet18", dim=16, queue_size=K, bn_splits=1))
    before = copy.deepcopy(model)
    cfg = tiny_config(tmp_path, tmp_path / "run", model={"queue_size": K}, batch_size=batch, init="x")
    assert fill_queue(model, dataset, n, cfg, torch.device("cpu")) == K
    ids = model.queue_ids.tolist()
    assert min(ids) >= 0 and len(set(ids)) == K  # every slot, each from its own picture
    first_batch = {i for _, i in epoch_batches(n, batch, 0, 0)[0]}
    assert first_batch.isdisjoint(ids)  # the first step's pictures are not its negatives
    before.train()
    for b in range(K // batch):  # oracle: the initial key encoder on the same views, batch by batch
        slot = slice(b * batch, (b + 1) * batch)
        views = torch.stack([dataset[(FILL_EPOCH, i)][1] for i in model.queue_ids[slot].tolist()])
        with torch.no_grad():
            k = F.normalize(before.encoder_k(views), dim=1)  # (8, 16); BN over the batch: order-free
        torch.testing.assert_close(model.queue[slot], k, atol=2e-5, rtol=1e-4)


def test_learning_rates_hold_the_backbone_then_release_it_slowly():
    cfg = tiny_config(".", "out", init="x", init_head_steps=5, init_lr_scale=0.1, warmup_steps=4)
    assert [backbone_lr_factor(cfg, s, 5) for s in (0, 4, 5, 8, 100)] == pytest.approx([0, 0, 0.025, 0.1, 0.1])
    model = MoCo(MoCoConfig(arch="resnet18", dim=16, queue_size=32))
    opt = torch.optim.SGD(param_groups(model, cfg), lr=0.0, momentum=0.9)
    backbone, head = opt.param_groups
    assert backbone["part"] == "backbone" and head["part"] == "head"
    p = backbone["params"][0]
    opt.state[p]["momentum_buffer"] = torch.ones_like(p)  # gathered while the rate was 0
    set_learning_rates(opt, cfg, 4, 1.0, 5)
    assert backbone["lr"] == 0 and head["lr"] == 1.0 and p in opt.state
    set_learning_rates(opt, cfg, 5, 1.0, 5)
    assert backbone["lr"] == pytest.approx(0.025) and p not in opt.state  # released with no momentum
    plain = dataclasses.replace(cfg, init="")
    assert len(param_groups(model, plain)) == 1 and backbone_lr_factor(plain, 0, 0) == 1.0


def test_a_run_from_an_official_checkpoint_keeps_its_backbone_while_the_head_learns(tmp_path, monkeypatch):
    monkeypatch.setattr(moco.train, "make_preset", lambda name, size, *_, **__: light_views(size))
    ckpt = tmp_path / "checkpoint_0199.pth.tar"
    state = tiny_official_checkpoint(ckpt)
    init = {k.removeprefix("module.encoder_q."): v for k, v in state.items() if k.startswith("module.encoder_q.")}
    make_images(tmp_path / "photos", 48)
    K, batch, head_steps = 40, 8, 4
    cfg = tiny_config(
        tmp_path / "photos",
        tmp_path / "run",
        model={"queue_size": K, "bn_splits": 1},
        batch_size=batch,
        epochs=4,
        lr=0.5,
        init=str(ckpt),
        init_head_steps=head_steps,
        stop_after_steps=head_steps,
    )
    fit(cfg)
    saved = load_checkpoint(tmp_path / "run" / "checkpoint.pt")["model"]
    assert int(saved["queue_ids"].min()) >= 0  # 4 steps x 8 keys could fill only 32 of 40 slots
    model = MoCo(MoCoConfig(arch="resnet18", dim=16, queue_size=K, bn_splits=1))
    params = {n for n, _ in model.encoder_q.backbone.net.named_parameters()}
    for name in params:
        assert torch.equal(saved[f"encoder_q.backbone.net.{name}"], init[name]), name
    torch.manual_seed(cfg.seed)
    fresh_head = MoCo(dataclasses.replace(model.cfg)).encoder_q.head.state_dict()
    assert any(not torch.equal(saved[f"encoder_q.head.{k}"], v) for k, v in fresh_head.items())

    # continued past the head-only steps: the backbone learns, at a tenth of the rate
    fit(dataclasses.replace(cfg, stop_after_steps=head_steps + 3))
    moved = load_checkpoint(tmp_path / "run" / "checkpoint.pt")["model"]
    changes = [(moved[f"encoder_q.backbone.net.{n}"] - init[n]).norm() / init[n].norm().clamp(min=1e-8) for n in params]
    assert max(changes) > 0
