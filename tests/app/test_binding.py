"""app.binding: the one place an InputError becomes the browser's gr.Error: the same one line, logged once, no
traceback on the console; other exceptions pass through; Gradio still sees the handler's special parameters."""

from __future__ import annotations

import inspect
import logging
import typing

import gradio as gr
import pytest

from app.binding import bind, guard
from plumbing.errors import InputError


def clicked(engine: str, shown: tuple, evt: gr.SelectData) -> str:
    if evt.index == 0:
        raise InputError("That result is gone; search again.")
    if evt.index == 1:
        raise KeyError("a bug, not a person's mistake")
    return f"{engine}:{evt.index}"


def plain(text: str) -> str:
    if not text:
        raise InputError("Type something first.")
    return text.upper()


@pytest.mark.parametrize(
    ("handler", "args", "message"),
    [
        (
            bind(clicked, "E"),
            ((), gr.SelectData(None, {"index": 0, "value": None})),
            "That result is gone; search again.",
        ),
        (guard(plain), ("",), "Type something first."),
    ],
)
def test_input_errors_become_one_gr_error_and_one_log_line(caplog, handler, args, message):
    with caplog.at_level(logging.INFO, logger="app"), pytest.raises(gr.Error) as err:
        handler(*args)
    assert err.value.message == message and err.value.print_exception is False  # gradio prints no traceback
    assert err.value.__cause__ is None and err.value.__suppress_context__
    logged = [r.getMessage() for r in caplog.records if r.name == "app"]
    assert len(logged) == 1 and logged[0].endswith(message) and "\n" not in logged[0]


def test_other_errors_and_answers_pass_through():
    handler = bind(clicked, "E")
    with pytest.raises(KeyError):
        handler((), gr.SelectData(None, {"index": 1, "value": None}))
    assert handler((), gr.SelectData(None, {"index": 2, "value": None})) == "E:2"
    assert guard(plain)("ok") == "OK"


def test_gradio_sees_the_inputs_and_special_parameters_without_the_engine():
    handler = bind(clicked, "E")
    assert list(inspect.signature(handler).parameters) == ["shown", "evt"]
    assert typing.get_type_hints(handler)["evt"] is gr.SelectData
    assert list(inspect.signature(guard(plain)).parameters) == ["text"]
    assert handler.__name__ == "clicked"
