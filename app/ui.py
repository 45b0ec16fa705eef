"""build_app(engine) -> gr.Blocks: the four tabs, laid out and wired. Nothing runs at import; `app.main`
launches the result. The handlers are plain functions in the tab modules (app/*_tab.py)."""

from __future__ import annotations

import gradio as gr

from app import dedup_tab, dictionary_tab, index_tab, search_tab
from app.engine import Engine

TITLE = "retrieval"


def build_app(engine: Engine) -> gr.Blocks:
    cfg = engine.cfg
    with gr.Blocks(
        title=TITLE,
        analytics_enabled=False,
        delete_cache=(cfg.cache_sweep_s, cfg.cache_age_s),
    ) as blocks:
        gr.Markdown(f"## {TITLE}: {len(engine.index)} images under `{engine.root}`")
        with gr.Tab("Search"):
            search_tab.build(engine)
        with gr.Tab("Duplicates"):
            dedup_tab.build(engine)
        with gr.Tab("Dictionary look-up"):
            dictionary_tab.build(engine)
        with gr.Tab("Index"):
            index_tab.build(engine)
    blocks.queue(default_concurrency_limit=cfg.concurrency, max_size=256)
    return blocks
