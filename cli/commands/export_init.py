"""`retrieval export-init SOURCE [--out runs/NAME]`: an encoder from weights trained elsewhere, no training."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from cli.commands.init_source import fetch_named_init
from plumbing.errors import InputError


def export_init(
    source: Annotated[str, typer.Argument(help="moco-v2-800ep | moco-v2-200ep | moco-v1-200ep, or a weights file")],
    out: Annotated[Path | None, typer.Option(help="Encoder folder to write (default: runs/<source name>)")] = None,
    image_size: Annotated[int | None, typer.Option(help="Index/query input size in px (default: 224)")] = None,
) -> None:
    """Write encoder.safetensors + encoder.json from pretrained weights, ready for `retrieval index --model`."""
    from moco.init.export import InitExportConfig, export_init

    if out is None:
        out = Path("runs") / Path(source).name.split(".")[0]
    try:
        cfg = InitExportConfig(source=source, out=str(out), **({"image_size": image_size} if image_size else {}))
    except ValueError as e:
        raise InputError(str(e)) from e
    fetch_named_init(source)
    spec = export_init(cfg)
    typer.echo(f"{spec.arch} encoder ({spec.embedding_dim}-d, {spec.image_size} px) written to {out}/encoder.json")


def register(app: typer.Typer) -> None:
    app.command("export-init")(export_init)
