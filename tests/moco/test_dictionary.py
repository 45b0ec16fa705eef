"""moco.dictionary: InfoNCE of one query against the paper's Eq. 1 via the training loss; FIFO order."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from moco.dictionary import info_nce
from moco.loss import info_nce_logits


@pytest.mark.parametrize("T", [0.05, 0.2, 2.0])
def test_info_nce_matches_the_training_loss(T):
    g = torch.Generator().manual_seed(0)
    q, k = (F.normalize(torch.randn(1, 16, generator=g, dtype=torch.float64), dim=1) for _ in range(2))
    queue = F.normalize(torch.randn(32, 16, generator=g, dtype=torch.float64), dim=1)
    logits = info_nce_logits(q, k, queue, T)  # (1, 1+K), as moco.train forms them
    expected = float(F.cross_entropy(logits, torch.zeros(1, dtype=torch.long)))  # the training loss
    p, loss = info_nce(float(q[0] @ k[0]), (queue @ q[0]).numpy(), T)
    assert loss == pytest.approx(expected, rel=1e-12)
    assert p == pytest.approx(np.exp(-expected), rel=1e-12)


def test_info_nce_is_stable_and_checks_T():
    p, loss = info_nce(1.0, np.full(4096, -1.0), 0.01)  # logits 100 and -100: no overflow
    assert p == pytest.approx(1.0) and loss == pytest.approx(4096 * np.exp(-200), abs=1e-80)
    assert info_nce(0.5, np.full(9, 0.5), 0.2)[0] == pytest.approx(0.1)  # all keys equal: chance, 1 / (1+K)
    with pytest.raises(ValueError, match="temperature"):
        info_nce(0.5, np.zeros(3), 0.0)
