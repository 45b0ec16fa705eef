"""`retrieval index IMAGES --model runs/NAME [--index indexes/NAME] [--kind ...] [--rebuild]`."""

from __future__ import annotations

from pathlib import Path

import typer

from cli.commands.bars import stderr_bars
from plumbing.filenames import printable
from retrieval.indexing.faiss_index import KINDS


def register(app: typer.Typer) -> None:
    app.command("index")(index)


def default_index_dir(model: Path) -> Path:
    """indexes/<name of the model run folder>."""
    return Path("indexes") / Path(model).resolve().name


def index(
    images: Path = typer.Argument(..., help="Folder of images to index (searched recursively)."),
    model: Path = typer.Option(..., "--model", help="Run folder holding encoder.json (runs/NAME)."),
    index_dir: Path | None = typer.Option(
        None, "--index", help="Index folder to create or update. Default: indexes/<run name>."
    ),
    kind: str = typer.Option("auto", "--kind", help=f"Index kind: {' | '.join(KINDS)}. auto picks by size and memory."),
    rebuild: bool = typer.Option(
        False, "--rebuild", help="Ignore the existing index (e.g. after retraining) and embed everything."
    ),
    batch_size: int = typer.Option(64, "--batch-size", min=1, help="Images per forward pass."),
    workers: int = typer.Option(
        -1, "--workers", min=-1, help="Decode threads (-1: from the CPU count; 0: decode on the main thread)."
    ),
    device: str = typer.Option("auto", "--device", help="auto | cpu | cuda | mps"),
) -> None:
    """Embed every image under IMAGES into a searchable index (incremental: reruns embed only changes)."""
    from retrieval.errors import InputError
    from retrieval.indexing.run import IndexConfig, index_folder

    if kind not in KINDS:
        raise InputError(f"--kind {kind!r}: choose one of {', '.join(KINDS)}")
    extra = {} if workers < 0 else {"workers": workers}
    with stderr_bars() as bars:
        cfg = IndexConfig(
            images=images,
            model=model,
            index=index_dir if index_dir is not None else default_index_dir(model),
            kind=kind,
            rebuild=rebuild,
            batch_size=batch_size,
            device=device,
            progress=bars,
            **extra,
        )
        report = index_folder(cfg)
    if not report.generation:  # a torchrun follower rank: rank 0 reports
        return
    recall = "n/a" if report.recall_at_10 is None else f"{report.recall_at_10:.3f}"
    params = ", ".join(f"{k}={v}" for k, v in report.params.items())
    state = "written" if report.written else "unchanged"
    typer.echo(
        f"{printable(str(report.index))} ({report.generation}, {state}): {report.ok} images indexed, {report.bad} bad;"
        f" {report.embedded} embedded, {report.unchanged} unchanged, {report.rehashed} reused by hash,"
        f" {report.resumed} resumed, {report.removed} removed"
    )
    typer.echo(f"index: {report.kind}{f' ({params})' if params else ''}, recall@10 {recall}, {report.seconds:.1f}s")
