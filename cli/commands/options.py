"""Option values a person set: the ones left at None fall back to the library config's defaults."""

from __future__ import annotations

from typing import Any


def given(**kw: Any) -> dict[str, Any]:  # noqa: ANN401
    """The keyword arguments whose value is not None."""
    return {k: v for k, v in kw.items() if v is not None}
