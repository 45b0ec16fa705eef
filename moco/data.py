"""Unlabelled image-folder data for training: a persistent decode cache and the pair dataset.

Decoding a 12-MP JPEG costs tens of milliseconds; a training step at 64 px costs about as much per
image. So every image is decoded once (JPEG draft mode, near the training size), squashed to a square of
`side` px and kept in one uint8 array on disk (`cache-<side>.npy`, memory-mapped). Later epochs and
later runs on the same folder never decode the originals again. Files that cannot be decoded are listed
with their reason and skipped.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import os
import random
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from plumbing.atomic import atomic_write_bytes
from plumbing.filenames import printable
from plumbing.images import BadImageError, load_image

logger = logging.getLogger(__name__)

CACHE_SCALE = 1.25  # cached side = training crop size * CACHE_SCALE, so crops keep some resolution
CACHE_VERSION = 1


@dataclass(frozen=True)
class BadFile:
    path: str
    reason: str


def _stat_key(path: Path) -> list[int]:
    st = path.stat()
    return [st.st_size, st.st_mtime_ns]


def _decode_square(path: Path, side: int) -> np.ndarray:
    img = load_image(path, min_side=side)
    return np.asarray(img.resize((side, side), Image.BICUBIC), dtype=np.uint8)  # (side, side, 3)


class DecodeCache:
    """Decoded, downsized images of a folder: `array[i]` is (side, side, 3) uint8 for `paths[i]`."""

    def __init__(self, array: np.ndarray, paths: list[Path], bad: list[BadFile]) -> None:
        self.array = array
        self.paths = paths
        self.bad = bad

    def __len__(self) -> int:
        return len(self.paths)

    @staticmethod
    def build(
        paths: Sequence[Path],
        side: int,
        cache_dir: Path,
        threads: int = 0,
        progress: Callable[[int], None] | None = None,
    ) -> DecodeCache:
        """Decode what is not cached yet (new or changed files), reuse the rest, write atomically."""
        cache_dir.mkdir(parents=True, exist_ok=True)
        index_file, array_file = cache_dir / f"cache-{side}.json", cache_dir / f"cache-{side}.npy"
        old_rows, old_array = _read_cache(index_file, array_file)
        keys = {str(p): _stat_key(p) for p in paths}
        rows: list[np.ndarray | BadFile] = [None] * len(paths)  # type: ignore[list-item]
        todo: list[int] = []
        for i, p in enumerate(paths):
            old = old_rows.get(str(p))
            if old is not None and old["key"] == keys[str(p)]:
                rows[i] = BadFile(str(p), old["bad"]) if old["row"] < 0 else old_array[old["row"]]
            else:
                todo.append(i)
        if todo:
            logger.info("decoding %d of %d images into the cache at %d px", len(todo), len(paths), side)
        with ThreadPoolExecutor(max_workers=threads or min(8, (os.cpu_count() or 1) * 2)) as pool:
            for i, result in zip(todo, pool.map(lambda i: _try_decode(paths[i], side), todo), strict=True):
                rows[i] = result
                if progress is not None:
                    progress(1)
        good = [i for i, r in enumerate(rows) if not isinstance(r, BadFile)]
        bad = [r for r in rows if isinstance(r, BadFile)]
        if todo or len(old_rows) != len(paths):
            _write_cache(index_file, array_file, paths, keys, rows, good, side)
        array = np.load(array_file, mmap_mode="r") if good else np.zeros((0, side, side, 3), np.uint8)
        return DecodeCache(array, [paths[i] for i in good], bad)


def _try_decode(path: Path, side: int) -> np.ndarray | BadFile:
    try:
        return _decode_square(path, side)
    except BadImageError as e:
        return BadFile(str(path), e.reason)


def _read_cache(index_file: Path, array_file: Path) -> tuple[dict[str, dict], np.ndarray]:
    try:
        meta = json.loads(index_file.read_text())
        if meta.get("version") != CACHE_VERSION or meta.get("array") != _stat_key(array_file):
            return {}, np.zeros(0)  # another version, or the array is not the one this index was written with
        return meta["files"], np.load(array_file, mmap_mode="r")
    except (OSError, ValueError, KeyError):
        return {}, np.zeros(0)


def _write_cache(
    index_file: Path,
    array_file: Path,
    paths: Sequence[Path],
    keys: dict[str, list[int]],
    rows: list,
    good: list[int],
    side: int,
) -> None:
    tmp_array = array_file.with_suffix(".npy.tmp")
    out = np.lib.format.open_memmap(tmp_array, mode="w+", dtype=np.uint8, shape=(len(good), side, side, 3))
    for j, i in enumerate(good):
        out[j] = rows[i]
    out.flush()
    del out
    row_of = {i: j for j, i in enumerate(good)}
    files = {
        str(p): {"key": keys[str(p)], "row": row_of.get(i, -1), "bad": rows[i].reason if i not in row_of else ""}
        for i, p in enumerate(paths)
    }
    array_key = _stat_key(tmp_array)  # size and mtime survive the rename: they tie the index to this array
    index = json.dumps({"version": CACHE_VERSION, "side": side, "array": array_key, "files": files})
    os.replace(tmp_array, array_file)  # array first (a memmap needs a path): an index never points at missing rows
    atomic_write_bytes(index_file, lambda f: f.write(index.encode()))


def write_bad_files(path: Path, bad: Sequence[BadFile]) -> None:
    """`bad_files.csv`: one line per skipped file with the reason."""
    text = io.StringIO(newline="")
    w = csv.writer(text)
    w.writerow(["path", "reason"])
    for b in bad:
        w.writerow([printable(b.path), printable(b.reason)])  # a non-UTF-8 name as \xNN
    atomic_write_bytes(path, lambda f: f.write(text.getvalue().encode("utf-8")))


def sample_seed(seed: int, epoch: int, index: int) -> int:
    """The augmentation seed of one sample in one epoch: independent of workers, batch and resume."""
    return (seed * 1_000_003 + epoch * 7_919 + index * 104_729) % (2**31 - 1)


class CachedRows(Dataset):
    """Rows of the decode cache by index; pickles a memory-mapped cache by file name (for the workers)."""

    def __init__(self, array: np.ndarray, seed: int) -> None:
        self.array = array
        self.seed = seed

    def __len__(self) -> int:
        return len(self.array)

    def __getstate__(self) -> dict:
        """Workers reopen a memory-mapped cache by file name: pickling an np.memmap would copy every row
        into each worker (on spawn platforms, macOS and Windows, for every worker start)."""
        state = dict(self.__dict__)
        a = self.array
        if isinstance(a, np.memmap) and a.filename is not None:
            state["array"] = ("memmap", a.filename, a.offset, a.shape, a.dtype.str)
        return state

    def __setstate__(self, state: dict) -> None:
        a = state["array"]
        if isinstance(a, tuple) and a and a[0] == "memmap":
            _, filename, offset, shape, dtype = a
            state["array"] = np.memmap(filename, mode="r", dtype=np.dtype(dtype), shape=shape, offset=offset)
        self.__dict__.update(state)


class PairDataset(CachedRows):
    """Two augmented views of cached image i, plus i, plus its local views (L, 3, h, w) with multi-crop.
    Augmentation randomness depends only on (seed, epoch, i), so a resumed run sees exactly the views an
    uninterrupted one would."""

    def __init__(
        self, array: np.ndarray, two_crops: Callable[[Image.Image], tuple[torch.Tensor, ...]], seed: int
    ) -> None:
        super().__init__(array, seed)
        self.two_crops = two_crops

    def __getitem__(self, key: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor, int] | tuple:
        epoch, i = key
        s = sample_seed(self.seed, epoch, i)
        random.seed(s)
        torch.default_generator.manual_seed(s)  # CPU stream only: torch.manual_seed also seeds CUDA, slowly
        img = Image.fromarray(np.asarray(self.array[i]))
        q, k, *local = self.two_crops(img)  # local: [(L, 3, h, w)] with multi-crop
        return (q, k, i, *local)


class SquareDataset(CachedRows):
    """Cached image i as it is, (side, side, 3) uint8, plus i and its augmentation seed
    `sample_seed(seed, epoch, i)`: the views are made on the training device (moco.augment.batch), so a
    worker only copies a row."""

    def __getitem__(self, key: tuple[int, int]) -> tuple[torch.Tensor, int, int]:
        epoch, i = key
        return torch.from_numpy(np.array(self.array[i])), i, sample_seed(self.seed, epoch, i)


def epoch_batches(
    n: int, batch_size: int, epoch: int, seed: int, rank: int = 0, world: int = 1
) -> list[list[tuple[int, int]]]:
    """This rank's batches of one epoch: a seeded permutation, split across ranks, last partial batch
    dropped (every rank runs the same number of equal-sized steps)."""
    g = torch.Generator().manual_seed(seed * 9_973 + epoch)
    perm = torch.randperm(n, generator=g).tolist()
    per_rank = n // world
    mine = perm[rank * per_rank : (rank + 1) * per_rank]
    steps = per_rank // batch_size
    return [[(epoch, i) for i in mine[s * batch_size : (s + 1) * batch_size]] for s in range(steps)]


class RunBatches(torch.utils.data.Sampler):
    """This rank's batches from `start_step` to `total_steps`, epoch after epoch, made lazily: one
    DataLoader (and one set of workers) serves the whole run instead of one per epoch."""

    def __init__(
        self, n: int, batch_size: int, seed: int, start_step: int, total_steps: int, rank: int = 0, world: int = 1
    ) -> None:
        self.n, self.batch_size, self.seed, self.rank, self.world = n, batch_size, seed, rank, world
        self.start_step, self.total_steps = start_step, total_steps
        self.steps_per_epoch = (n // world) // batch_size

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        step = self.start_step
        while step < self.total_steps:
            epoch, in_epoch = divmod(step, self.steps_per_epoch)
            for batch in epoch_batches(self.n, self.batch_size, epoch, self.seed, self.rank, self.world)[in_epoch:]:
                if step >= self.total_steps:
                    return
                yield batch
                step += 1

    def __len__(self) -> int:
        return max(0, self.total_steps - self.start_step)


class BatchList(torch.utils.data.Sampler):
    """Feeds a precomputed list of batches (of dataset keys) to a DataLoader."""

    def __init__(self, batches: list[list[tuple[int, int]]]) -> None:
        self.batches = batches

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        return iter(self.batches)

    def __len__(self) -> int:
        return len(self.batches)
