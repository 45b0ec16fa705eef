"""moco.data: the decode cache survives a crash in the middle of its update, and epoch batches split the
data across ranks without overlap."""

from __future__ import annotations

import os

import numpy as np
import pytest

import moco.data
from moco.data import DecodeCache, _decode_square, epoch_batches
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

