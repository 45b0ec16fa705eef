"""CLI commands, one module each. `register_all` wires them onto the Typer app."""

from __future__ import annotations

import typer


def register_all(app: typer.Typer) -> None:
    from retrieval.commands import train

    train.register(app)
    from retrieval.commands import dedup, eval, export_init, index, info, search

    index.register(app)
    search.register(app)
    info.register(app)
    dedup.register(app)
    export_init.register(app)
    eval.register(app)
    from retrieval.commands import app as app_command

    app_command.register(app)
