"""The Search tab: a query image (upload, paste, drag, webcam) -> the top-k indexed images, in one event; a result
clicked -> it opens large (path, pixels, bytes, date) with "More like this"; Back returns to the earlier
results. `search` is also the named API endpoint: image and k in, JSON out (with the gallery beside it).

The results a session sees are kept by the server (gr.State) as catalog ids: a click names a position in them,
never a file, and the pictures are thumbnails encoded once into gradio's cache (app.engine.Engine.indexed_file),
served as they are."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any, NamedTuple

import gradio as gr

from app.batching import MAX_BATCH
from app.binding import bind, guard
from app.components import query_image
from app.engine import GONE, Engine
from plumbing.errors import InputError
from retrieval.searching.query import SearchConfig
from retrieval.searching.searcher import Hit

MAX_K = 100
LARGE = 768  # longest side of an opened result and of a result made the query
TRAIL = 20  # result pages Back can return through


class Shown(NamedTuple):
    """One result on screen, kept by the server."""

    id: int  # catalog id
    score: float
    band: str


class Page(NamedTuple):
    """One page of results: what was asked and what came back."""

    caption: str  # the line above the results
    query_id: int | None  # the indexed file behind "more like this"; None for an uploaded query
    upload: str | None  # the uploaded query's file in gradio's upload cache (shown again on Back)
    shown: tuple[Shown, ...]


Trail = tuple[Page, ...]  # the session's pages, the one on screen last


def search(engine: Engine, image: str | None, k: float) -> tuple:
    """The top-k indexed images for a query image, in one step: the API's JSON ([{"file": path relative to the
    root, "score": the neighbour-normalised score, "band": it in words, "cosine": the raw cosine}]), a new trail
    holding the results as catalog ids, the caption, the gallery, and the opened result closed."""
    if not image:
        raise InputError("Upload, paste or take a query image first.")
    hits = engine.search_image(engine.decode_upload(image), _k(k))
    page = Page(f"{_count(hits)} most similar to the uploaded image:", None, _upload_path(image), _shown(hits))
    trail: Trail = (page,)
    return _as_json(hits), trail, page.caption, show_page(engine, page), *_closed()


def search_json(engine: Engine, image: str | None, k: float) -> list[dict[str, Any]]:
    """The `search` API endpoint: only the JSON ([{"file", "score", "band", "cosine"}]), no gallery to build."""
    if not image:
        raise InputError("Upload, paste or take a query image first.")
    return _as_json(engine.search_image(engine.decode_upload(image), _k(k)))


def cleared() -> tuple:
    """A query was refused: the earlier results go, so nothing on screen answers a query that failed."""
    return [], (), "", [], *_closed()


def open_result(engine: Engine, trail: Trail | None, evt: gr.SelectData) -> tuple:
    """The result clicked opens large with its full path, pixels, bytes and date. The click names a position
    in the session's own results, never a file."""
    hit = _clicked(trail, evt.index)
    rec = engine.record(hit.id)
    when = dt.datetime.fromtimestamp(rec.mtime_ns / 1e9, dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    details = (
        f"**{rec.path}**  \nscore {hit.score:.2f} ({hit.band})  \n{rec.width} × {rec.height} pixels ·"
        f" {_bytes(rec.size)} · modified {when}"
    )
    alt = f"Opened result: {rec.path}, {caption(rec.path, hit.score, hit.band)}"
    large = gr.update(value=engine.indexed_file(hit.id, LARGE), label=f"Opened: {rec.path}", alt_text=alt)
    return hit.id, large, details, gr.update(visible=True)


def more_like_this(engine: Engine, trail: Trail | None, opened: int | None, k: float) -> tuple:
    """The opened result becomes the query (its indexed vector; itself left out): the query panel shows it, its
    results are a new page, Back returns to the earlier one."""
    if not trail or opened is None or all(s.id != opened for s in trail[-1].shown):
        raise InputError(GONE)
    rec = engine.record(opened)
    hits = engine.search_file(opened, _k(k))
    page = Page(f"{_count(hits)} more like **{rec.path}**:", opened, None, _shown(hits))
    trail = (*trail, page)[-TRAIL:]
    return _as_json(hits), trail, page.caption, show_page(engine, page), engine.indexed_file(opened, LARGE), *_closed()


def show_results(engine: Engine, trail: Trail | None) -> tuple:
    """Back: the results before the ones on screen (the first page of a trail stays), with their query in the
    query panel; the opened result closed. The query panel only ever gets a plain value (a file in gradio's
    cache, or None): a gr.update of it would give the session a stock gr.Image that decodes uploads with Pillow
    instead of the hardened loader (app.components.query_image)."""
    if not trail:
        return [], (), "", [], None, *_closed()
    trail = trail[:-1] if len(trail) > 1 else trail
    page = trail[-1]
    query = None
    if page.query_id is not None:
        query = engine.indexed_file(page.query_id, LARGE)
    elif page.upload is not None and Path(page.upload).is_file():
        query = page.upload
    results = [_json_of(engine, s) for s in page.shown]
    return results, trail, page.caption, show_page(engine, page), query, *_closed()


def show_page(engine: Engine, page: Page) -> list[tuple[str, str]]:
    """Gallery items: the thumbnail file (encoded once) and a caption that is also the tile's alt text."""
    return [(engine.indexed_file(s.id), caption(engine.record(s.id).path, s.score, s.band)) for s in page.shown]


def caption(path: str, score: float, band: str) -> str:
    return f"{score:.2f} {band} · {path}"


def _clicked(trail: Trail | None, i: object) -> Shown:
    if not isinstance(i, int) or isinstance(i, bool) or not trail or not 0 <= i < len(trail[-1].shown):
        raise InputError(GONE)
    return trail[-1].shown[i]


def _closed() -> tuple:
    """The opened result: none (state, large picture, details, panel hidden)."""
    return None, None, "", gr.update(visible=False)  # plain values where they do: an update rebuilds the component


def _upload_path(image: str) -> str | None:
    """The uploaded query's path, kept only when it is gradio's own upload cache (to show it again on Back)."""
    from gradio.utils import get_upload_folder

    try:
        path = Path(image).resolve()
        return str(path) if path.is_relative_to(Path(get_upload_folder()).resolve()) else None
    except (OSError, ValueError):
        return None


def _count(hits: list[Hit]) -> str:
    return f"{len(hits)} result{'s' if len(hits) != 1 else ''},"


def _bytes(n: int) -> str:
    """6,203 bytes as "6.1 KB (6,203 bytes)"."""
    size, unit = float(n), "bytes"
    for bigger in ("KB", "MB", "GB"):
        if size < 1024:
            break
        size, unit = size / 1024, bigger
    return f"{n:,} bytes" if unit == "bytes" else f"{size:.1f} {unit} ({n:,} bytes)"


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


def _json_of(engine: Engine, s: Shown) -> dict[str, Any]:
    return {"file": engine.record(s.id).path, "score": s.score, "band": s.band}


def _shown(hits: list[Hit]) -> tuple[Shown, ...]:
    return tuple(Shown(h.id, round(float(h.score), 6), h.band) for h in hits)


def build(engine: Engine) -> None:
    """The tab's components and events, inside the caller's gr.Blocks / gr.Tab."""
    # searches wait for the query batcher together (app.batching): as many at once as one batch holds
    searching = {"concurrency_limit": MAX_BATCH, "concurrency_id": "search"}
    with gr.Row():
        with gr.Column(scale=1):
            query = query_image(
                label="Query image (drop, paste or take one)",
                sources=["upload", "clipboard", "webcam"],
                height=280,
                elem_classes=["query-image"],  # its picture's alt text: "Query image: NAME" (app.ui.HEAD)
            )
            k = gr.Slider(1, MAX_K, value=SearchConfig.k, step=1, label="Results (k)")
            go = gr.Button("Search", variant="primary")
            back = gr.Button("Back to the earlier results")
        with gr.Column(scale=3):
            caption_md = gr.Markdown()
            with gr.Column(visible=False) as opened_panel:
                large = gr.Image(label="Opened result", interactive=False, height=420, buttons=[], format="webp")
                details = gr.Markdown()
                with gr.Row():
                    more = gr.Button("More like this", variant="primary")
                    close = gr.Button("Close")
            gallery = gr.Gallery(
                label="Results: score, band and path; click one to open it",
                columns=5,
                height=560,
                object_fit="contain",
                allow_preview=False,
                show_label=True,
                buttons=[],
                format="webp",
                elem_classes=["readable-gallery"],
            )
    with gr.Accordion("Results as JSON (also the `search` API endpoint)", open=False):
        results = gr.JSON(label="results")
    trail = gr.State(())  # the session's pages of results as catalog ids: all the gallery and its clicks read
    opened = gr.State(None)  # the catalog id of the opened result
    closed = [opened, large, details, opened_panel]
    page_out = [results, trail, caption_md, gallery]
    searched = {"fn": bind(search, engine), "inputs": [query, k], "outputs": page_out + closed, **searching}
    failed = {"fn": guard(cleared), "inputs": None, "outputs": page_out + closed, "api_visibility": "private"}
    go.click(api_name="search_page", api_visibility="private", **searched).failure(**failed)
    api_only = gr.Button(visible=False)  # the `search` API endpoint: the JSON alone (the page's event builds more)
    api_only.click(bind(search_json, engine), [query, k], results, api_name="search", **searching)
    query.upload(api_visibility="private", **searched).failure(**failed)
    gallery.select(bind(open_result, engine), trail, [opened, large, details, opened_panel], api_visibility="private")
    with_query = page_out + [query] + closed
    more.click(bind(more_like_this, engine), [trail, opened, k], with_query, api_visibility="private", **searching)
    back.click(bind(show_results, engine), trail, with_query, api_visibility="private")
    close.click(guard(_closed), None, closed, api_visibility="private")
