"""`retrieval info --index indexes/NAME [--format table|json|csv]`: what an index holds and how it was built."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from cli.commands.options import FormatOption
from plumbing.filenames import printable

if TYPE_CHECKING:
    from retrieval.indexing.generations import Manifest


def register(app: typer.Typer) -> None:
    app.command("info")(info)


def info(
    index_dir: Path = typer.Option(..., "--index", help="Index folder (indexes/NAME)."),
    fmt: FormatOption = "table",
) -> None:
    """Show an index's root folder, file counts, encoder, index kind and parameters, and recall."""
    from retrieval.indexing.generations import read_manifest

    typer.echo(format_info(index_dir, read_manifest(index_dir), fmt), nl=False)


def format_info(index_dir: Path, m: Manifest, fmt: str) -> str:
    """JSON keeps the paths exact; table and CSV show every value through `printable` (a name from the file
    cannot add a line or drive the terminal)."""
    fields: dict[str, Any] = {
        "index": str(index_dir),
        "generation": m.generation,
        "format_version": m.format_version,
        "created": m.created,
        "root": m.root,
        "files_ok": m.n_ok,
        "files_bad": m.n_bad,
        "encoder": m.encoder_path,
        "encoder_sha256": m.encoder_sha256,
        "dim": m.dim,
        "kind": m.kind,
        "params": dict(m.params),
        "recall_at_10": m.recall_at_10,
    }
    if fmt == "json":
        return json.dumps(fields, indent=2) + "\n"
    if fmt == "csv":
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(["field", "value"])
        for key, value in fields.items():
            shown = json.dumps(value) if isinstance(value, dict) else "" if value is None else str(value)
            writer.writerow([key, printable(shown)])
        return buf.getvalue()
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
    return "".join(f"{key + ':':<11} {printable(value)}\n" for key, value in rows)
