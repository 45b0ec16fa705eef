"""Dictionary look-up tab on the tiny trained run: the loss shown is InfoNCE computed by hand from the
returned cosines at the chosen temperature; the views are reproducible; no checkpoint -> the tab says so."""

from __future__ import annotations

import math

import gradio as gr
import numpy as np
import pytest
import torch

from app import dictionary_tab
from app.ui import build_app
from plumbing.errors import InputError


def hand_info_nce(l_pos: float, l_neg: list[float], T: float) -> tuple[float, float]:
    """-log softmax of the positive, term by term in plain Python floats."""
    logits = [l_pos / T] + [x / T for x in l_neg]
    z = sum(math.exp(v) for v in logits)
    p = math.exp(logits[0]) / z
    return p, -math.log(p)


@pytest.mark.parametrize("T", [0.07, 0.2, 1.0])
def test_loss_is_info_nce_of_the_returned_logits(engine, tiny, T):
    out = dictionary_tab.look_up(engine, str(tiny.photos / "a/p05.png"), 0, T)
    numbers = out[-1]
    d = engine.dictionary
    assert len(numbers["l_neg"]) == d.K == 9  # tiny run: K = min(32, 16 pictures + 1 copy - batch 8)
    p, loss = hand_info_nce(numbers["l_pos"], numbers["l_neg"], T)
    assert numbers["loss"] == pytest.approx(loss, rel=1e-9)
    assert numbers["p_pos"] == pytest.approx(p, rel=1e-9)
    assert f"InfoNCE loss = {loss:.4f}" in out[3]
    # the cosines are q . k for unit vectors: within [-1, 1], and q . queue matches the checkpoint's queue
    assert all(-1.0001 <= c <= 1.0001 for c in [numbers["l_pos"], *numbers["l_neg"]])


def test_temperature_slider_recomputes_from_the_same_cosines(engine, tiny):
    numbers = dictionary_tab.look_up(engine, str(tiny.photos / "a/p05.png"), 0, 0.2)[-1]
    text, _, table, hotter, kept = dictionary_tab.retemper(engine, numbers, 0.5)
    assert kept == hotter  # the session's copy the next move of the slider starts from
    assert hotter["l_neg"] == numbers["l_neg"] and hotter["T"] == 0.5
    assert hotter["loss"] == pytest.approx(hand_info_nce(numbers["l_pos"], numbers["l_neg"], 0.5)[1], rel=1e-9)
    assert f"{hotter['loss']:.4f}" in text
    assert "T = 0.5)" in table and f"{numbers['l_pos'] / 0.5:.3f}" in table  # the ranked logits at the new T


@pytest.mark.parametrize("T", [0, -0.2, 1.5, float("nan"), None, "hot"])
def test_a_temperature_off_the_slider_is_refused(engine, tiny, T):
    numbers = dictionary_tab.look_up(engine, str(tiny.photos / "a/p05.png"), 0, 0.2)[-1]
    with pytest.raises(InputError, match="temperature"):
        dictionary_tab.retemper(engine, numbers, T)
    with pytest.raises(InputError, match="temperature"):
        dictionary_tab.look_up(engine, str(tiny.photos / "a/p05.png"), 0, T)


def test_views_are_reproducible_and_fresh_pairs_differ(engine, tiny):
    path = str(tiny.photos / "b/p10.png")
    a = dictionary_tab.look_up(engine, path, 3, 0.2)
    b = dictionary_tab.look_up(engine, path, 3, 0.2)
    c = dictionary_tab.look_up(engine, path, dictionary_tab.fresh_seed(3), 0.2)
    np.testing.assert_array_equal(a[0], b[0])
    assert a[-1]["l_pos"] == b[-1]["l_pos"]
    assert not np.array_equal(a[0], c[0]) or not np.array_equal(a[1], c[1])


def test_keys_are_shown_as_their_source_images(engine, tiny):
    d = engine.dictionary
    state = torch.load(tiny.run / "checkpoint.pt", weights_only=True)
    assert state["image_files"][0] == "a/p00.png" and len(state["image_files"]) == 17  # recorded by moco.train
    assert (d.key_ids >= 0).all()  # 2 steps of 8 keys filled the K = 9 slots
    out = dictionary_tab.look_up(engine, str(tiny.photos / "a/p05.png"), 0, 0.2)
    queue = out[7]
    for (picture, caption), s in zip(queue, d.fifo_order(), strict=True):  # oldest to newest, by source file
        assert f"slot {s} " in caption and caption.endswith(d.image_files[d.key_ids[s]])
        assert isinstance(picture, str) and picture.endswith(".webp")  # an encoded file, not a grey tile
    assert "oldest" in queue[0][1] and "newest" in queue[-1][1] and "2nd oldest" in queue[1][1]
    assert f"slot {d.ptr} " in queue[0][1]  # the write pointer is at the oldest key


def test_the_look_up_ranks_all_1_plus_k_keys_with_k_plus_among_them(engine, tiny):
    d = engine.dictionary
    out = dictionary_tab.look_up(engine, str(tiny.photos / "b/p13.png"), 1, 0.2)
    numbers, tiles, table = out[-1], out[5], out[6]
    l_pos, l_neg = numbers["l_pos"], np.asarray(numbers["l_neg"])
    rank = 1 + int((l_neg > l_pos).sum())  # the oracle: k+ ranks below every key with a higher cosine
    assert len(tiles) == d.K + 1  # K = 9 < RANKED_SHOWN: every key listed
    ranks = [int(caption.split()[0][1:]) for _, caption in tiles]
    assert ranks == list(range(1, d.K + 2))
    assert "k+ the positive key" in tiles[rank - 1][1] and tiles[rank - 1][0] is out[1]  # shown as its view
    cosines = [float(caption.split("cosine ")[1].split()[0]) for _, caption in tiles]
    assert cosines == sorted(cosines, reverse=True)
    suffix = {1: "st", 2: "nd", 3: "rd"}.get(rank, "th")
    assert f"ranks **{rank}{suffix}**" in table and table.count("\n| ") == 1 + d.K + 1  # the header and every key


def test_the_querys_own_stale_key_is_marked_and_explained(engine, tiny):
    d = engine.dictionary
    slot = int(d.fifo_order()[-1])
    own = d.image_files[d.key_ids[slot]]  # a training picture whose key is in the queue
    out = dictionary_tab.look_up(engine, str(tiny.photos / own), 0, 0.2)
    stale = [s for s in range(d.K) if d.image_files[d.key_ids[s]] == own]
    marked = [caption for _, caption in out[5] if "STALE" in caption]
    assert len(marked) == len(stale) >= 1 and all(f"slot {s} " in " ".join(marked) for s in stale)
    assert "stale key of this same picture" in out[6] and "why its queue is kept much smaller" in out[6]
    absent = next(n for i, n in enumerate(d.image_files) if i not in set(d.key_ids.tolist()) and "/" in n)
    other = dictionary_tab.look_up(engine, str(tiny.photos / absent), 0, 0.2)  # no key of it in the queue
    assert not any("STALE" in caption for _, caption in other[5]) and "stale key" not in other[6]


def test_keys_are_found_when_the_app_starts_from_another_folder(tiny, tmp_path, monkeypatch):
    from app.config import AppConfig
    from app.engine import Engine

    monkeypatch.chdir(tmp_path)  # nowhere near the photos, the run or the index
    elsewhere = Engine.load(AppConfig(index=tiny.index, device="cpu"))
    d = elsewhere.dictionary
    assert d.image_root == tiny.photos.resolve() and d.images_missing is None
    out = dictionary_tab.look_up(elsewhere, str(tiny.photos / "a/p01.png"), 0, 0.2)
    assert all(isinstance(p, str) for p, caption in out[5] if "k+" not in caption)  # pictures, no grey tiles


def test_views_are_labelled_at_the_training_resolution(engine):
    blocks = build_app(engine)
    labels = [b.label for b in blocks.blocks.values() if isinstance(b, gr.Image)]
    assert "query view x_q (32 × 32 px, the training resolution, shown enlarged)" in labels


def test_untrained_encoder_says_there_is_no_dictionary(untrained_engine, tiny):
    assert untrained_engine.dictionary is None
    with pytest.raises(InputError, match="no training checkpoint"):
        dictionary_tab.look_up(untrained_engine, str(tiny.photos / "a/p05.png"), 0, 0.2)
    blocks = build_app(untrained_engine)
    texts = [b.value or "" for b in blocks.blocks.values() if isinstance(b, gr.Markdown)]
    assert any("No dictionary to show" in t for t in texts)
