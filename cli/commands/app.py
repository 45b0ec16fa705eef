"""`retrieval app --index indexes/NAME [--host 127.0.0.1] [--port 7860] [--auth USER:PASS] [--move-to DIR]`."""

from __future__ import annotations

from pathlib import Path

import typer

from plumbing.filenames import printable


def register(app: typer.Typer) -> None:
    app.command("app")(run_app)


def run_app(
    index_dir: Path = typer.Option(..., "--index", help="Index folder (indexes/NAME)."),
    host: str | None = typer.Option(
        None, "--host", help="Address to serve on. Default 127.0.0.1; any other needs --auth."
    ),
    port: int | None = typer.Option(None, "--port", help="Port. Default 7860."),
    auth: str | None = typer.Option(None, "--auth", help="USER:PASS asked for by the browser."),
    move_to: Path | None = typer.Option(
        None, "--move-to", help="Enable moving duplicates aside into DIR (undoable); otherwise review only."
    ),
    device: str | None = typer.Option(None, "--device", help="auto | cpu | cuda | mps"),
) -> None:
    """Serve the web app (search, duplicates, the MoCo dictionary, index info) until Ctrl-C."""
    from app.config import AppConfig, parse_auth

    given = {"host": host, "port": port, "device": device}
    cfg = AppConfig(
        index=index_dir,
        auth=parse_auth(auth),
        move_to=move_to,
        **{k: v for k, v in given.items() if v is not None},
    )
    from app.main import serve

    shown = printable(str(index_dir))
    serve(cfg, on_ready=lambda url: typer.echo(f"serving {shown} at {url}  (Ctrl-C to stop)"))
