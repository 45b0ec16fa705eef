"""The Search tab: a query image (upload, paste, drag, webcam) -> the top-k indexed images; a result
clicked -> more like it. `search` is also the named API endpoint: image and k in, JSON out."""

from __future__ import annotations

from typing import Any

import gradio as gr

from app.binding import bind
from app.components import query_image
from app.engine import Engine
from plumbing.errors import InputError
from retrieval.searching.query import SearchConfig
from retrieval.searching.searcher import Hit

MAX_K = 100


def search(engine: Engine, image: str | None, k: float) -> list[dict[str, Any]]:
    """The top-k indexed images for a query image: [{"file": path relative to the root, "score": cosine}]."""
    if not image:
        raise gr.Error("Upload, paste or take a query image first.")
    try:
        query = engine.decode_upload(image)
    except InputError as e:
        raise gr.Error(str(e)) from None
    return _as_json(engine.search_image(query, _k(k)))


def more_like_this(engine: Engine, results: list[dict[str, Any]], k: float, evt: gr.SelectData) -> tuple:
    """The result clicked in the gallery becomes the query (its indexed vector; itself left out)."""
    try:
        rel = results[evt.index]["file"]
    except (IndexError, KeyError, TypeError):
        raise gr.Error("That result is gone; search again.") from None
    try:
        hits = engine.search_file(rel, _k(k))
    except InputError as e:
        raise gr.Error(str(e)) from None
    return _as_json(hits), f"More like **{rel}**:"


def show_results(engine: Engine, results: list[dict[str, Any]] | None) -> list[tuple[Any, str]]:
    """Gallery items: an in-memory thumbnail and "score  path" for each result."""
    return [(engine.file_thumbnail(r["file"]), f"{r['score']:.3f}  {r['file']}") for r in results or []]


def uploaded_caption(image: str | None) -> str:
    return "Most similar indexed images:" if image else ""


def _k(k: float) -> int:
    return max(1, min(MAX_K, int(k)))


def _as_json(hits: list[Hit]) -> list[dict[str, Any]]:
    return [{"file": h.path, "score": round(float(h.score), 6)} for h in hits]


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
    go.click(bind(search, engine), [query, k], results, api_name="search", **heavy).success(
        uploaded_caption, query, caption, api_visibility="private"
    ).success(bind(show_results, engine), results, gallery, api_visibility="private")
    query.upload(bind(search, engine), [query, k], results, api_visibility="private", **heavy).success(
        uploaded_caption, query, caption, api_visibility="private"
    ).success(bind(show_results, engine), results, gallery, api_visibility="private")
    gallery.select(
        bind(more_like_this, engine), [results, k], [results, caption], api_visibility="private", **heavy
    ).success(bind(show_results, engine), results, gallery, api_visibility="private")
