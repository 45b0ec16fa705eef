"""moco.model / moco.backbone: momentum encoder, ring-buffer queue, key shuffle, ghost BN, encode()."""

from __future__ import annotations

import copy
from collections import deque

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from moco.backbone import SplitBatchNorm
from moco.config import MoCoConfig
from moco.model import MoCo

DIM = 16


def tiny_moco(K: int = 32, m: float = 0.99, splits: int = 1, symmetric: bool = False) -> MoCo:
    torch.manual_seed(0)
    return MoCo(MoCoConfig(dim=DIM, queue_size=K, momentum=m, bn_splits=splits, symmetric=symmetric))


def images(n: int, seed: int) -> torch.Tensor:
    return torch.randn(n, 3, 32, 32, generator=torch.Generator().manual_seed(seed))


@pytest.fixture(scope="module")
def base() -> MoCo:
    return tiny_moco()


@pytest.fixture
def model(base) -> MoCo:
    """A fresh copy of the K=32, m=0.99, plain-BN model (cheaper than building one)."""
    return copy.deepcopy(base)


# ------------------------------------------------------------------------------------ momentum encoder


def test_momentum_update_is_exact_for_params_and_copies_bn_buffers(model):
    m = model.m
    assert m == 0.99
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():  # make the two encoders differ, buffers included
        for p in model.encoder_q.parameters():
            p.add_(torch.randn(p.shape, generator=g))
        for b in model.encoder_q.buffers():
            if b.is_floating_point():
                b.copy_(torch.rand(b.shape, generator=g) + 0.5)
            else:
                b.fill_(7)
    theta_k = [p.detach().clone() for p in model.encoder_k.parameters()]
    theta_q = [p.detach().clone() for p in model.encoder_q.parameters()]
    assert not all(torch.equal(a, b) for a, b in zip(theta_k, theta_q, strict=True))

    model.momentum_update()

    for p_k, t_k, t_q in zip(model.encoder_k.parameters(), theta_k, theta_q, strict=True):
        assert torch.equal(p_k, t_k.mul(m).add(t_q, alpha=1 - m))  # m * theta_k + (1 - m) * theta_q in float32
        torch.testing.assert_close(p_k, t_k * m + (1 - m) * t_q, rtol=0, atol=2e-7)  # whichever rounding order
    for p_q, t_q in zip(model.encoder_q.parameters(), theta_q, strict=True):
        assert torch.equal(p_q, t_q), "the query encoder must not move"
    for (name, b_k), b_q in zip(model.encoder_k.named_buffers(), model.encoder_q.buffers(), strict=True):
        assert torch.equal(b_k, b_q), f"buffer {name} not copied"
    assert all(not p.requires_grad for p in model.encoder_k.parameters())


# ------------------------------------------------------------------------------------------ the queue


def test_queue_is_a_ring_buffer_with_ids():
    K = 10
    q = tiny_moco(K=K)
    initial = q.queue.clone()
    fifo = deque([("init", i) for i in range(K)], maxlen=K)  # oracle: oldest ... newest
    keys: dict[int, torch.Tensor] = {}
    next_id = 0
    g = torch.Generator().manual_seed(2)
    for n in (3, 4, 3, 7, 13, 2):  # none divides 10; 7 wraps round; 13 > K keeps the newest 10
        k = F.normalize(torch.randn(n, DIM, generator=g), dim=1)
        ids = torch.arange(next_id, next_id + n)
        ptr_before = int(q.queue_ptr)
        q.enqueue(k, ids)
        for j in range(n):
            keys[next_id + j] = k[j]
            fifo.append(("key", next_id + j))
        next_id += n
        ptr = int(q.queue_ptr)
        if n < K:
            assert ptr == (ptr_before + n) % K
        # reading the ring from the pointer gives oldest -> newest
        order = [(ptr + s) % K for s in range(K)]
        for slot, (kind, i) in zip(order, fifo, strict=True):
            if kind == "init":
                assert int(q.queue_ids[slot]) == -1
                assert torch.equal(q.queue[slot], initial[i])
            else:
                assert int(q.queue_ids[slot]) == i
                assert torch.equal(q.queue[slot], keys[i])
    # after all that, the queue holds the newest K ids of the whole stream
    assert sorted(q.queue_ids.tolist()) == list(range(next_id - K, next_id))


def test_keys_are_enqueued_after_the_logits(model):
    q = model.train()
    old_queue = q.queue.clone()
    old_ptr = int(q.queue_ptr)
    im_q, im_k = images(8, 3), images(8, 4)
    ids = torch.arange(100, 108)
    logits, labels = q(im_q, im_k, ids, torch.Generator().manual_seed(0))
    assert logits.shape == (8, 1 + 32) and torch.equal(labels, torch.zeros(8, dtype=torch.long))
    # negatives: the queue as it was before this batch
    torch.testing.assert_close(logits[:, 1:], q.last_q @ old_queue.T / q.T)
    # the batch's keys are in the queue now, at the old pointer, and they are the positives
    slots = (old_ptr + torch.arange(8)) % 32
    assert torch.equal(q.queue_ids[slots], ids)
    assert int(q.queue_ptr) == (old_ptr + 8) % 32
    new_k = q.queue[slots]
    torch.testing.assert_close(logits[:, 0], (q.last_q * new_k).sum(dim=1) / q.T)
    torch.testing.assert_close(new_k.norm(dim=1), torch.ones(8))
    untouched = torch.ones(32, dtype=torch.bool)
    untouched[slots] = False
    assert torch.equal(q.queue[untouched], old_queue[untouched])


def test_symmetric_loss_adds_the_swapped_views():
    """The symmetric loss's rows are (x_q, x_k) as the plain loss forms them, then the views swapped."""
    x1, x2 = images(4, 5), images(4, 6)
    logits, labels = tiny_moco(K=32, symmetric=True)(x1, x2, torch.arange(4), torch.Generator().manual_seed(0))
    plain, _ = tiny_moco(K=32)(x1, x2, torch.arange(4), torch.Generator().manual_seed(0))  # same weights and queue
    swapped, _ = tiny_moco(K=32)(x2, x1, torch.arange(4), torch.Generator().manual_seed(0))
    torch.testing.assert_close(logits[:4], plain)
    torch.testing.assert_close(logits[4:], swapped)
    assert labels.tolist() == [0] * 8


# ----------------------------------------------------------------------------------------- shuffle BN


def _capture_inputs(module: nn.Module) -> tuple[list[torch.Tensor], object]:
    seen: list[torch.Tensor] = []
    handle = module.register_forward_hook(lambda mod, inp, out: seen.append(inp[0].detach().clone()))
    return seen, handle


def _as_permutation(shuffled: torch.Tensor, original: torch.Tensor) -> list[int]:
    """perm with shuffled[i] == original[perm[i]]."""
    perm = []
    for row in shuffled:
        match = [j for j in range(len(original)) if torch.equal(row, original[j])]
        assert len(match) == 1, "the key encoder saw an image that is not in the key batch"
        perm.append(match[0])
    return perm


@pytest.mark.parametrize("splits", [1, 4])
def test_key_encoder_sees_a_shuffled_batch_and_keys_come_back_in_order(splits, model):
    if splits > 1:
        model = tiny_moco(splits=splits)
    im_q, im_k = images(8, 7), images(8, 8)

    model.train()
    seen, handle = _capture_inputs(model.encoder_k)
    model(im_q, im_k, torch.arange(8), torch.Generator().manual_seed(0))
    handle.remove()
    assert len(seen) == 1
    perm = _as_permutation(seen[0], im_k)
    assert sorted(perm) == list(range(8)), "not a permutation of the key batch"
    assert perm != list(range(8)), "the key batch was not shuffled"

    # returned keys are unshuffled: in eval mode BN is per sample, so they must equal encoding in order
    model.eval()
    seen, handle = _capture_inputs(model.encoder_k)
    k = model._keys(im_k, torch.Generator().manual_seed(1))
    handle.remove()
    assert _as_permutation(seen[0], im_k) != list(range(8))
    with torch.no_grad():
        k_ref = F.normalize(model.encoder_k(im_k), dim=1)
    torch.testing.assert_close(k, k_ref, rtol=1e-4, atol=1e-5)


# ------------------------------------------------------------------------------------------ ghost BN


@pytest.mark.parametrize("G", [2, 4])
def test_split_batchnorm_equals_plain_batchnorm_per_group(G):
    C, N = 5, 8
    torch.manual_seed(0)
    x = torch.randn(N, C, 3, 3) * 2.0 + 0.5
    split = SplitBatchNorm(C, G)
    with torch.no_grad():
        split.weight.copy_(torch.randn(C))
        split.bias.copy_(torch.randn(C))
    plain = [nn.BatchNorm2d(C) for _ in range(G)]
    for bn in plain:
        bn.load_state_dict(split.state_dict())

    for _ in range(3):  # several steps, so running stats compound
        out = split(x)
        ref = torch.cat([bn(x[g * N // G : (g + 1) * N // G]) for g, bn in enumerate(plain)])
        torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-6)
        mean = torch.stack([bn.running_mean for bn in plain]).mean(dim=0)
        var = torch.stack([bn.running_var for bn in plain]).mean(dim=0)
        torch.testing.assert_close(split.running_mean, mean, rtol=1e-6, atol=1e-7)
        torch.testing.assert_close(split.running_var, var, rtol=1e-6, atol=1e-7)
        # each group gets its own batch statistics, unlike one BN over the whole batch
        one = nn.BatchNorm2d(C)
        one.load_state_dict(split.state_dict())
        assert not torch.allclose(one(x), out, atol=1e-3)
        x = x * 1.1 + 0.2

    # eval mode: it is a plain BatchNorm with those running stats, and the state dict has its keys
    split.eval()
    same = nn.BatchNorm2d(C).eval()
    same.load_state_dict(split.state_dict())
    torch.testing.assert_close(split(x), same(x))
    assert set(split.state_dict()) == set(nn.BatchNorm2d(C).state_dict())


def test_split_batchnorm_refuses_a_batch_that_does_not_split():
    with pytest.raises(ValueError, match="does not split"):
        SplitBatchNorm(3, 4)(torch.randn(6, 3, 2, 2))


# ------------------------------------------------------------------------------------------- encode


def test_encode_returns_unit_vectors_of_backbone_width(model):
    model.eval()
    z = model.encode(images(5, 9))
    assert z.shape == (5, 512) and z.dtype == torch.float32
    torch.testing.assert_close(z.norm(dim=1), torch.ones(5))
    with torch.no_grad():
        raw = model.encoder_q.features(images(5, 9))
    torch.testing.assert_close(z, raw / raw.norm(dim=1, keepdim=True))
