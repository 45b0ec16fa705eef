"""CLI commands, one module each. `register_all` wires them onto the Typer app."""

from __future__ import annotations

import typer


def register_all(app: typer.Typer) -> None:
    from retrieval.commands import train

    train.register(app)
