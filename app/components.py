"""Gradio components the app needs beyond the stock ones."""

from __future__ import annotations

from typing import Any

import gradio as gr
from gradio.data_classes import ImageData


def query_image(**kwargs: Any) -> gr.Image:
    """gr.Image (upload, paste, drag, webcam) whose upload reaches the handler as the uploaded file's path,
    undecoded: stock gr.Image opens it with Pillow first, where the project's hardened loader
    (plumbing.images.load_image, photo formats only, bomb limit) must be the only decoder. (An instance
    attribute, not a subclass: gradio writes a .pyi beside the source of every component subclass.)"""
    image = gr.Image(type="filepath", image_mode=None, **kwargs)
    image.preprocess = _uploaded_path  # type: ignore[method-assign]
    return image


def _uploaded_path(payload: ImageData | None) -> str | None:
    if payload is None:
        return None
    if payload.path is None:
        raise gr.Error("The image did not arrive as a file; upload it again.", print_exception=False)
    return str(payload.path)
