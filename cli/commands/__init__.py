"""CLI commands, one module each. `register_all` wires them onto the Typer app."""

from __future__ import annotations

import typer


def register_all(app: typer.Typer) -> None:
    from cli.commands import train

    train.register(app)
    from cli.commands import dedup, eval, export_init, index, info, search

    index.register(app)
    search.register(app)
    info.register(app)
    dedup.register(app)
    export_init.register(app)
    eval.register(app)
    from cli.commands import app as app_command

    app_command.register(app)
