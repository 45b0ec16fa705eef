"""Options several commands share, declared once: `--format`, and the values a person set (the ones left at None
fall back to the library config's defaults)."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from plumbing.errors import InputError

FORMATS = ("table", "json", "csv")  # what `--format` accepts; table is for a person, json and csv for programs


def _check_format(value: str) -> str:
    if value not in FORMATS:
        raise InputError(f"--format {value!r}: choose one of {', '.join(FORMATS)}")
    return value


# `fmt: FormatOption = "table"` in a command's signature: checked while the options are read, before any work
FormatOption = Annotated[str, typer.Option("--format", help=" | ".join(FORMATS), callback=_check_format)]


def given(**kw: Any) -> dict[str, Any]:  # noqa: ANN401
    """The keyword arguments whose value is not None."""
    return {k: v for k, v in kw.items() if v is not None}
