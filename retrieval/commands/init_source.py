"""Shared by `train --init` and `export-init`: a named checkpoint is downloaded here, by the CLI, so the
person sees its licence and a progress bar (on stderr; stdout stays clean)."""

from __future__ import annotations

from typing import Any

import typer


def fetch_named_init(source: str) -> None:
    """Download `source` into the weights cache if it is a name in moco.pretrained that is not there yet."""
    from moco.pretrained import PRETRAINED, cached_path, fetch_pretrained, is_downloaded

    if source not in PRETRAINED or is_downloaded(source):
        return
    p = PRETRAINED[source]
    typer.echo(f"downloading {source} ({p.about}) from {p.url} to {cached_path(source)}", err=True)
    typer.echo(f"licence of {source}: {p.licence}", err=True)
    bar: Any = None

    def progress(done: int, total: int | None) -> None:
        nonlocal bar
        if bar is None:
            from tqdm import tqdm

            bar = tqdm(total=total, initial=done, desc=source, unit="B", unit_scale=True, unit_divisor=1024)
        bar.update(done - bar.n)

    try:
        fetch_pretrained(source, progress)
    finally:
        if bar is not None:
            bar.close()
