"""`retrieval export-init SOURCE [--out runs/NAME] [--image-size PX] [--force]`: an encoder from weights trained
elsewhere, no training."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from cli.commands.init_source import fetch_named_init
from cli.commands.options import given
from plumbing.errors import InputError
from plumbing.filenames import printable


def export_init(
    source: Annotated[str, typer.Argument(help="moco-v2-800ep | moco-v2-200ep | moco-v1-200ep, or a weights file")],
    out: Annotated[Path | None, typer.Option(help="Encoder folder to write (default: runs/<source name>)")] = None,
    embed_size: Annotated[
        int | None, typer.Option("--embed-size", "--image-size", help="Index/query input size in px (default: 224)")
    ] = None,
    force: Annotated[
        bool, typer.Option("--force", help="Replace the encoder of an --out folder that already holds a run")
    ] = False,
) -> None:
    """Write encoder.safetensors + encoder.json from pretrained weights, ready for `retrieval index --model`."""
    from moco.init.export import InitExportConfig, check_destination, export_init

    if out is None:
        out = Path("runs") / Path(source).name.split(".")[0]
    try:
        cfg = InitExportConfig(source=source, out=str(out), force=force, **given(embed_size=embed_size))
    except ValueError as e:
        raise InputError(str(e)) from e
    check_destination(out, force)  # before a download, not after it
    fetch_named_init(source)
    spec = export_init(cfg)
    where = printable(str(out / "encoder.json"))
    typer.echo(f"{spec.arch} encoder ({spec.embedding_dim}-d, {spec.embed_size} px) written to {where}")


def register(app: typer.Typer) -> None:
    app.command("export-init")(export_init)
