"""`retrieval info --index indexes/NAME`: what an index holds and how it was built."""

from __future__ import annotations

from pathlib import Path

import typer


def register(app: typer.Typer) -> None:
    app.command("info")(info)


def info(
    index_dir: Path = typer.Option(..., "--index", help="Index folder (indexes/NAME)."),
) -> None:
    """Show an index's root folder, file counts, encoder, index kind and parameters, and recall."""
    from retrieval.indexing.generations import read_manifest

    m = read_manifest(index_dir)
    params = ", ".join(f"{k}={v}" for k, v in m.params.items())
    recall = "n/a" if m.recall_at_10 is None else f"{m.recall_at_10:.4f}"
    rows = [
        ("index", f"{index_dir} ({m.generation}, format {m.format_version}, created {m.created})"),
        ("root", m.root),
        ("files", f"{m.n_ok} ok, {m.n_bad} bad"),
        ("encoder", f"{m.encoder_path} (sha256 {m.encoder_sha256[:16]}, dim {m.dim})"),
        ("kind", f"{m.kind}{f' ({params})' if params else ''}"),
        ("recall@10", recall),
    ]
    for key, value in rows:
        typer.echo(f"{key + ':':<11} {value}")
