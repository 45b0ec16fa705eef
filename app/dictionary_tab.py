"""The Dictionary look-up tab: contrastive learning as the MoCo paper frames it, on the checkpoint behind the
index. An image gives two augmented views; the query q = f_q(x_q) must pick its positive key k+ = f_k(x_k+)
out of the 1 + K keys (k+ and the queue's K negatives); InfoNCE is the loss of that (1+K)-way choice."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import gradio as gr
import numpy as np
from matplotlib.figure import Figure
from PIL import Image

from app.binding import bind, guard
from app.components import query_image
from app.engine import Engine, placeholder
from moco.augment.presets import IMAGENET_MEAN, IMAGENET_STD
from moco.dictionary import Dictionary, KeyRanking, RankedKey, info_nce, ordinal, rank_keys
from plumbing.errors import InputError

RANKED_SHOWN = 12  # keys of the ranked look-up listed (k+ and the query's own stale keys always)
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


def _key_tile(engine: Engine, d: Dictionary, slot: int) -> tuple[Any, str]:
    """The picture key `slot` was encoded from (a file encoded once) and its name; a grey tile saying why not."""
    name = d.source_name(slot)
    if name is None or d.image_root is None:
        if d.key_ids[slot] < 0:
            why = "key never filled"
        elif name is None:
            why = "source not recorded"
        else:
            why = "picture not found"
        return placeholder(engine.cfg.thumb_size, why), ""
    return engine.training_file(d.image_root, name), name


def ranked_tiles(engine: Engine, d: Dictionary, ranking: KeyRanking, k_view: np.ndarray) -> list[tuple[Any, str]]:
    """The look-up picture as tiles in rank order: the first RANKED_SHOWN keys, then k+ and the query's own stale
    keys where they rank lower. k+ is shown as its view x_k+, a queue key as the picture it came from."""
    tiles = []
    for key in _listed(ranking):
        if key.positive:
            tiles.append((k_view, f"#{key.rank} · k+ the positive key (the other view) · cosine {key.cosine:.3f}"))
            continue
        im, name = _key_tile(engine, d, key.slot)  # type: ignore[arg-type]
        label = f"#{key.rank} · slot {key.slot} · {d.age(key.slot)} · cosine {key.cosine:.3f}"  # type: ignore[arg-type]
        if key.stale_self:
            label += " · STALE KEY OF THIS SAME PICTURE"
        tiles.append((im, f"{label} · {name}" if name else label))
    return tiles


def ranked_table(d: Dictionary, ranking: KeyRanking, T: float) -> str:
    """The 1 + K keys ranked by logit at temperature T, as a table: k+ with its rank, stale keys marked."""
    K = len(ranking.keys) - 1
    pos = ranking.keys[ranking.positive_rank - 1]
    head = (
        f"**The look-up: all 1 + K = {K + 1} keys ranked by their logit q·key / T (T = {T:.3g}).** The positive key k+"
        f" ranks **{ordinal(ranking.positive_rank)}** (logit {pos.logit:.3f}, probability {pos.probability:.4f})."
    )
    if ranking.positive_rank == 1:
        head += " The look-up succeeds: k+ has the highest logit."
    rows = ["| rank | key | cosine | logit | probability | note |", "|---:|---|---:|---:|---:|---|"]
    for key in _listed(ranking):
        if key.positive:
            what, note = "**k+** (positive)", "the other view of the query's picture"
        else:
            what = f"slot {key.slot} ({d.age(key.slot)})"  # type: ignore[arg-type]
            name = d.source_name(key.slot)  # type: ignore[arg-type]
            what += f": {name}" if name else ""
            note = "**stale key of this same picture**" if key.stale_self else "negative"
        rows.append(f"| {key.rank} | {what} | {key.cosine:.3f} | {key.logit:.3f} | {key.probability:.4f} | {note} |")
    shown = len(rows) - 2
    more = (
        f"\n\n({shown} of the {K + 1} keys listed: the top {RANKED_SHOWN}, k+ and any stale key.)"
        if shown < K + 1
        else ""
    )
    return head + "\n\n" + "\n".join(rows) + more + stale_text(d, ranking)


def stale_text(d: Dictionary, ranking: KeyRanking) -> str:
    """Why a key of the query's own picture sits in the queue as a negative, when one does."""
    if not ranking.stale_self_slots:
        return ""
    stale = [k for k in ranking.keys if k.stale_self]
    above = sum(k.rank < ranking.positive_rank for k in stale)
    n = len(d.image_files or ())
    ranks = ", ".join(ordinal(k.rank) for k in stale)
    return (
        f"\n\n**A stale key of this same picture** ({len(stale)} in the queue, ranked {ranks}"
        f"{f'; {above} above k+' if above else ''}): this picture was a training image, and the key encoder of a few"
        " steps ago enqueued a key of it from other random views. InfoNCE counts that key as a *negative*, although"
        " it shows the query's own image, so the loss pushes q away from its own picture. This is what MoCo does"
        " with a stale copy of the same picture, and why its queue is kept much smaller than the folder (65,536 keys"
        " for ImageNet's 1.28 million images): a picture's old key has left the queue long before the picture comes"
        f" round again. Here the queue holds K = {d.K} keys for {n or 'the'} training pictures, so it still holds"
        " the picture's own key."
    )


def _listed(ranking: KeyRanking) -> list[RankedKey]:
    return [k for k in ranking.keys if k.rank <= RANKED_SHOWN or k.positive or k.stale_self]


def _queue_tiles(engine: Engine, d: Dictionary, slots: np.ndarray, l_neg: np.ndarray) -> list:
    tiles = []
    for s in slots:
        im, name = _key_tile(engine, d, int(s))
        label = f"slot {s} · {d.age(int(s))} · cosine {l_neg[s]:.3f}"
        tiles.append((im, f"{label} · {name}" if name else label))
    return tiles


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
    """Views, q and k+, the 1 + K keys ranked (k+ with its rank, the query's own stale keys marked), the logits
    and the loss for one image."""
    d = engine.dictionary
    if d is None:
        raise InputError(off_text(engine))
    if not image:
        raise InputError("Upload, paste or take an image first.")
    picture = engine.decode_upload(image, min_side=d.side)
    r = d.look_up(picture, int(seed))
    source_id = d.source_id(Path(image))  # the query's own training picture (same bytes), if it is one
    numbers = with_temperature({"l_pos": r.l_pos, "l_neg": r.l_neg.tolist(), "source_id": source_id}, _temperature(T))
    ranking = rank_keys(r.l_pos, r.l_neg, numbers["T"], d.key_ids, source_id)
    shown = d.fifo_order()[np.linspace(0, d.K - 1, min(QUEUE_SHOWN, d.K)).round().astype(int)]
    vectors = f"q = f_q(x_q) = {_vector(r.q)}  \nk+ = f_k(x_k+) = {_vector(r.k_pos)}  \ncosine(q, k+) = {r.l_pos:.4f}"
    k_view = _view(r.x_k)
    return (
        _view(r.x_q),
        k_view,
        vectors,
        summary(numbers),
        histogram(numbers),
        ranked_tiles(engine, d, ranking, k_view),
        ranked_table(d, ranking, numbers["T"]),
        _queue_tiles(engine, d, shown, r.l_neg),
        numbers,
        numbers,
    )


def retemper(engine: Engine, numbers: dict[str, Any] | None, T: float) -> tuple:
    """The temperature changed (dragged, typed or by keyboard): the same cosines (the session's own, kept by the
    server), the ranked logits, softmax and loss recomputed."""
    d = engine.dictionary
    if not numbers or d is None:
        return gr.skip(), gr.skip(), gr.skip(), gr.skip(), gr.skip()
    numbers = with_temperature(numbers, _temperature(T))
    ranking = rank_keys(numbers["l_pos"], np.asarray(numbers["l_neg"]), numbers["T"], d.key_ids, numbers["source_id"])
    return summary(numbers), histogram(numbers), ranked_table(d, ranking, numbers["T"]), numbers, numbers


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
        px = f"{d.train.crop_size} × {d.train.crop_size} px, the training resolution, shown enlarged"
        x_q = gr.Image(label=f"query view x_q ({px})", height=VIEW_SIDE, interactive=False, buttons=[])
        x_k = gr.Image(label=f"positive key view x_k+ ({px})", height=VIEW_SIDE, interactive=False, buttons=[])
    vectors = gr.Markdown()
    result = gr.Markdown()
    plot = gr.Plot(label="the K negative logits, positive marked")
    ranked = gr.Gallery(
        label="the look-up: keys ranked by their logit against q, k+ among them (a key as the picture it came from)",
        columns=6,
        height=780,  # three rows of tiles with their captions: the top 12, then k+ and stale keys
        buttons=[],
        elem_classes=["readable-gallery"],
    )
    ranked_md = gr.Markdown()
    shown = f"all {d.K}" if d.K <= QUEUE_SHOWN else f"{QUEUE_SHOWN} of the K = {d.K}, evenly spaced,"
    queue = gr.Gallery(
        label=f"{shown} keys of the queue from oldest to newest, as the images they came from",
        columns=6,
        height=420,
        buttons=[],
        elem_classes=["readable-gallery"],
    )
    with gr.Accordion("Numbers (cosines, probability, loss) as JSON", open=False):
        numbers = gr.JSON()
    cosines = gr.State(None)  # the session's numbers, kept by the server: the slider recomputes from these
    outputs = [x_q, x_k, vectors, result, plot, ranked, ranked_md, queue, numbers, cosines]
    image.upload(bind(look_up, engine), [image, seed, T], outputs, **heavy)
    fresh.click(guard(fresh_seed), seed, seed, api_visibility="private").then(
        bind(look_up, engine), [image, seed, T], outputs, **heavy
    )
    T.change(  # a drag, the arrow keys and a typed value alike
        bind(retemper, engine),
        [cosines, T],
        [result, plot, ranked_md, numbers, cosines],
        api_visibility="private",
        trigger_mode="always_last",
    )
