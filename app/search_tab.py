"""The Search tab: a query image (upload, paste, drag, webcam) -> the top-k indexed images; a result
clicked -> more like it. `search` is also the named API endpoint: image and k in, JSON out."""

from __future__ import annotations

from typing import Any

import gradio as gr

from app.binding import bind, guard
from app.components import query_image
from app.engine import GONE, Engine
from plumbing.errors import InputError
from retrieval.searching.query import SearchConfig
from retrieval.searching.searcher import Hit

MAX_K = 100
Shown = tuple[tuple[int, float], ...]  # the results on screen, kept by the server: (catalog id, score) each


def search(engine: Engine, image: str | None, k: float) -> tuple[list[dict[str, Any]], Shown]:
    """The top-k indexed images for a query image: [{"file": path relative to the root, "score": the
    neighbour-normalised score, "band": it in words, "cosine": the raw cosine}] (the API's answer), and the same
    results as catalog ids for the session (the gallery and "more like this")."""
    if not image:
        raise InputError("Upload, paste or take a query image first.")
    hits = engine.search_image(engine.decode_upload(image), _k(k))
    return _as_json(hits), _shown(hits)


def more_like_this(engine: Engine, shown: Shown | None, k: float, evt: gr.SelectData) -> tuple:
    """The result clicked in the gallery becomes the query (its indexed vector; itself left out). The click names
    a position in the session's own results, never a file."""
    i = evt.index
    if not isinstance(i, int) or isinstance(i, bool) or not shown or not 0 <= i < len(shown):
        raise InputError(GONE)
    file_id = shown[i][0]
    hits = engine.search_file(file_id, _k(k))
    return _as_json(hits), _shown(hits), f"More like **{engine.record(file_id).path}**:"


def show_results(engine: Engine, shown: Shown | None) -> list[tuple[Any, str]]:
    """Gallery items: an in-memory thumbnail and "score  path" for each of the session's results."""
    return [(engine.indexed_thumbnail(i), f"{score:.3f}  {engine.record(i).path}") for i, score in shown or ()]


def uploaded_caption(image: str | None) -> str:
    return "Most similar indexed images:" if image else ""


def _k(k: float) -> int:
    try:
        return max(1, min(MAX_K, int(k)))
    except (TypeError, ValueError, OverflowError):
        raise InputError(f"k: a number of results from 1 to {MAX_K}") from None


def _as_json(hits: list[Hit]) -> list[dict[str, Any]]:
    return [
        {"file": h.path, "score": round(float(h.score), 6), "band": h.band, "cosine": round(float(h.cosine), 6)}
        for h in hits
    ]


def _shown(hits: list[Hit]) -> Shown:
    return tuple((h.id, round(float(h.cosine), 6)) for h in hits)


def build(engine: Engine) -> None:
    """The tab's components and events, inside the caller's gr.Blocks / gr.Tab."""
    heavy = {"concurrency_limit": engine.cfg.concurrency, "concurrency_id": "heavy"}
    with gr.Row():
        with gr.Column(scale=1):
            query = query_image(
                label="Query image (drop, paste or take one)",
                sources=["upload", "clipboard", "webcam"],
                height=280,
            )
            k = gr.Slider(1, MAX_K, value=SearchConfig.k, step=1, label="Results (k)")
            go = gr.Button("Search", variant="primary")
        with gr.Column(scale=3):
            caption = gr.Markdown()
            gallery = gr.Gallery(
                label="Results: similarity and path; click one for more like it",
                columns=5,
                height=560,
                object_fit="contain",
                allow_preview=False,
                show_label=True,
            )
    with gr.Accordion("Results as JSON (also the `search` API endpoint)", open=False):
        results = gr.JSON(label="results")
    shown = gr.State(())  # the results on screen as catalog ids: the only thing the gallery and its clicks read
    searched = {"fn": bind(search, engine), "inputs": [query, k], "outputs": [results, shown], **heavy}
    caption_step = {"fn": guard(uploaded_caption), "inputs": query, "outputs": caption, "api_visibility": "private"}
    gallery_step = {"fn": bind(show_results, engine), "inputs": shown, "outputs": gallery, "api_visibility": "private"}
    go.click(api_name="search", **searched).success(**caption_step).success(**gallery_step)
    query.upload(api_visibility="private", **searched).success(**caption_step).success(**gallery_step)
    gallery.select(
        bind(more_like_this, engine), [shown, k], [results, shown, caption], api_visibility="private", **heavy
    ).success(**gallery_step)
