"""Combinatorial patch queries (Fast-MoCo): the query view cut into a 2x2 grid, each pair of patches one query."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from moco.checkpoint import load_checkpoint
from moco.config import MoCoConfig
from moco.model import PATCH_PAIRS, MoCo, grid_patches
from moco.train import fit, train_amp
from tests.moco.tiny import make_images, tiny_config

N, DIM, K = 4, 16, 32


@pytest.fixture(scope="module")
def model() -> MoCo:
    torch.manual_seed(0)
    return MoCo(MoCoConfig(dim=DIM, queue_size=K, bn_splits=1, patch_queries=True))


def views(seed: int, side: int = 64) -> torch.Tensor:
    return torch.randn(N, 3, side, side, generator=torch.Generator().manual_seed(seed))


def test_grid_patches_are_the_four_quadrants_row_major_image_by_image():
    x = views(1, 9)  # odd side: the last row and column are dropped
    p = grid_patches(x)
    assert p.shape == (4 * N, 3, 4, 4)
    for n in range(N):
        for i, (r, c) in enumerate(((0, 0), (0, 1), (1, 0), (1, 1))):
            assert torch.equal(p[4 * n + i], x[n, :, 4 * r : 4 * r + 4, 4 * c : 4 * c + 4])
    cl = grid_patches(x.contiguous(memory_format=torch.channels_last))
    assert torch.equal(cl, p) and cl.is_contiguous(memory_format=torch.channels_last)
    assert len(PATCH_PAIRS) == 6 and len(set(PATCH_PAIRS)) == 6 and all(a < b for a, b in PATCH_PAIRS)


def test_each_query_is_the_head_of_the_mean_feature_of_its_two_patches(model):
    """Oracle: in eval mode (running BN statistics, so a patch's feature does not depend on its batch) every
    patch encoded on its own; query 6n+j is normalize(head((f_a + f_b) / 2)) for pair j = (a, b) of image n."""
    m = copy.deepcopy(model).eval()
    x = views(2)
    with torch.no_grad():
        q = m._queries(x)
        assert q.shape == (6 * N, DIM)
        for n in range(N):
            quads = [x[n : n + 1, :, r : r + 32, c : c + 32] for r in (0, 32) for c in (0, 32)]
            f = [m.encoder_q.features(p)[0] for p in quads]
            for j, (a, b) in enumerate(PATCH_PAIRS):
                want = F.normalize(m.encoder_q.head((f[a] + f[b]) / 2), dim=0)
                torch.testing.assert_close(q[6 * n + j], want, atol=1e-5, rtol=1e-5)


def test_six_rows_per_image_against_that_image_key_and_the_old_queue(model):
    m = copy.deepcopy(model)
    queue_before = m.queue.clone()
    ids = torch.arange(10, 10 + N)
    logits, labels = m(views(3), views(4), ids, torch.Generator().manual_seed(0))
    assert logits.shape == (6 * N, 1 + K) and labels.tolist() == [0] * (6 * N)
    assert int(m.queue_ptr) == N and m.queue_ids[:N].tolist() == ids.tolist()  # one key per image is enqueued
    keys = m.queue[:N]
    torch.testing.assert_close(logits[:, 0] * m.T, (m.last_q * keys.repeat_interleave(6, 0)).sum(1))
    torch.testing.assert_close(logits[:, 1:] * m.T, m.last_q @ queue_before.T)
    # the six queries of one image differ: each pair of patches is its own positive
    assert torch.cdist(m.last_q[:6], m.last_q[:6]).triu(1).gt(1e-4).sum() == 15


def test_the_symmetric_loss_pairs_each_view_s_six_queries_with_the_other_view_s_key():
    torch.manual_seed(0)
    m = MoCo(MoCoConfig(dim=DIM, queue_size=K, bn_splits=1, patch_queries=True, symmetric=True))
    before = copy.deepcopy(m)  # the oracle computes from the same weights, queue and BN, without shuffling
    a, b = views(3), views(4)
    logits, labels = m(a, b, generator=torch.Generator().manual_seed(0))
    assert logits.shape == (12 * N, 1 + K) and labels.tolist() == [0] * (12 * N)
    with torch.no_grad():
        q_a, q_b = before._queries(a), before._queries(b)  # (6N, dim) each
        k_a = F.normalize(before.encoder_k(a).float(), dim=1)  # (N, dim)
        k_b = F.normalize(before.encoder_k(b).float(), dim=1)
    want_pos = torch.cat([(q_a * k_b.repeat_interleave(6, 0)).sum(1), (q_b * k_a.repeat_interleave(6, 0)).sum(1)])
    torch.testing.assert_close(logits[:, 0] * m.T, want_pos, atol=1e-5, rtol=1e-4)
    want_neg = torch.cat([q_a, q_b]) @ before.queue.T  # both directions against the queue before this step
    torch.testing.assert_close(logits[:, 1:] * m.T, want_neg, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(m.queue[:N], k_b, atol=1e-5, rtol=1e-4)  # only the first direction's keys enqueued
    assert int(m.queue_ptr) == N


def test_fit_with_patch_queries_trains_every_backbone_layer_and_a_resume_keeps_the_setting(tmp_path):
    make_images(tmp_path / "imgs", 16)
    cfg = tiny_config(tmp_path / "imgs", tmp_path / "run", model={"patch_queries": True}, epochs=2)
    r = fit(cfg)
    assert r.steps == 4 and np.isfinite(r.loss)
    state = load_checkpoint(tmp_path / "run" / "checkpoint.pt")
    assert state["model_config"]["patch_queries"] is True
    torch.manual_seed(cfg.seed)  # fit builds its network from this seed: the weights before the first step
    start = MoCo(MoCoConfig(**state["model_config"])).state_dict()
    convs = [k for k in start if k.startswith("encoder_q.backbone") and k.endswith("conv1.weight")]
    assert convs and all(not torch.equal(state["model"][k], start[k]) for k in convs)  # the patch path reached each
    # K = 16 images - one batch of 8: the queue holds the last step's 8 keys, one per image of that batch
    ids = state["model"]["queue_ids"].tolist()
    assert r.model_config.queue_size == 8 and len(set(ids)) == 8 and set(ids) <= set(range(16))
    with pytest.raises(Exception, match="model.patch_queries"):
        fit(tiny_config(tmp_path / "imgs", tmp_path / "run", epochs=3))


def test_cpu_bf16_is_kept_off_where_a_patch_reaches_the_last_map_at_1x1(tmp_path):
    """64 px crops with patches: 32 px patches reach the imagenet stem's layer4 at 1x1 -> fp32."""
    cpu = torch.device("cpu")

    def amp(size: int, patches: bool) -> bool:
        return train_amp(tiny_config(tmp_path, tmp_path, model={"patch_queries": patches}, crop_size=size), cpu)

    assert amp(64, False) and not amp(64, True) and amp(128, True)
