"""How the app's handlers reach Gradio, and the one place a person's mistake becomes a message.

`bind(fn, engine)`: a handler `fn(engine, *inputs)` as the `fn(*inputs)` that Gradio calls; `guard(fn)`: a
handler without the engine. Either way an `InputError` raised by the handler (or the library below it) reaches
the browser as `gr.Error` with its one-line text and the server's console as one log line, never as a traceback
(Gradio prints one for every exception unless told otherwise).

Gradio reads a handler's signature and type hints to find its special parameters (`gr.SelectData`,
`gr.Request`); a plain wrapper hides the hints, so the wrapped function carries them over explicitly."""

from __future__ import annotations

import functools
import inspect
import logging
import typing
from collections.abc import Callable
from typing import Any

import gradio as gr

from plumbing.errors import InputError

logger = logging.getLogger("app")


def refused(e: InputError, handler: str) -> gr.Error:
    """The browser's message for a refused input, logged as one line."""
    logger.info("app: %s refused: %s", handler, e)
    return gr.Error(str(e), print_exception=False)


def guard(fn: Callable[..., Any]) -> Callable[..., Any]:
    """`fn` with InputError turned into gr.Error (one log line, no traceback)."""
    return _wrapped(fn, fn, drop_first=False)


def bind(fn: Callable[..., Any], engine: object) -> Callable[..., Any]:
    """`fn(engine, *inputs)` as `fn(*inputs)`, guarded like `guard`."""
    return _wrapped(fn, functools.partial(fn, engine), drop_first=True)


def _wrapped(fn: Callable[..., Any], call: Callable[..., Any], drop_first: bool) -> Callable[..., Any]:
    hints = typing.get_type_hints(fn)
    sig = inspect.signature(fn)
    params = list(sig.parameters.values())
    dropped = {params[0].name} if drop_first else set()

    @functools.wraps(fn)
    def handler(*args: Any, **kwargs: Any) -> Any:
        try:
            return call(*args, **kwargs)
        except InputError as e:
            raise refused(e, fn.__name__) from None

    handler.__signature__ = sig.replace(parameters=[p for p in params if p.name not in dropped])  # type: ignore[attr-defined]
    handler.__annotations__ = {k: v for k, v in hints.items() if k not in dropped}
    del handler.__wrapped__  # inspect.signature must not look through to fn
    return handler
