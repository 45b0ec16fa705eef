"""moco.loss: InfoNCE over 1+K logits against a value worked out by hand."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from moco.config import MoCoConfig
from moco.loss import info_nce_logits

# N = 2 queries, C = 3 dims, K = 2 queue keys, T = 0.5; every vector has unit length.
Q = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
K_POS = torch.tensor([[0.6, 0.8, 0.0], [0.0, 0.6, 0.8]])
QUEUE = torch.tensor([[0.0, 0.0, 1.0], [1.0, 0.0, 0.0]])
T = 0.5
# logits = [q.k, q.queue_0, q.queue_1] / T
#   row 0: [0.6, 0.0, 1.0] / 0.5 = [1.2, 0.0, 2.0]
#   row 1: [0.6, 0.0, 0.0] / 0.5 = [1.2, 0.0, 0.0]
LOGITS = [[1.2, 0.0, 2.0], [1.2, 0.0, 0.0]]
# loss_i = -logit_i0 + log(sum_j exp(logit_ij))
#   row 0: -1.2 + log(e^1.2 + e^0 + e^2) = -1.2 + log(3.3201169 + 1 + 7.3890561) = 1.2603726
#   row 1: -1.2 + log(e^1.2 + 1 + 1)    = -1.2 + log(5.3201169)                 = 0.4714953
#   mean = (1.2603726 + 0.4714953) / 2 = 0.8659339
LOSS = 0.8659339173186785


def test_info_nce_equals_hand_computed_value():
    """The training loss (cross-entropy of the logits against label 0, as moco.train computes it)."""
    logits = info_nce_logits(Q, K_POS, QUEUE, T)  # (2, 3)
    loss = F.cross_entropy(logits, torch.zeros(2, dtype=torch.long))
    assert loss.item() == pytest.approx(LOSS, abs=1e-6)


def test_info_nce_prefers_the_positive():
    """Moving the positive key onto the query lowers the loss; a queue key onto it raises it."""
    base = F.cross_entropy(info_nce_logits(Q, K_POS, QUEUE, T), torch.zeros(2, dtype=torch.long))
    closer = F.cross_entropy(info_nce_logits(Q, Q, QUEUE, T), torch.zeros(2, dtype=torch.long))
    confusing = F.cross_entropy(info_nce_logits(Q, K_POS, torch.cat([QUEUE, Q]), T), torch.zeros(2, dtype=torch.long))
    assert closer < base < confusing


def test_logits_have_the_positive_at_column_zero():
    logits = info_nce_logits(Q, K_POS, QUEUE, T)
    assert logits.shape == (2, 1 + 2)
    torch.testing.assert_close(logits, torch.tensor(LOGITS))


def test_logits_shape_is_n_by_one_plus_k():
    g = torch.Generator().manual_seed(0)
    N, C, K = 5, 7, 11
    q = torch.nn.functional.normalize(torch.randn(N, C, generator=g), dim=1)
    k = torch.nn.functional.normalize(torch.randn(N, C, generator=g), dim=1)
    queue = torch.nn.functional.normalize(torch.randn(K, C, generator=g), dim=1)
    logits = info_nce_logits(q, k, queue, 0.2)
    assert logits.shape == (N, 1 + K)
    torch.testing.assert_close(logits[:, 0], (q * k).sum(dim=1) / 0.2)
    torch.testing.assert_close(logits[:, 1:], q @ queue.T / 0.2)


@pytest.mark.parametrize("bad", [0.0, -0.1])
def test_illegal_temperature_raises(bad):
    with pytest.raises(ValueError, match="Illegal temperature"):
        MoCoConfig(temperature=bad)
