"""The Dictionary look-up tab: contrastive learning as the MoCo paper frames it, on the checkpoint behind the
index. An image gives two augmented views; the query q = f_q(x_q) must pick its positive key k+ = f_k(x_k+)
out of the 1 + K keys (k+ and the queue's K negatives); InfoNCE is the loss of that (1+K)-way choice."""

from __future__ import annotations

from typing import Any

import gradio as gr
import numpy as np
from matplotlib.figure import Figure
from PIL import Image

from app.binding import bind, guard
from app.components import query_image
from app.engine import Engine, placeholder
from moco.augment.presets import IMAGENET_MEAN, IMAGENET_STD
from moco.dictionary import Dictionary, info_nce
from plumbing.errors import InputError

TOP_NEGATIVES = 8
QUEUE_SHOWN = 48  # keys of the queue drawn, evenly spaced from the oldest to the newest
VIEW_SIDE = 192
T_RANGE = (0.01, 1.0)  # the temperature slider

INTRO = """\
**Dictionary look-up.** MoCo learns by a game of look-up. Take one image and make two random edits of it
(crop, colour jitter, blur...): the *query* view x_q and the *key* view x_k+. The query encoder f_q turns x_q
into a vector q, the key encoder f_k turns x_k+ into the *positive key* k+. The *dictionary* also holds K
*negative keys*: vectors of other images, kept in a queue from earlier training steps. The query must find
its own key among the 1 + K: each key gets a *logit* = cosine(q, key) / T, a softmax over the logits gives
the probability of each key, and the **InfoNCE loss** is -log(probability of the positive). Training lowers
it, which pulls views of one image together and pushes other images apart.
"""


def _view(x: Any) -> np.ndarray:
    """A normalised (3, S, S) view as the (VIEW_SIDE, VIEW_SIDE, 3) picture the encoder saw."""
    a = x.numpy().transpose(1, 2, 0) * np.array(IMAGENET_STD) + np.array(IMAGENET_MEAN)  # (S, S, 3)
    im = Image.fromarray(np.clip(np.rint(a * 255), 0, 255).astype(np.uint8))
    return np.asarray(im.resize((VIEW_SIDE, VIEW_SIDE), Image.Resampling.NEAREST))


def _vector(v: np.ndarray) -> str:
    head = ", ".join(f"{x:+.3f}" for x in v[:6])
    return f"[{head}, ...] ({v.shape[0]} numbers, length {np.linalg.norm(v):.3f})"


def summary(numbers: dict[str, Any]) -> str:
    T, l_pos = numbers["T"], numbers["l_pos"]
    l_neg = np.asarray(numbers["l_neg"])
    beaten = int((l_neg > l_pos).sum())
    return (
        f"At temperature **T = {T:.3g}**: positive logit l+ = q·k+ / T = **{l_pos / T:.3f}** (cosine {l_pos:.3f});"
        f" negative logits from {l_neg.min() / T:.3f} to {l_neg.max() / T:.3f} (mean {l_neg.mean() / T:.3f});"
        f" {beaten} of the K = {l_neg.size} negatives score above the positive.\n\n"
        f"Softmax probability of the positive among the 1 + K = {l_neg.size + 1} keys: **{numbers['p_pos']:.4f}**"
        f" (chance: {1 / (l_neg.size + 1):.4f}).  **InfoNCE loss = {numbers['loss']:.4f}**"
        f" (= -log {numbers['p_pos']:.4f}; chance level log(1+K) = {np.log(l_neg.size + 1):.3f})."
    )


def histogram(numbers: dict[str, Any]) -> Figure:
    T = numbers["T"]
    l_neg = np.asarray(numbers["l_neg"]) / T
    fig = Figure(figsize=(6.4, 2.8), dpi=100)
    ax = fig.add_subplot()
    ax.hist(l_neg, bins=min(40, max(5, l_neg.size // 4)), color="#8a9bb5", label=f"K = {l_neg.size} negative keys")
    ax.axvline(numbers["l_pos"] / T, color="#d0342c", linewidth=2, label="positive key k+")
    ax.set_xlabel(f"logit = cosine / T  (T = {T:.3g})")
    ax.set_ylabel("keys")
    ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    return fig


def with_temperature(numbers: dict[str, Any], T: float) -> dict[str, Any]:
    """The same cosines at another temperature: softmax probability and loss recomputed."""
    p_pos, loss = info_nce(numbers["l_pos"], np.asarray(numbers["l_neg"]), float(T))
    return {**numbers, "T": float(T), "p_pos": p_pos, "loss": loss}


def _key_tiles(engine: Engine, d: Dictionary, slots: np.ndarray, l_neg: np.ndarray, T: float) -> list:
    age = np.empty(d.K, dtype=np.int64)
    age[d.fifo_order()] = np.arange(d.K)  # 0 = oldest
    tiles = []
    for s in slots:
        src = d.source(int(s))
        label = f"logit {l_neg[s] / T:.2f} · slot {s} · {_age(int(age[s]), d.K)}"
        if src is None:
            im = placeholder(engine.cfg.thumb_size, "key never filled" if d.key_ids[s] < 0 else "source not recorded")
        else:
            rel = d.image_files[int(d.key_ids[s])]  # type: ignore[index]
            im = engine.training_thumbnail(d.image_root, rel)
            label += f" · {rel}"
        tiles.append((im, label))
    return tiles


def _age(rank: int, K: int) -> str:
    if rank == 0:
        return "oldest"
    if rank == K - 1:
        return "newest"
    return f"{rank + 1}th oldest"


def fifo_line(d: Dictionary) -> str:
    order = d.fifo_order()
    names = [d.image_files[int(d.key_ids[s])] if d.source(int(s)) is not None else "?" for s in (order[0], order[-1])]
    return (
        f"**Queue (FIFO):** the K = {d.K} keys were enqueued in the last training steps, a batch at a time; the next"
        f" batch overwrites the oldest. Oldest now: slot {order[0]} ({names[0]}); newest: slot {order[-1]}"
        f" ({names[1]}). Checkpoint at step {d.step}."
    )


def momentum_line(d: Dictionary) -> str:
    return (
        f"**Momentum m = {d.m:g}:** f_k is not trained by gradients; after each step θ_k ← m·θ_k + (1−m)·θ_q, so"
        f" it drifts slowly ({(1 - d.m) * 100:.2g}% towards f_q per step) and the old and new keys in the queue"
        " come from nearly the same encoder, which makes them comparable."
    )


def look_up(engine: Engine, image: str | None, seed: float, T: float) -> tuple:
    """Views, q and k+, the keys nearest q, the logits and the loss for one image."""
    d = engine.dictionary
    if d is None:
        raise InputError(off_text(engine))
    if not image:
        raise InputError("Upload, paste or take an image first.")
    picture = engine.decode_upload(image, min_side=d.side)
    r = d.look_up(picture, int(seed))
    numbers = with_temperature({"l_pos": r.l_pos, "l_neg": r.l_neg.tolist()}, _temperature(T))
    top = np.argsort(-r.l_neg)[:TOP_NEGATIVES]
    shown = d.fifo_order()[np.linspace(0, d.K - 1, min(QUEUE_SHOWN, d.K)).round().astype(int)]
    vectors = f"q = f_q(x_q) = {_vector(r.q)}  \nk+ = f_k(x_k+) = {_vector(r.k_pos)}  \ncosine(q, k+) = {r.l_pos:.4f}"
    return (
        _view(r.x_q),
        _view(r.x_k),
        vectors,
        summary(numbers),
        histogram(numbers),
        _key_tiles(engine, d, top, r.l_neg, numbers["T"]),
        _key_tiles(engine, d, shown, r.l_neg, numbers["T"]),
        numbers,
        numbers,
    )


def retemper(numbers: dict[str, Any] | None, T: float) -> tuple:
    """The temperature slider moved: the same cosines (the session's own, kept by the server), softmax and loss
    recomputed."""
    if not numbers:
        return gr.skip(), gr.skip(), gr.skip(), gr.skip()
    numbers = with_temperature(numbers, _temperature(T))
    return summary(numbers), histogram(numbers), numbers, numbers


def _temperature(T: float) -> float:
    try:
        t = float(T)
    except (TypeError, ValueError):
        t = float("nan")
    if not T_RANGE[0] <= t <= T_RANGE[1]:
        raise InputError(f"temperature T: from {T_RANGE[0]} to {T_RANGE[1]}")
    return t


def off_text(engine: Engine) -> str:
    """Why this app has no dictionary to show, and what would give it one."""
    if engine.dictionary_off is not None:
        return (
            f"**Dictionary look-up is off:** the run's checkpoint is not used: {engine.dictionary_off}. Search,"
            " duplicates and the index need no checkpoint. To see a dictionary, train a run with `retrieval train`"
            " and index with its encoder."
        )
    return (
        f"**No dictionary to show:** the encoder behind this index ({engine.run_dir}) has no training"
        " checkpoint (checkpoint.pt), e.g. an encoder made without training. Train one with `retrieval train`"
        " and index with it to see its dictionary here."
    )


def fresh_seed(seed: float) -> int:
    return int(seed) + 1


def build(engine: Engine) -> None:
    d = engine.dictionary
    gr.Markdown(INTRO)
    if d is None:
        gr.Markdown(off_text(engine))
        return
    heavy = {"concurrency_limit": engine.cfg.concurrency, "concurrency_id": "heavy", "api_visibility": "private"}
    if d.image_files is None:
        gr.Markdown("This checkpoint does not record which image each key came from; keys are shown by slot.")
    gr.Markdown(momentum_line(d) + "\n\n" + fifo_line(d))
    seed = gr.State(0)
    with gr.Row():
        with gr.Column(scale=1):
            image = query_image(label="An image (drop, paste or take one)", sources=["upload", "clipboard", "webcam"])
            T = gr.Slider(*T_RANGE, value=d.T, step=0.01, label=f"temperature T (trained with {d.T:g})")
            fresh = gr.Button("Fresh pair of views")
        x_q = gr.Image(label="query view x_q", height=VIEW_SIDE, interactive=False)
        x_k = gr.Image(label="positive key view x_k+", height=VIEW_SIDE, interactive=False)
    vectors = gr.Markdown()
    result = gr.Markdown()
    plot = gr.Plot(label="the K negative logits, positive marked")
    negatives = gr.Gallery(label="the negatives nearest q (the hardest keys)", columns=TOP_NEGATIVES, height=240)
    shown = f"all {d.K}" if d.K <= QUEUE_SHOWN else f"{QUEUE_SHOWN} of the K = {d.K}, evenly spaced,"
    queue = gr.Gallery(
        label=f"{shown} keys of the queue from oldest to newest, as the images they came from",
        columns=8,
        height=420,
    )
    with gr.Accordion("Numbers (cosines, probability, loss) as JSON", open=False):
        numbers = gr.JSON()
    cosines = gr.State(None)  # the session's numbers, kept by the server: the slider recomputes from these
    outputs = [x_q, x_k, vectors, result, plot, negatives, queue, numbers, cosines]
    image.upload(bind(look_up, engine), [image, seed, T], outputs, **heavy)
    fresh.click(guard(fresh_seed), seed, seed, api_visibility="private").then(
        bind(look_up, engine), [image, seed, T], outputs, **heavy
    )
    T.release(guard(retemper), [cosines, T], [result, plot, numbers, cosines], api_visibility="private")
