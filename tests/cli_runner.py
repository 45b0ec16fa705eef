"""Run `retrieval ARGS...` in-process through the real entry point (cli.main.main), on an app that holds
only the commands a test needs: exit code, stdout and stderr come back as the person would see them."""

from __future__ import annotations

import sys
from collections.abc import Callable

import typer

import cli.main as cli


def run_cli(monkeypatch, capsys, register: Callable[[typer.Typer], None], *args: str) -> tuple[int, str, str]:
    app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False)
    app.callback()(lambda: None)  # commands stay subcommands even when only one is registered
    with monkeypatch.context() as m:
        m.setattr(cli, "app", app)
        m.setattr(cli, "_register", lambda: register(app))
        m.setattr(sys, "argv", ["retrieval", *args])
        code = 0
        try:
            cli.main()
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
    out, err = capsys.readouterr()
    return code, out, err
