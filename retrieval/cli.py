"""Typer entry point. Each command lives in retrieval/commands/<name>.py, declares its options,
builds one frozen config and makes one library call. Only the CLI prints or exits."""

from __future__ import annotations

import logging
import sys

import typer

from moco.errors import InputError

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Image search and duplicate finding for your own photo folder, on MoCo features.",
    pretty_exceptions_enable=False,
)


def _register() -> None:
    # Imported here so `import retrieval.cli` stays cheap; each module adds its commands to `app`.
    from retrieval.commands import register_all

    register_all(app)


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    logging.getLogger("faiss").setLevel(logging.WARNING)  # its loader logs every CPU-feature probe
    _register()
    try:
        app(standalone_mode=False)
    except InputError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    except typer.Abort:
        print("aborted", file=sys.stderr)
        sys.exit(130)
    except Exception as e:  # click usage errors and friends carry their own exit code
        import click

        if isinstance(e, click.exceptions.ClickException):
            e.show()
            sys.exit(2)
        if isinstance(e, click.exceptions.Exit):
            sys.exit(e.exit_code)
        raise
