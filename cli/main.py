"""Typer entry point. Each command lives in retrieval/commands/<name>.py, declares its options,
builds one frozen config and makes one library call. Only the CLI prints or exits."""

from __future__ import annotations

import logging
import sys

import typer

from plumbing.errors import InputError

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Image search and duplicate finding for your own photo folder, on MoCo features.",
    pretty_exceptions_enable=False,
)


def _register() -> None:
    # Imported here so `import cli.main` stays cheap; each module adds its commands to `app`.
    from cli.commands import register_all

    register_all(app)


def _click_errors() -> tuple[type[BaseException], ...]:
    """Usage-error types: click's own and the copy that newer typer releases bundle."""
    types: list[type[BaseException]] = []
    for module in ("click.exceptions", "typer._click.exceptions"):
        try:
            types.append(__import__(module, fromlist=["ClickException"]).ClickException)
        except (ImportError, AttributeError):
            continue
    return tuple(types)


def _printable_streams() -> None:
    """A file name that is not UTF-8 (held as surrogate escapes) prints as `\\udcNN` instead of crashing the
    command; the formatters show such names as `\\xNN` themselves (plumbing.filenames.printable)."""
    for stream in (sys.stdout, sys.stderr):
        reconfigure = getattr(stream, "reconfigure", None)
        if reconfigure is not None:
            try:
                reconfigure(errors="backslashreplace")
            except (ValueError, OSError):  # a stream that cannot change its error handler keeps it
                pass


def main() -> None:
    _printable_streams()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    logging.getLogger("faiss").setLevel(logging.WARNING)  # its loader logs every CPU-feature probe
    # Pillow logs the damage it finds in a file (without its name); plumbing.images turns that into a bad file,
    # which the command reports itself ("skipping FILE: reason")
    logging.getLogger("PIL").setLevel(logging.CRITICAL)
    _register()
    usage_errors = _click_errors()
    try:
        code = app(standalone_mode=False)
    except InputError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    except OSError as e:  # the library turns the failures it expects into InputError; this is the net
        name = f"{e.filename}: " if e.filename else ""
        print(f"error: {name}{e.strerror or e}", file=sys.stderr)
        sys.exit(2)
    except usage_errors as e:
        e.show()  # type: ignore[attr-defined]
        sys.exit(2)
    except (typer.Abort, KeyboardInterrupt):
        print("aborted", file=sys.stderr)
        sys.exit(130)
    sys.exit(code if isinstance(code, int) else 0)
