"""Loads the engine and serves the app: the only place in the project that starts a server."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass

import gradio as gr

from app import rest
from app.config import AppConfig
from app.engine import Engine
from app.ui import build_app, look

logger = logging.getLogger(__name__)


@dataclass
class Server:
    blocks: gr.Blocks
    url: str

    def close(self) -> None:
        self.blocks.close()


def start(engine: Engine) -> Server:
    """Build the app on `engine` and serve it in the background on the configured host and port."""
    cfg = engine.cfg
    blocks = build_app(engine)
    _, url, _ = blocks.launch(
        server_name=cfg.host,
        server_port=cfg.port,
        auth=cfg.auth,
        share=False,
        max_file_size=cfg.max_file_size,
        prevent_thread_lock=True,
        quiet=True,
        show_error=False,  # only the handlers' gr.Error (app.binding) reaches the browser, never an exception's text
        inbrowser=False,
        allowed_paths=[],
        ssr_mode=False,
        mcp_server=False,
        pwa=False,
        run_history=False,
        enable_monitoring=False,
        footer_links=["api"],
        **look(),
    )
    rest.mount(blocks.app, engine)  # POST /api/search: one request per search (not with log-in)
    return Server(blocks, url)


def serve(cfg: AppConfig, on_ready: Callable[[str], None] = print) -> None:
    """Load the engine, start the server, report its URL, and serve until interrupted (Ctrl-C)."""
    import torch

    logging.getLogger("httpx").setLevel(logging.WARNING)  # gradio's own start-up requests, one line each
    torch.set_num_threads(cfg.torch_threads)
    engine = Engine.load(cfg)
    server = start(engine)
    on_ready(server.url)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    finally:
        server.close()
