"""moco.data: the decode cache survives a crash in the middle of its update, and epoch batches split the
data across ranks without overlap."""

from __future__ import annotations

import os
import pickle

import numpy as np
import pytest
import torch

import moco.data
from moco.augment.presets import TwoCropsTransform, make_preset
from moco.data import DecodeCache, PairDataset, RunBatches, _decode_square, epoch_batches
from tests.moco.tiny import make_images


def assert_rows_match_files(cache: DecodeCache, side: int) -> None:
    for i, p in enumerate(cache.paths):
        np.testing.assert_array_equal(cache.array[i], _decode_square(p, side), err_msg=str(p))


def test_a_crash_between_the_cache_files_never_serves_wrong_pixels(tmp_path, monkeypatch):
    side, cache_dir = 24, tmp_path / "cache"
    later = make_images(tmp_path / "photos", 3, seed=1, start=5)  # img005..img007
    DecodeCache.build(later, side, cache_dir)
    earlier = make_images(tmp_path / "photos", 2, seed=2, start=0)  # img000, img001 sort first: rows shift
    paths = sorted(earlier + later)

    real_replace = os.replace
    calls: list[str] = []

    def crash_on_second(src: str, dst: str) -> None:
        calls.append(str(dst))
        if len(calls) == 2:
            raise KeyboardInterrupt("killed between the array and the index")  # as a SIGKILL would stop it
        real_replace(src, dst)

    monkeypatch.setattr(moco.data.os, "replace", crash_on_second)
    with pytest.raises(KeyboardInterrupt):
        DecodeCache.build(paths, side, cache_dir)
    monkeypatch.setattr(moco.data.os, "replace", real_replace)

    cache = DecodeCache.build(paths, side, cache_dir)  # the next run
    assert cache.paths == paths
    assert_rows_match_files(cache, side)


def test_unchanged_cache_is_read_back_exactly(tmp_path):
    side = 24
    paths = make_images(tmp_path / "photos", 4, seed=3)
    first = DecodeCache.build(paths, side, tmp_path / "cache")
    second = DecodeCache.build(paths, side, tmp_path / "cache")
    np.testing.assert_array_equal(np.asarray(first.array), np.asarray(second.array))
    assert_rows_match_files(second, side)


@pytest.mark.parametrize("world", [1, 2, 3])
def test_epoch_batches_split_one_permutation_across_ranks(world):
    n, batch = 50, 4
    per_rank = [epoch_batches(n, batch, epoch=2, seed=5, rank=r, world=world) for r in range(world)]
    steps = {len(b) for b in per_rank}
    assert steps == {n // world // batch}, "every rank must run the same number of steps"
    ids = [i for b in per_rank for step in b for _, i in step]
    assert len(ids) == len(set(ids)), "an image in two ranks' batches"
    assert all(e == 2 for b in per_rank for step in b for e, _ in step)
    assert all(len(step) == batch for b in per_rank for step in b)
    assert per_rank[0] == epoch_batches(n, batch, epoch=2, seed=5, rank=0, world=world)  # seeded
    assert per_rank[0] != epoch_batches(n, batch, epoch=3, seed=5, rank=0, world=world)  # reshuffled per epoch


@pytest.mark.parametrize("start", [0, 3, 7])
def test_run_batches_resume_where_the_epoch_batches_left_off(start):
    n, batch, seed, total = 23, 4, 3, 17  # 5 steps per epoch: the run spans 4 epochs
    every = [b for epoch in range(4) for b in epoch_batches(n, batch, epoch, seed)][:total]
    sampler = RunBatches(n, batch, seed, start_step=start, total_steps=total)
    assert list(sampler) == every[start:]
    assert len(sampler) == total - start


def test_pair_dataset_pickles_a_memmap_by_name_not_by_rows(tmp_path):
    paths = make_images(tmp_path / "photos", 6, seed=4)
    cache = DecodeCache.build(paths, 32, tmp_path / "cache")
    assert isinstance(cache.array, np.memmap)
    ds = PairDataset(cache.array, TwoCropsTransform(make_preset("moco-v2", 24)), seed=0)
    blob = pickle.dumps(ds)
    assert len(blob) < cache.array.nbytes / 2  # a worker gets the file name, not a copy of every row
    again = pickle.loads(blob)
    np.testing.assert_array_equal(np.asarray(again.array), np.asarray(cache.array))
    q1, k1, i1 = ds[(2, 5)]
    q2, k2, i2 = again[(2, 5)]
    assert i1 == i2 == 5 and torch.equal(q1, q2) and torch.equal(k1, k2)
