"""DDP on 2 CPU processes (gloo): cross-rank shuffle BN gives the keys of in-order encoding, every rank ends
with the same queue, the loss falls, and a time budget stops every rank at the same step."""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.nn.functional as F

import moco.train
from moco.checkpoint import load_checkpoint
from moco.config import MoCoConfig
from moco.data import epoch_batches
from moco.model import MoCo, concat_all_gather
from tests.moco.conftest import StepClock
from tests.moco.tiny import light_views, make_images, tiny_config
from tests.moco.train.ranks import WORLD, join_env, run_ranks

N_IMAGES, BATCH, EPOCHS = 32, 8, 100  # 2 steps per epoch on each rank, 16 images a step
# The run ends by a time budget on a step clock (each reading of the clock advances 0.1 s). Rank 0 reads it
# more often (it logs every step), so its clock runs ahead: the ranks must agree on time anyway.
BUDGET_MIN = 8.0 / 60


def _worker(rank: int, port: int, images: str, out: str, results: str) -> None:
    """One rank: check _keys_ddp, then train with moco.train.fit and save what the rank ends with."""
    join_env(rank, port)
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=WORLD)
    res = Path(results)

    # shuffle BN across ranks, in eval mode (BN per sample), on 4 images per rank
    torch.manual_seed(0)
    model = MoCo(MoCoConfig(dim=16, queue_size=8, bn_splits=1)).eval()
    im_k = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(100 + rank))
    seen: list[torch.Tensor] = []
    hook = model.encoder_k.register_forward_hook(lambda m, i, o: seen.append(i[0].detach().clone()))
    # a different generator on each rank: the permutation must still be rank 0's (broadcast)
    k = model._keys_ddp(im_k, torch.Generator().manual_seed(7 + rank))
    hook.remove()
    with torch.no_grad():
        k_ref = F.normalize(model.encoder_k(im_k), dim=1)
    torch.save({"k": k, "k_ref": k_ref, "seen": seen[0], "all": concat_all_gather(im_k)}, res / f"keys{rank}.pt")

    # training: fit joins the existing process group; keep the model it builds
    built: list[MoCo] = []

    def keep(cfg: MoCoConfig) -> MoCo:
        built.append(MoCo(cfg))
        return built[-1]

    moco.train.MoCo = keep
    moco.train.make_preset = lambda name, size, *_, **__: light_views(size)
    moco.train.time = StepClock(0.1)
    cfg = tiny_config(images, out, batch_size=BATCH, epochs=EPOCHS, lr=0.32, log_every=1, time_budget_min=BUDGET_MIN)
    result = moco.train.fit(cfg)
    m = built[0]
    torch.save(
        {
            "queue": m.queue,
            "queue_ids": m.queue_ids,
            "queue_ptr": m.queue_ptr,
            "steps": result.steps,
            "stopped": result.stopped,
            "loss": result.loss,
            "bn_splits": m.cfg.bn_splits,
            "K": m.K,
            "encoder_q": m.encoder_q.state_dict(),
        },
        res / f"rank{rank}.pt",
    )


@pytest.fixture(scope="module")
def ddp_run(tmp_path_factory):
    base = tmp_path_factory.mktemp("ddp")
    make_images(base / "photos", N_IMAGES, seed=6)
    (base / "results").mkdir()
    run_ranks(_worker, str(base / "photos"), str(base / "run"), str(base / "results"))
    keys = [torch.load(base / "results" / f"keys{r}.pt") for r in range(WORLD)]
    ranks = [torch.load(base / "results" / f"rank{r}.pt") for r in range(WORLD)]
    yield {"base": base, "keys": keys, "ranks": ranks}
    shutil.rmtree(base, ignore_errors=True)


@pytest.mark.slow
def test_keys_ddp_equal_in_order_encoding_and_the_batch_is_shuffled_across_ranks(ddp_run):
    keys = ddp_run["keys"]
    global_batch = keys[0]["all"]  # (8, 3, 32, 32): rank 0's 4 images, then rank 1's
    assert torch.equal(global_batch, keys[1]["all"])
    perm = []
    for r in range(WORLD):
        torch.testing.assert_close(keys[r]["k"], keys[r]["k_ref"], rtol=1e-4, atol=1e-5)
        for row in keys[r]["seen"]:  # which global images this rank's key encoder saw
            match = [j for j in range(len(global_batch)) if torch.equal(row, global_batch[j])]
            assert len(match) == 1
            perm.append(match[0])
    assert sorted(perm) == list(range(8)), "each image encoded exactly once, on one rank"
    assert perm != list(range(8))
    assert set(perm[:4]) != {0, 1, 2, 3}, "rank 0 encoded only its own images: no shuffle across ranks"


@pytest.mark.slow
def test_queues_are_identical_across_ranks_and_hold_both_ranks_keys(ddp_run):
    r0, r1 = ddp_run["ranks"]
    assert r0["bn_splits"] == r1["bn_splits"] == 1  # real per-rank BN under DDP
    assert r0["K"] == N_IMAGES - BATCH * WORLD
    for name in ("queue", "queue_ids", "queue_ptr"):
        assert torch.equal(r0[name], r1[name]), name
    for name, t in r0["encoder_q"].items():
        if t.is_floating_point() and "running" not in name:
            assert torch.equal(t, r1["encoder_q"][name]), name  # DDP keeps the query encoders in step
    # the last step enqueued rank 0's batch then rank 1's, just before the pointer
    K, ptr = r0["K"], int(r0["queue_ptr"])
    steps_per_epoch = N_IMAGES // (BATCH * WORLD)
    last_epoch, in_epoch = divmod(r0["steps"] - 1, steps_per_epoch)
    expected = [i for r in range(WORLD) for _, i in epoch_batches(N_IMAGES, BATCH, last_epoch, 0, r, WORLD)[in_epoch]]
    slots = [(ptr - len(expected) + j) % K for j in range(len(expected))]
    assert r0["queue_ids"][slots].tolist() == expected
    torch.testing.assert_close(r0["queue"].norm(dim=1), torch.ones(K))


@pytest.mark.slow
def test_time_budget_stops_every_rank_at_the_same_step(ddp_run):
    r0, r1 = ddp_run["ranks"]
    assert r0["stopped"] == r1["stopped"] == "time budget"
    assert r0["steps"] == r1["steps"] >= 12
    state = load_checkpoint(ddp_run["base"] / "run" / "checkpoint.pt")  # written by rank 0
    assert state["step"] == r0["steps"] and state["elapsed_s"] >= BUDGET_MIN * 60


@pytest.mark.slow
def test_loss_falls_under_ddp(ddp_run):
    state = load_checkpoint(ddp_run["base"] / "run" / "checkpoint.pt")  # written by rank 0
    losses = [loss for _, loss in state["loss_history"]]
    assert len(losses) == ddp_run["ranks"][0]["steps"] >= 12
    warm = math.ceil((N_IMAGES - BATCH * WORLD) / (BATCH * WORLD))  # steps scored against the random queue
    first, last = np.mean(losses[warm : warm + 5]), np.mean(losses[-5:])
    assert last < 0.8 * first, f"first 5 {first:.3f}, last 5 {last:.3f}"
    assert (ddp_run["base"] / "run" / "encoder.json").is_file()
    assert ddp_run["ranks"][0]["loss"] == pytest.approx(losses[-1])
