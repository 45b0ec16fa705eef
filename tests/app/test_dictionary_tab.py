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
    text, _, hotter, kept = dictionary_tab.retemper(numbers, 0.5)
    assert kept == hotter  # the session's copy the next move of the slider starts from
    assert hotter["l_neg"] == numbers["l_neg"] and hotter["T"] == 0.5
    assert hotter["loss"] == pytest.approx(hand_info_nce(numbers["l_pos"], numbers["l_neg"], 0.5)[1], rel=1e-9)
    assert f"{hotter['loss']:.4f}" in text


@pytest.mark.parametrize("T", [0, -0.2, 1.5, float("nan"), None, "hot"])
def test_a_temperature_off_the_slider_is_refused(engine, tiny, T):
    numbers = dictionary_tab.look_up(engine, str(tiny.photos / "a/p05.png"), 0, 0.2)[-1]
    with pytest.raises(InputError, match="temperature"):
        dictionary_tab.retemper(numbers, T)
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
    negatives, queue = out[5], out[6]
    l_neg = np.asarray(out[-1]["l_neg"])
    top = np.argsort(-l_neg)[: len(negatives)]
    for (_, caption), s in zip(negatives, top, strict=True):  # hardest first, each named by its source file
        assert f"slot {s} " in caption and caption.endswith(d.image_files[d.key_ids[s]])
    assert "oldest" in queue[0][1] and "newest" in queue[-1][1]
    assert f"slot {d.ptr} " in queue[0][1]  # the write pointer is at the oldest key


def test_untrained_encoder_says_there_is_no_dictionary(untrained_engine, tiny):
    assert untrained_engine.dictionary is None
    with pytest.raises(InputError, match="no training checkpoint"):
        dictionary_tab.look_up(untrained_engine, str(tiny.photos / "a/p05.png"), 0, 0.2)
    blocks = build_app(untrained_engine)
    texts = [b.value or "" for b in blocks.blocks.values() if isinstance(b, gr.Markdown)]
    assert any("No dictionary to show" in t for t in texts)
