"""Averaged keys (FastSiam): V key views of an image encoded by f_k, each L2-normalised, their mean normalised is the
image's one key; checked against the key encoder run view by view, and the views' transform."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from PIL import Image

from moco.augment.presets import TwoCropsTransform
from moco.config import MoCoConfig
from moco.model import MoCo

DIM = 16


def tiny(K: int = 32) -> MoCo:
    torch.manual_seed(0)
    return MoCo(MoCoConfig(dim=DIM, queue_size=K, bn_splits=1))


def test_the_averaged_key_is_the_normalised_mean_of_each_views_unit_key():
    model = tiny().eval()  # eval BN: each image's key depends on it alone, so the views can be encoded one by one
    im_k = torch.randn(4, 3, 3, 32, 32, generator=torch.Generator().manual_seed(1))  # (N, V, 3, H, W)
    with torch.no_grad():
        views = [F.normalize(model.encoder_k(im_k[:, v]), dim=1) for v in range(3)]  # V x (N, dim)
        want = F.normalize((views[0] + views[1] + views[2]) / 3, dim=1)  # (N, dim)
        got = model._keys(im_k, torch.Generator().manual_seed(0))
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    # one view is the plain key
    with torch.no_grad():
        torch.testing.assert_close(model._keys(im_k[:, :1], None), views[0], atol=1e-5, rtol=1e-5)


def test_forward_with_averaged_keys_scores_and_enqueues_the_averaged_key():
    model = tiny(K=8)
    model.m = 1.0  # no momentum update: the key encoder stays as it was for the oracle below
    model.encoder_k.eval()
    im_q = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    im_k = torch.randn(4, 2, 3, 32, 32, generator=torch.Generator().manual_seed(3))
    queue = model.queue.clone()
    logits, labels = model(im_q, im_k, torch.arange(4))
    assert logits.shape == (4, 1 + 8) and labels.tolist() == [0, 0, 0, 0]
    with torch.no_grad():
        want = F.normalize(sum(F.normalize(model.encoder_k(im_k[:, v]), dim=1) for v in range(2)) / 2, dim=1)
    torch.testing.assert_close(model.queue[:4], want, atol=1e-5, rtol=1e-5)  # enqueued at slots 0..3
    torch.testing.assert_close(model.queue[4:], queue[4:])
    q = model.last_q  # (4, dim)
    torch.testing.assert_close(logits[:, 0], (q * want).sum(dim=1) / model.T, atol=1e-4, rtol=1e-4)


def test_two_crops_stacks_the_key_views():
    calls = iter(range(100))
    tf = TwoCropsTransform(lambda img: torch.full((3, 2, 2), float(next(calls))), key_views=3)
    q, k = tf(Image.new("RGB", (8, 8)))
    assert q.shape == (3, 2, 2) and k.shape == (3, 3, 2, 2)
    assert q[0, 0, 0] == 0 and k[:, 0, 0, 0].tolist() == [1.0, 2.0, 3.0]  # independent draws, query first
    q, k = TwoCropsTransform(lambda img: torch.zeros(3, 2, 2))(Image.new("RGB", (8, 8)))
    assert k.shape == (3, 2, 2)  # one key view: as before
