"""Multi-crop: L small views per image, each one more query against the image's key and the same queue."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from moco.augment.presets import LOCAL_MIN_SCALE, TwoCropsTransform, make_preset
from moco.checkpoint import load_checkpoint
from moco.config import MoCoConfig, TrainConfig
from moco.data import PairDataset
from moco.model import MoCo
from moco.train import fit
from tests.moco.tiny import make_images, tiny_config

N, L, DIM = 4, 3, 16


@pytest.fixture(scope="module")
def base() -> MoCo:
    torch.manual_seed(0)
    return MoCo(MoCoConfig(dim=DIM, queue_size=32, bn_splits=1))


def views(seed: int) -> torch.Tensor:
    return torch.randn(N, 3, 32, 32, generator=torch.Generator().manual_seed(seed))


def test_local_views_that_equal_the_query_view_give_the_query_rows(base):
    """Oracle: with each local view a copy of the image's query view (a batch of copies has the batch's own BN
    statistics), the N*L local rows are the N query rows, each repeated L times, in image order."""
    im_q, im_k = views(1), views(2)
    plain, multi = copy.deepcopy(base), copy.deepcopy(base)
    ref, _ = plain(im_q, im_k, generator=torch.Generator().manual_seed(3))
    im_local = im_q.unsqueeze(1).expand(N, L, 3, 32, 32).contiguous()  # (N, L, 3, 32, 32)
    logits, labels = multi(im_q, im_k, generator=torch.Generator().manual_seed(3), im_local=im_local)
    assert logits.shape == (N + N * L, 1 + 32) and labels.tolist() == [0] * (N + N * L)
    torch.testing.assert_close(logits[:N], ref)
    torch.testing.assert_close(logits[N:], ref.repeat_interleave(L, dim=0), atol=1e-4, rtol=1e-4)


def test_local_rows_use_the_key_of_their_own_image_and_enqueue_nothing(base):
    model = copy.deepcopy(base)
    im_local = torch.randn(N, L, 3, 16, 16, generator=torch.Generator().manual_seed(4))  # any size: GeM pools
    queue_before = model.queue.clone()
    logits, _ = model(views(1), views(2), generator=torch.Generator().manual_seed(3), im_local=im_local)
    assert int(model.queue_ptr) == N  # the N keys only, never the local views
    # the positive logit of local view j of image n is q_local . k_n / T, with k_n the key of row n
    with torch.no_grad():
        q_local = F.normalize(model.encoder_q(im_local.flatten(0, 1)).float(), dim=1)  # (N*L, dim)
        keys = model.queue[:N]  # the batch's keys, just enqueued in image order
    torch.testing.assert_close(
        logits[N:, 0] * model.T, (q_local * keys.repeat_interleave(L, 0)).sum(1), atol=2e-3, rtol=0
    )
    torch.testing.assert_close(logits[N:, 1:] * model.T, q_local @ queue_before.T, atol=2e-3, rtol=0)


def test_the_local_rows_alone_train_the_query_encoder(base):
    model = copy.deepcopy(base)
    im_local = torch.randn(N, L, 3, 16, 16, generator=torch.Generator().manual_seed(5))
    logits, labels = model(views(1), views(2), generator=torch.Generator().manual_seed(3), im_local=im_local)
    F.cross_entropy(logits[N:], labels[N:]).backward()
    grads = [p.grad for p in model.encoder_q.parameters()]
    assert all(g is not None for g in grads) and sum(float(g.abs().sum()) for g in grads) > 0
    assert all(p.grad is None for p in model.encoder_k.parameters())


def test_the_dataset_adds_l_local_views_of_the_local_size_reproducibly():
    array = np.random.default_rng(0).integers(0, 256, (3, 48, 48, 3), dtype=np.uint8)
    crops = TwoCropsTransform(
        make_preset("moco-v2", 32), make_preset("moco-v2", 16, LOCAL_MIN_SCALE, max_scale=0.14), n_local=L
    )
    ds = PairDataset(array, crops, seed=0)
    q, k, i, local = ds[(0, 2)]
    assert q.shape == k.shape == (3, 32, 32) and i == 2 and local.shape == (L, 3, 16, 16)
    assert not torch.equal(local[0], local[1])  # independent views
    again = ds[(0, 2)]
    assert all(torch.equal(a, b) for a, b in zip((q, k, local), (again[0], again[1], again[3]), strict=True))
    assert len(PairDataset(array, TwoCropsTransform(make_preset("moco-v2", 32)), 0)[(0, 1)]) == 3  # off: as before
    with pytest.raises(ValueError, match="local transform"):
        TwoCropsTransform(make_preset("moco-v2", 32), None, n_local=2)
    img = Image.fromarray(array[0])
    assert len(TwoCropsTransform(make_preset("moco-v2", 32))(img)) == 2


def test_fit_with_local_crops_trains_and_a_resume_keeps_the_setting(tmp_path):
    make_images(tmp_path / "imgs", 16)
    cfg = tiny_config(tmp_path / "imgs", tmp_path / "run", epochs=2, local_crops=2)
    r = fit(cfg)
    assert r.steps == 4 and np.isfinite(r.loss)
    assert load_checkpoint(tmp_path / "run" / "checkpoint.pt")["config"]["local_crops"] == 2
    with pytest.raises(Exception, match="local_crops"):
        fit(tiny_config(tmp_path / "imgs", tmp_path / "run", epochs=2, local_crops=0))


def test_multicrop_settings_are_checked():
    assert TrainConfig(images="a", out="b", crop_size=64).local_side == 32
    assert TrainConfig(images="a", out="b", crop_size=64, local_size=24).local_side == 24
    for bad in ({"local_crops": -1}, {"local_size": 4}, {"local_max_scale": 0.05}, {"local_max_scale": 1.5}):
        with pytest.raises(ValueError, match="multi-crop|local_max_scale"):
            TrainConfig(images="a", out="b", **bad)
