"""Gradio components the app needs beyond the stock ones."""

from __future__ import annotations

import gradio as gr
from gradio.data_classes import ImageData

from gradio.events import Dependency

class QueryImage(gr.Image):
    """gr.Image (upload, paste, drag, webcam) whose upload reaches the handler as the uploaded file's path,
    undecoded: stock gr.Image opens it with Pillow first, where the project's hardened loader
    (moco.images.load_image, photo formats only, bomb limit) must be the only decoder."""

    is_template = True  # the browser draws it with gr.Image's own front end

    def preprocess(self, payload: ImageData | None) -> str | None:  # type: ignore[override]
        if payload is None:
            return None
        if payload.path is None:
            raise gr.Error("The image did not arrive as a file; upload it again.")
        return str(payload.path)
    from typing import Callable, Literal, Sequence, Any, TYPE_CHECKING
    from gradio.blocks import Block
    if TYPE_CHECKING:
        from gradio.components import Timer
        from gradio.components.base import Component