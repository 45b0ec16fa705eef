"""`bind(fn, engine)`: a handler `fn(engine, *inputs)` as the `fn(*inputs)` that Gradio calls.

Gradio reads a handler's signature and type hints to find its special parameters (`gr.SelectData`,
`gr.Request`); functools.partial hides the hints, so the bound function carries them over explicitly."""

from __future__ import annotations

import functools
import inspect
import typing
from collections.abc import Callable
from typing import Any


def bind(fn: Callable[..., Any], engine: object) -> Callable[..., Any]:
    hints = typing.get_type_hints(fn)
    sig = inspect.signature(fn)
    first, *rest = sig.parameters.values()

    @functools.wraps(fn)
    def bound(*args: Any, **kwargs: Any) -> Any:
        return fn(engine, *args, **kwargs)

    bound.__signature__ = sig.replace(parameters=rest)  # type: ignore[attr-defined]
    bound.__annotations__ = {k: v for k, v in hints.items() if k != first.name}
    del bound.__wrapped__  # inspect.signature must not look through to fn
    return bound
