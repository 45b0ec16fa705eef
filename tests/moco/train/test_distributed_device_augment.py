"""DDP on 2 CPU processes (gloo) with augment_on="device": each rank augments its own uint8 batches, and the
views of image i are the ones one process makes from image i's seed (the batch path's promise: views depend on
(seed, epoch, index), not on the rank or the batch); the ranks split every epoch between them, and end with the
same queue and the same query encoder."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
import torch.distributed as dist

import moco.train
from moco.augment.batch import BatchTwoCrops
from moco.augment.batch_params import batch_recipe
from moco.augment.views import ViewsOf
from moco.data import epoch_batches, sample_seed
from moco.model import MoCo
from tests.moco.tiny import make_images, tiny_config
from tests.moco.train.ranks import WORLD, join_env, run_ranks

N_IMAGES, BATCH, EPOCHS, SIZE = 32, 8, 2, 32  # 2 steps per epoch on each rank: 4 steps


def _worker(rank: int, port: int, images: str, out: str, results: str) -> None:
    """One rank: moco.train.fit on the device path, keeping every batch it augmented and the model it ends with."""
    join_env(rank, port)
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=WORLD)
    built: list[MoCo] = []
    seen: list[dict[str, torch.Tensor]] = []
    real_views = moco.train.device_views

    def keep_model(cfg):  # noqa: ANN001, ANN202
        built.append(MoCo(cfg))
        return built[-1]

    def recording_views(crops: BatchTwoCrops, device: torch.device) -> ViewsOf:
        views = real_views(crops, device)

        def record(batch):  # noqa: ANN001, ANN202
            squares, ids, seeds = batch
            im_q, im_k, out_ids, local = views(batch)
            seen.append({"squares": squares.clone(), "ids": ids.clone(), "seeds": seeds.clone(), "q": im_q, "k": im_k})
            return im_q, im_k, out_ids, local

        return record

    moco.train.MoCo = keep_model
    moco.train.device_views = recording_views
    cfg = tiny_config(
        images, out, model={"queue_size": 16}, batch_size=BATCH, epochs=EPOCHS, crop_size=SIZE, augment_on="device"
    )
    result = moco.train.fit(cfg)
    m = built[0]
    torch.save(
        {
            "seen": seen,
            "steps": result.steps,
            "queue": m.queue,
            "queue_ids": m.queue_ids,
            "encoder_q": m.encoder_q.state_dict(),
            "seed": cfg.seed,
        },
        Path(results) / f"rank{rank}.pt",
    )


@pytest.fixture(scope="module")
def ddp_device_run(tmp_path_factory):
    base = tmp_path_factory.mktemp("ddp-device")
    make_images(base / "photos", N_IMAGES, seed=9)
    (base / "results").mkdir()
    run_ranks(_worker, str(base / "photos"), str(base / "run"), str(base / "results"))
    yield [torch.load(base / "results" / f"rank{r}.pt") for r in range(WORLD)]
    shutil.rmtree(base, ignore_errors=True)


@pytest.mark.slow
def test_each_rank_augments_its_share_of_every_epoch(ddp_device_run):
    steps_per_epoch = N_IMAGES // (BATCH * WORLD)
    for rank, r in enumerate(ddp_device_run):
        assert r["steps"] == len(r["seen"]) == EPOCHS * steps_per_epoch
        expected = [b for e in range(EPOCHS) for b in epoch_batches(N_IMAGES, BATCH, e, r["seed"], rank, WORLD)]
        for step, (batch, want) in enumerate(zip(r["seen"], expected, strict=True)):
            epoch = step // steps_per_epoch
            assert batch["ids"].tolist() == [i for _, i in want]
            assert batch["seeds"].tolist() == [sample_seed(r["seed"], epoch, i) for _, i in want]
    for step in range(EPOCHS * steps_per_epoch):  # the two ranks never see the same image in one step
        a, b = (set(r["seen"][step]["ids"].tolist()) for r in ddp_device_run)
        assert not a & b


@pytest.mark.slow
def test_views_are_those_one_process_makes_for_the_same_images(ddp_device_run):
    """The global batch of each step, augmented in one call in this process with the run's recipe, gives every
    image the views its rank made: exactly, and the query and key views differ."""
    crops = BatchTwoCrops(batch_recipe("moco-v2", SIZE))
    for step in range(len(ddp_device_run[0]["seen"])):
        batches = [r["seen"][step] for r in ddp_device_run]
        squares = torch.cat([b["squares"] for b in batches])
        seeds = torch.cat([b["seeds"] for b in batches])
        q, k = crops(squares, seeds)
        torch.testing.assert_close(torch.cat([b["q"] for b in batches]), q, rtol=0, atol=0)
        torch.testing.assert_close(torch.cat([b["k"] for b in batches]), k, rtol=0, atol=0)
        assert not torch.equal(q, k)


@pytest.mark.slow
def test_ranks_end_with_the_same_queue_and_query_encoder(ddp_device_run):
    r0, r1 = ddp_device_run
    assert torch.equal(r0["queue"], r1["queue"]) and torch.equal(r0["queue_ids"], r1["queue_ids"])
    last = [set(r["seen"][-1]["ids"].tolist()) for r in ddp_device_run]
    assert last[0] | last[1] <= set(r0["queue_ids"].tolist())  # the last step enqueued both ranks' keys
    for name, t in r0["encoder_q"].items():
        if t.is_floating_point() and "running" not in name:
            assert torch.equal(t, r1["encoder_q"][name]), name
