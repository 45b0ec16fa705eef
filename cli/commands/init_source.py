"""Shared by `train --init` and `export-init`: a named checkpoint is downloaded here, by the CLI, so the
person sees its licence and a progress bar (on stderr; stdout stays clean)."""

from __future__ import annotations

import typer

from cli.commands.bars import stderr_bars
from plumbing.filenames import printable


def fetch_named_init(source: str) -> None:
    """Download `source` into the weights cache if it is a name in moco.init.pretrained that is not there yet."""
    from moco.init.pretrained import PRETRAINED, cached_path, fetch_pretrained, is_downloaded

    if source not in PRETRAINED or is_downloaded(source):
        return
    p = PRETRAINED[source]
    typer.echo(f"downloading {source} ({p.about}) from {p.url} to {printable(str(cached_path(source)))}", err=True)
    typer.echo(f"licence of {source}: {p.licence}", err=True)
    with stderr_bars() as bars:
        fetch_pretrained(source, bars)
