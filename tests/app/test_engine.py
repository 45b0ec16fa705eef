"""The engine's boundary with the disk: a thumbnail is made only of a catalog id, and only of a file whose real
path is inside the indexed folder or that is still the very file indexed (a photo linked in from elsewhere);
a checkpoint the app cannot use turns the dictionary view off instead of stopping the app."""

from __future__ import annotations

import argparse
import shutil
from dataclasses import dataclass
from pathlib import Path

import gradio as gr
import numpy as np
import pytest
import torch
from PIL import Image

from app import dictionary_tab, index_tab, search_tab
from app.config import AppConfig
from app.engine import GONE, NOT_SHOWN, Engine, placeholder
from app.ui import build_app
from plumbing.errors import InputError
from tests.app.conftest import _index
from tests.retrieval.conftest import scene

SECRET = (255, 0, 255)


@dataclass
class Linked:
    engine: Engine
    photos: Path
    elsewhere: Path  # a photo outside the folder, linked in before indexing


@pytest.fixture(scope="module")
def linked(tiny, tmp_path_factory) -> Linked:
    """Three pictures and one linked in from outside, indexed with a run whose checkpoint.pt is unsafe (it holds
    a Python object); then, after indexing, one indexed picture swapped for a symlink to an outside file."""
    base = tmp_path_factory.mktemp("linked")
    photos, outside, run = base / "photos", base / "outside", base / "run"
    (photos / "a").mkdir(parents=True)
    outside.mkdir()
    run.mkdir()
    for name in ("a/p00.png", "a/p01.png", "a/p02.png"):
        shutil.copyfile(tiny.photos / name, photos / name)
    scene(7, (64, 48)).save(outside / "elsewhere.png")
    (photos / "linked.png").symlink_to(outside / "elsewhere.png")
    for name in ("encoder.safetensors", "encoder.json", "metrics.jsonl"):
        shutil.copyfile(tiny.run / name, run / name)
    torch.save({"version": 1, "config": argparse.Namespace(lr=0.03)}, run / "checkpoint.pt")
    index = _index(photos, run, base / "idx")
    Image.new("RGB", (64, 48), SECRET).save(outside / "secret.png")
    (photos / "a/p01.png").unlink()
    (photos / "a/p01.png").symlink_to(outside / "secret.png")
    return Linked(Engine.load(AppConfig(index=index, device="cpu")), photos, outside / "elsewhere.png")


def _id(engine: Engine, rel: str) -> int:
    i = engine.index.id_for_path(rel)
    assert i is not None, rel
    return i


def same(a: Image.Image, b: Image.Image) -> bool:
    return a.size == b.size and np.array_equal(np.asarray(a.convert("RGB")), np.asarray(b.convert("RGB")))


def test_a_symlink_swapped_in_after_indexing_is_not_shown(linked):
    e = linked.engine
    tile = e.indexed_thumbnail(_id(e, "a/p01.png"))
    assert same(tile, placeholder(e.cfg.thumb_size, NOT_SHOWN))
    px = np.asarray(tile.convert("RGB")).reshape(-1, 3).astype(int)
    assert not (np.abs(px - SECRET).sum(axis=1) < 60).any()  # not one pixel of the outside picture


def test_files_inside_and_a_photo_linked_in_before_indexing_are_shown(linked):
    e = linked.engine
    for rel, source in (("a/p00.png", linked.photos / "a/p00.png"), ("linked.png", linked.elsewhere)):
        want = Image.open(source).convert("RGB")
        want.thumbnail((e.cfg.thumb_size, e.cfg.thumb_size), Image.Resampling.LANCZOS)
        assert same(e.indexed_thumbnail(_id(e, rel)), want), rel


@pytest.mark.parametrize("file_id", [-1, 4, 10**9, "0", "a/p00.png", 0.0, True, None, [0]])
def test_anything_but_a_catalog_id_is_refused(linked, file_id):
    with pytest.raises(InputError) as err:
        linked.engine.indexed_thumbnail(file_id)  # type: ignore[arg-type]
    assert str(err.value) == GONE
    with pytest.raises(InputError, match=GONE):
        linked.engine.search_file(file_id, 3)  # type: ignore[arg-type]


def test_an_unsafe_checkpoint_turns_the_dictionary_off_and_the_app_starts(linked):
    e = linked.engine
    assert e.dictionary is None and "refused as unsafe" in e.dictionary_off and "checkpoint.pt" in e.dictionary_off
    assert "--no-resume" not in e.dictionary_off  # train's advice on resuming is not the app's
    assert search_tab.search(e, str(linked.photos / "a/p00.png"), 2)[0][0]["file"] == "a/p00.png"  # search works
    texts = [b.value or "" for b in build_app(e).blocks.values() if isinstance(b, gr.Markdown)]
    off = [t for t in texts if "Dictionary look-up is off" in t]
    assert len(off) == 1 and "refused as unsafe" in off[0] and "need no checkpoint" in off[0]
    assert "its checkpoint is not used: " in index_tab.summary(e)
    with pytest.raises(InputError, match="Dictionary look-up is off"):
        dictionary_tab.look_up(e, str(linked.photos / "a/p00.png"), 0, 0.2)
