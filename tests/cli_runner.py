"""`retrieval ARGS...` run in-process through cli.main on an app holding only the commands under test."""

from __future__ import annotations

import sys
from collections.abc import Callable

import typer

import retrieval.cli as cli


def run_cli(monkeypatch, capsys, register: Callable[[typer.Typer], object], argv: list[str], *, group: bool = False):
    """(exit code, stdout, stderr) of `retrieval *argv` with only what `register(app)` adds; `group` keeps a
    lone command a subcommand, as in the full app."""
    app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False)
    if group:
        app.callback()(lambda: None)
    with monkeypatch.context() as m:
        m.setattr(cli, "app", app)
        m.setattr(cli, "_register", lambda: register(app))
        m.setattr(sys, "argv", ["retrieval", *argv])
        code = 0
        try:
            cli.main()
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
    out, err = capsys.readouterr()
    return code, out, err
