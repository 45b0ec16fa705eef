"""A tiny trained run and its index, shared by the app's tests: 16 distinct pictures plus one exact copy and
one undecodable file, a resnet18 at 32 px trained for 2 steps (K = 8), indexed; and an index on an
untrained encoder (no checkpoint). Built once per session: a few seconds on 2 cores."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from app.config import AppConfig
from app.engine import Engine
from moco.export import save_random_encoder
from moco.train import fit
from retrieval.indexing.run import IndexConfig, index_folder
from tests.moco.tiny import tiny_config
from tests.retrieval.conftest import scene

N_PICTURES = 16
COPY = "b/copy-of-p03.png"  # an exact copy of a/p03.png


@dataclass
class Tiny:
    photos: Path
    run: Path
    index: Path
    untrained_index: Path
    base: Path


def _index(photos: Path, model: Path, out: Path) -> Path:
    index_folder(IndexConfig(photos, model, out, batch_size=8, workers=0, device="cpu"))
    return out


@pytest.fixture(scope="session")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Tiny]:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    base = tmp_path_factory.mktemp("app")
    photos = base / "photos"
    for i in range(N_PICTURES):
        (photos / ("a" if i < 8 else "b")).mkdir(parents=True, exist_ok=True)
        scene(100 + i, (64, 48)).save(photos / ("a" if i < 8 else "b") / f"p{i:02d}.png")
    shutil.copyfile(photos / "a/p03.png", photos / COPY)
    (photos / "notes.jpg").write_text("not a picture\n")
    run = base / "runs/tiny"
    cfg = tiny_config(photos, run, model={"queue_size": 32, "bn_splits": 1}, batch_size=8, epochs=1, log_every=2)
    fit(cfg)
    untrained = base / "runs/untrained"
    save_random_encoder(untrained, arch="resnet18", embed_size=32, dim=16, seed=0)
    yield Tiny(photos, run, _index(photos, run, base / "idx"), _index(photos, untrained, base / "idx-untrained"), base)
    torch.set_num_threads(before)
    shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="session")
def engine(tiny: Tiny) -> Engine:
    return Engine.load(AppConfig(index=tiny.index, device="cpu"))


@pytest.fixture(scope="session")
def untrained_engine(tiny: Tiny) -> Engine:
    return Engine.load(AppConfig(index=tiny.untrained_index, device="cpu"))
