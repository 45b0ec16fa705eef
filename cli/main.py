"""Typer entry point. Each command lives in retrieval/commands/<name>.py, declares its options,
builds one frozen config and makes one library call. Only the CLI prints or exits."""

from __future__ import annotations

import logging
import sys

import typer

from plumbing.errors import InputError
from plumbing.filenames import printable

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


class PrintableFormatter(logging.Formatter):
    """Log lines through `plumbing.filenames.printable`: a file name in a "skipping FILE: reason" line shows its
    control characters and undecodable bytes as `\\xNN`, so it can neither add a line nor drive the terminal
    (a traceback, when one is logged, keeps its own lines)."""

    def formatMessage(self, record: logging.LogRecord) -> str:  # noqa: N802 (logging's name)
        return printable(super().formatMessage(record))


def _usage_line(e: BaseException) -> str:
    """A usage error (bad option value, missing argument) as one line, with where to read the usage."""
    message = e.format_message() if hasattr(e, "format_message") else str(e)
    ctx = getattr(e, "ctx", None)
    hint = f" (see `{ctx.command_path} --help`)" if ctx is not None else ""
    return printable(f"{message}{hint}")


def _printable_streams() -> None:
    """The net under `printable`: text that reaches a stream without it prints a surrogate as `\\udcNN`
    instead of crashing the command."""
    for stream in (sys.stdout, sys.stderr):
        reconfigure = getattr(stream, "reconfigure", None)
        if reconfigure is not None:
            try:
                reconfigure(errors="backslashreplace")
            except (ValueError, OSError):  # a stream that cannot change its error handler keeps it
                pass


def main() -> None:
    _printable_streams()
    log_lines = logging.StreamHandler()  # stderr
    log_lines.setFormatter(PrintableFormatter("%(message)s"))
    logging.basicConfig(level=logging.INFO, handlers=[log_lines])  # a no-op where logging is set up (pytest)
    logging.getLogger("faiss").setLevel(logging.WARNING)  # its loader logs every CPU-feature probe
    # Pillow logs the damage it finds in a file (without its name); plumbing.images turns that into a bad file,
    # which the command reports itself ("skipping FILE: reason")
    logging.getLogger("PIL").setLevel(logging.CRITICAL)
    _register()
    usage_errors = _click_errors()
    try:
        code = app(standalone_mode=False)
    except InputError as e:
        print(f"error: {printable(str(e))}", file=sys.stderr)
        sys.exit(2)
    except OSError as e:  # the library turns the failures it expects into InputError; this is the net
        name = f"{e.filename}: " if e.filename else ""
        print(printable(f"error: {name}{e.strerror or e}"), file=sys.stderr)
        sys.exit(2)
    except usage_errors as e:
        if type(e).__name__ == "NoArgsIsHelpError":  # a command given no arguments: its help, as asked
            e.show()  # type: ignore[attr-defined]
        else:
            print(f"error: {_usage_line(e)}", file=sys.stderr)
        sys.exit(2)
    except (typer.Abort, KeyboardInterrupt):
        print("aborted", file=sys.stderr)
        sys.exit(130)
    sys.exit(code if isinstance(code, int) else 0)
