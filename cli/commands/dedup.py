"""`retrieval dedup --index indexes/NAME [...]` and `retrieval undo MOVE_LOG`.

The groups (table, json or csv) go to stdout or `--output`; what was or would be moved, the undo log
and the report path go to stderr, so stdout stays parseable. Dry run unless `--move-to DIR --apply`.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from cli.commands.bars import stderr_bars
from cli.commands.options import FormatOption, given
from cli.commands.outputs import check_output_file, write_text_file
from plumbing.filenames import printable

if TYPE_CHECKING:
    from PIL import Image

    from retrieval.dedup.moves import MovePlan, MoveReport, SkippedMove
    from retrieval.dedup.run import DedupResult

THUMB_SIZE = 256


def register(app: typer.Typer) -> None:
    app.command("dedup")(dedup)
    app.command("undo")(undo)


def dedup(
    index_dir: Path = typer.Option(..., "--index", help="Index folder (indexes/NAME)."),
    threshold: str | None = typer.Option(
        None,
        "--threshold",
        help="Preset (exact | strict | default | loose; default: default) or a score in (-1, 1]: the cosine"
        " normalised against each image's nearest neighbours (0 = as close as a typical neighbour, 1 = identical).",
    ),
    keeper: str | None = typer.Option(
        None,
        "--keeper",
        help="Which copy to keep, keys in order: pixels, size, oldest | newest, shortest_path"
        " (default: pixels,size,oldest,shortest_path).",
    ),
    fmt: FormatOption = "table",
    output: Path | None = typer.Option(None, "--output", help="Write the groups to FILE instead of stdout."),
    report: Path | None = typer.Option(None, "--report", help="Also write a self-contained HTML report."),
    move_to: Path | None = typer.Option(
        None, "--move-to", help="Folder (outside the indexed one) to move duplicates into, keeping their paths."
    ),
    apply: bool = typer.Option(False, "--apply", help="Really move (default: a dry run that shows the moves)."),
    calibrate: bool = typer.Option(
        False, "--calibrate", help="Print a histogram of each image's best-neighbour score, presets marked."
    ),
    k: int | None = typer.Option(None, "-k", "--k", help="Neighbours searched per file (default 32)."),
    verify: bool = typer.Option(
        True,
        "--verify/--no-verify",
        help="Decide candidate pairs by whether their pictures line up or their keypoints agree on one"
        " similarity (reads those files again); --no-verify uses the score alone.",
    ),
    similar: bool = typer.Option(
        False,
        "--similar",
        help="Also list similar pictures (different shots of one scene, different drawings of one template) as"
        " groups of their own; they are never moved.",
    ),
    plan: Path | None = typer.Option(
        None,
        "--plan",
        help="Follow a reviewed plan (the --format json output, perhaps edited) instead of searching: with"
        " --move-to DIR --apply, move exactly the files it lists, once checked against the index and their sha256.",
    ),
) -> None:
    """Find exact and near duplicate images in an indexed folder; optionally move them aside (undoable)."""
    from retrieval.dedup.groups import KeeperRule
    from retrieval.dedup.run import DedupConfig, find_duplicates
    from retrieval.dedup.threshold import Threshold
    from retrieval.errors import InputError

    if calibrate and report is not None:
        raise InputError("--calibrate only prints a histogram; run again without it to --report")
    for path, option in ((output, "--output"), (report, "--report")):
        if path is not None:
            check_output_file(path, option)
    with stderr_bars() as bars:
        cfg = DedupConfig(
            index=index_dir,
            move_to=move_to,
            apply=apply,
            calibrate=calibrate,
            verify=verify,
            similar=similar,
            plan=plan,
            progress=bars,
            **given(
                threshold=None if threshold is None else Threshold.parse(threshold),
                keeper=None if keeper is None else KeeperRule.parse(keeper),
                k=k,
            ),
        )
        result = find_duplicates(cfg)

    if result.histogram is not None:
        _emit(format_calibration(result, fmt), output)
        return
    _emit(format_groups(result, fmt), output)
    if report is not None:
        from retrieval.dedup.report import render_report

        loader = _report_loader(result, cfg.move_to)
        page = render_report(
            result.groups,
            result.root,
            result.threshold,
            THUMB_SIZE,
            loader=loader,
            background_rank=result.background_rank,
        )
        write_text_file(report, page)
        typer.echo(f"report: {printable(str(report))} ({len(result.groups)} groups)", err=True)
    if result.moved is not None:
        _echo_moved(result.plan, result.moved, cfg.move_to)
    elif result.plan is not None:
        _echo_plan(result.plan, cfg.move_to)
    elif result.groups:
        typer.echo(
            f"dry run: nothing moved; add --move-to DIR --apply to move the {result.n_duplicates} duplicates aside",
            err=True,
        )


def undo(
    move_log: Path = typer.Argument(..., help="The undo-*.jsonl log written by `retrieval dedup --apply`."),
) -> None:
    """Move every file that `retrieval dedup --apply` moved back to where it was (verified by sha256)."""
    from retrieval.dedup.run import undo as undo_moves
    from retrieval.errors import InputError

    result = undo_moves(move_log)
    typer.echo(f"restored {len(result.restored)} files, {len(result.already_in_place)} already in place")
    for path in result.partials_removed:
        typer.echo(f"removed {printable(path)}: the torn temporary copy of an interrupted run", err=True)
    for path in result.extra_copies:
        typer.echo(
            f"left a verified copy at {printable(path)} (an interrupted move); the original is in place", err=True
        )
    for p in result.problems:
        typer.echo(f"not restored {printable(p.path)}: {printable(p.reason)}", err=True)
    if result.problems:
        raise InputError(f"{len(result.problems)} files were not restored (see above); nothing was overwritten")


# -------------------------------------------------------------------------------------------- output


def format_groups(result: DedupResult, fmt: str) -> str:
    from retrieval.dedup.formats import groups_to_csv, groups_to_json, groups_to_table, similar_to_table

    if fmt == "json":
        doc = groups_to_json(result.groups, result.threshold, result.similar, index=result.identity)
        return json.dumps(doc, indent=2) + "\n"
    if fmt == "csv":
        return groups_to_csv(result.groups, result.similar)
    t = "exact duplicates only" if result.threshold is None else f"score >= {result.threshold:.4f}"
    shown = "" if not result.similar else similar_to_table(result.similar) + "\n"
    return f"{result.n_files} files, {t}\n" + groups_to_table(result.groups) + "\n" + shown


def format_calibration(result: DedupResult, fmt: str) -> str:
    from retrieval.dedup.formats import format_histogram
    from retrieval.dedup.run import threshold_marks

    histogram = result.histogram or ()
    marks = threshold_marks(result.threshold)
    if fmt == "json":
        data = {
            "files": result.n_files,
            "presets": marks,
            "histogram": [{"low": lo, "high": hi, "count": n} for lo, hi, n in histogram],
        }
        return json.dumps(data, indent=2) + "\n"
    if fmt == "csv":
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(["low", "high", "count"])
        writer.writerows([f"{lo:.4f}", f"{hi:.4f}", n] for lo, hi, n in histogram)
        return buf.getvalue()
    what = "normalised score" if result.background_rank else "cosine similarity"
    head = f"{what} of each of {result.n_files} files to its best neighbour (presets marked):"
    lines = [head, format_histogram(histogram, marks=marks)]
    below = [f"{name} {t:.2f}" for name, t in marks.items() if histogram and t < histogram[0][0]]
    if below:
        lines.append(f"below the range shown: {', '.join(below)}")
    return "\n".join(lines) + "\n"


def _report_loader(result: DedupResult, move_to: Path | None) -> Callable[[Path], Image.Image]:
    """plumbing.images.load_image at thumbnail size; files that --apply has just moved are read where they are now."""
    from plumbing.images import load_image

    moved: dict[Path, Path] = {}
    if result.moved is not None and move_to is not None:
        target = Path(move_to).resolve()  # as apply_moves resolves it
        moved = {result.root / m.source: target / m.destination for m in result.moved.moved}
    load = partial(load_image, min_side=THUMB_SIZE)

    def loader(path: Path) -> Image.Image:
        return load(moved.get(Path(path), path))

    return loader


def _emit(text: str, output: Path | None) -> None:
    if output is None:
        typer.echo(text, nl=False)
    else:
        write_text_file(output, text)
        typer.echo(f"written to {printable(str(output))}", err=True)


def _size(n_bytes: int) -> str:
    from retrieval.dedup.formats import human_size

    return human_size(n_bytes)


def _echo_skipped(skipped: Sequence[SkippedMove]) -> None:
    for s in skipped:
        typer.echo(f"  leaving {printable(s.path)}: {printable(s.reason)}", err=True)


def _echo_plan(plan: MovePlan, move_to: Path | None) -> None:
    for m in plan.moves:
        typer.echo(
            f"  would move {printable(m.source)} -> {printable(str(Path(str(move_to)) / m.destination))}", err=True
        )
    _echo_skipped(plan.skipped)
    n_bytes = sum(m.size for m in plan.moves)
    typer.echo(
        f"dry run: would move {len(plan.moves)} files ({_size(n_bytes)}) to {move_to}, leave {len(plan.skipped)};"
        " add --apply to move them",
        err=True,
    )


def _echo_moved(plan: MovePlan | None, report: MoveReport, move_to: Path | None) -> None:
    """What --apply did: every duplicate left (by the plan, or re-checked and left at the move), then the count."""
    left = [*(plan.skipped if plan is not None else ()), *report.skipped]
    _echo_skipped(left)
    typer.echo(
        f"moved {len(report.moved)} files ({_size(report.bytes_moved)}) to {move_to}, left {len(left)}",
        err=True,
    )
    typer.echo(f"undo log: {report.log_path}  (to restore: retrieval undo {report.log_path})", err=True)
