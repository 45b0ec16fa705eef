"""Two real training runs shared by test_train.py and test_export.py (each costs seconds on a CPU)."""

from __future__ import annotations

import io
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import moco.data
import moco.train
from moco.config import TrainConfig
from moco.train import TrainResult, fit
from tests.moco.tiny import light_views, make_colour_classes, make_images, tiny_config

BAD_FILES = {  # name -> what its reason in bad_files.csv says (one of)
    "corrupt.jpg": ("corrupt", "not an image"),
    "truncated.jpg": ("truncated",),
    "notes.png": ("not an image",),
}
N_LIGHT, BATCH_LIGHT = 16, 8  # images and batch of the light run (30 steps)


@pytest.fixture(scope="session", autouse=True)
def one_thread():
    """One intra-op thread: on a 2-core machine shared with other work, OpenMP spin-waits make 2 threads
    many times slower, and the multi-process tests run one process per core anyway."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@dataclass
class Run:
    cfg: TrainConfig
    result: TrainResult
    images: list[Path]  # the good ones
    decodes: int  # calls of the decode function during the run


def write_bad_files(root: Path) -> None:
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(9).integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(buf, "JPEG")
    (root / "truncated.jpg").write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    (root / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0" + bytes(range(256)) * 2)
    (root / "notes.png").write_text("not an image at all\n")


def counting_decoder(counter: list[int]):
    real = moco.data._decode_square

    def decode(path: Path, side: int) -> np.ndarray:
        counter.append(1)
        return real(path, side)

    return decode


@pytest.fixture(scope="session")
def light_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Run]:
    """30 steps on 16 distinct images + 3 bad files, easy views, --val on a red/blue folder."""
    base = tmp_path_factory.mktemp("light")
    images = make_images(base / "photos", N_LIGHT, seed=0)
    write_bad_files(base / "photos")
    make_colour_classes(base / "val", per_class=10)
    cfg = tiny_config(
        base / "photos",
        base / "run",
        model={"queue_size": 32, "bn_splits": 1},
        batch_size=BATCH_LIGHT,
        epochs=30 * BATCH_LIGHT // N_LIGHT,
        lr=0.32,
        log_every=1,
        val=str(base / "val"),
    )
    counter: list[int] = []
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(moco.train, "make_preset", lambda name, size, *_, **__: light_views(size))
        mp.setattr(moco.data, "_decode_square", counting_decoder(counter))
        result = fit(cfg)
    yield Run(cfg, result, images, len(counter))
    shutil.rmtree(base, ignore_errors=True)  # checkpoints are 140 MB each


class StepClock:
    """Stands in for time.monotonic in moco.train: every reading advances `tick` seconds, so a time budget
    ends after the same number of steps on a fast or a busy machine."""

    def __init__(self, tick: float) -> None:
        self.now = 1000.0
        self.tick = tick

    def monotonic(self) -> float:
        self.now += self.tick
        return self.now


@pytest.fixture(scope="session")
def budget_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Run]:
    """The real moco-v2 preset with 2 ghost-BN groups, ended by a 3-second time budget (on a step clock)."""
    base = tmp_path_factory.mktemp("budget")
    images = make_images(base / "photos", 16, seed=1)
    cfg = tiny_config(
        base / "photos",
        base / "run",
        model={"bn_splits": 2},
        batch_size=8,
        epochs=1000,
        time_budget_min=0.05,
        log_every=1,
    )
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(moco.train, "time", StepClock(0.1))
        result = fit(cfg)
    yield Run(cfg, result, images, 0)
    shutil.rmtree(base, ignore_errors=True)
