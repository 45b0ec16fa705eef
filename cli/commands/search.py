"""`retrieval search QUERY... --index indexes/NAME [-k 10] [--format table|json|csv] [--exclude-self]`."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from cli.commands.options import FormatOption

if TYPE_CHECKING:
    from retrieval.searching.query import QueryResult


def register(app: typer.Typer) -> None:
    app.command("search")(search)


def search(
    queries: list[Path] = typer.Argument(..., help="Query images, or folders of them."),
    index_dir: Path = typer.Option(..., "--index", help="Index folder (indexes/NAME)."),
    k: int = typer.Option(10, "-k", "--k", min=1, help="Results per query."),
    fmt: FormatOption = "table",
    exclude_self: bool = typer.Option(
        False, "--exclude-self", help="Leave the query file itself out of its results when it is indexed."
    ),
    model: Path | None = typer.Option(
        None, "--model", help="Encoder run folder. Default: the one the index was built with."
    ),
    device: str = typer.Option("auto", "--device", help="auto | cpu | cuda | mps"),
) -> None:
    """Find the indexed images most similar to each query image."""
    from retrieval.searching.query import SearchConfig, search_images

    cfg = SearchConfig(
        queries=tuple(queries), index=index_dir, k=k, exclude_self=exclude_self, device=device, model=model
    )
    results = search_images(cfg)
    typer.echo(format_results(results, fmt), nl=False)


def format_results(results: Sequence[QueryResult], fmt: str) -> str:
    """JSON keeps paths exact (a non-UTF-8 name as `\\udcNN` escapes); table and CSV show them as `\\xNN`.
    `score` is the neighbour-normalised score (0 = as close as a typical neighbour, 1 = identical) and `band` it
    in words; JSON and CSV keep the raw cosine as `cosine`."""
    from plumbing.filenames import printable

    if fmt == "json":
        data = [
            {
                "query": r.query,
                "results": [
                    {"rank": h.rank, "path": h.path, "score": h.score, "band": h.band, "cosine": h.cosine}
                    for h in r.hits
                ],
            }
            for r in results
        ]
        return json.dumps(data, indent=2) + "\n"
    if fmt == "csv":
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(["query", "rank", "path", "score", "band", "cosine"])
        for r in results:
            for h in r.hits:
                writer.writerow(
                    [printable(r.query), h.rank, printable(h.path), f"{h.score:.6f}", h.band, f"{h.cosine:.6f}"]
                )
        return buf.getvalue()
    lines: list[str] = []
    width = max((len(h.band) for r in results for h in r.hits), default=0)
    for r in results:
        lines.append(printable(r.query))
        if not r.hits:
            lines.append("  (no results)")
        for h in r.hits:
            lines.append(f"  {h.rank:>3}  {h.score:6.3f}  {h.band:<{width}}  {printable(h.path)}")
    return "\n".join(lines) + "\n"
