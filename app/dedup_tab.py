"""The Duplicates tab: the groups of `retrieval dedup` at a preset or chosen threshold, the keeper marked,
another keeper pickable, export as JSON / CSV; with `--move-to`, moving the duplicates aside exactly as
`retrieval dedup --apply` does (same checks, same undo log) and undoing the last move. Nothing is deleted."""

from __future__ import annotations

import dataclasses
import json
import tempfile
from pathlib import Path
from typing import Any

import gradio as gr

from app.binding import bind, guard
from app.engine import Engine
from plumbing.errors import InputError
from retrieval.dedup.formats import groups_to_csv, groups_to_json, human_size
from retrieval.dedup.groups import Duplicate, Group, with_keeper
from retrieval.dedup.moves import plan_moves
from retrieval.dedup.run import apply_plan, undo
from retrieval.dedup.threshold import SCORE_PRESETS, THRESHOLD_PRESETS, Threshold

CUSTOM = "custom (slider)"
PRESET_CHOICES = [*THRESHOLD_PRESETS, CUSTOM]
TABLE_HEADERS = ["group", "role", "path", "score", "kind", "size"]


@dataclasses.dataclass
class Found:
    """One session's groups: as found, then with the keepers the person picked."""

    threshold: float | None
    groups: list[Group]


def threshold(preset: str, value: float) -> Threshold:
    """The radio's preset, or the slider's score for "custom"; InputError for anything else."""
    if preset == CUSTOM:
        try:
            return Threshold(float(value))
        except (TypeError, ValueError):
            raise InputError(f"threshold {value!r}: a score threshold must be in (-1, 1]") from None
    if preset not in THRESHOLD_PRESETS:
        raise InputError(f"threshold preset: one of {', '.join(PRESET_CHOICES)}")
    return Threshold.preset(preset)


def preset_value(preset: str) -> Any:
    """The slider follows the preset picked (exact has no score: the slider stays)."""
    t = SCORE_PRESETS.get(preset)
    return gr.skip() if t is None else t


def kind(d: Duplicate) -> str:
    return "verified" if d.alignment is not None and d.kind == "near" else d.kind


def find(engine: Engine, preset: str, value: float) -> tuple:
    result = engine.duplicates(threshold(preset, value))
    found = Found(result.threshold, list(result.groups))
    return (found, *_render(engine, found, 0))


def pick_keeper(engine: Engine, found: Found | None, n: float, path: str | None) -> tuple:
    if found is None or not found.groups:
        raise InputError("Find duplicates first.")
    i = _group_index(found, n)
    if not path:
        raise InputError("Choose the file to keep.")
    found.groups[i] = with_keeper(found.groups[i], path)
    return (found, *_render(engine, found, i))


def show_group(engine: Engine, found: Found | None, n: float) -> tuple:
    if found is None or not found.groups:
        return [], gr.update(choices=[], value=None)
    return _members(engine, found.groups[_group_index(found, n)])


def _group_index(found: Found, n: float) -> int:
    try:
        wanted = int(n or 1)
    except (TypeError, ValueError, OverflowError):
        wanted = 1
    return max(0, min(len(found.groups) - 1, wanted - 1))


def _members(engine: Engine, g: Group) -> tuple:
    tiles = [(engine.indexed_thumbnail(g.keep.id), f"KEEP · {g.keep.path} · {human_size(g.keep.size)}")]
    tiles += [
        (
            engine.indexed_thumbnail(d.record.id),
            f"{d.score:.3f} {kind(d)} · {d.record.path} · {human_size(d.record.size)}",
        )
        for d in g.duplicates
    ]
    paths = [r.path for r in g.records]
    return tiles, gr.update(choices=paths, value=g.keep.path)


def table(found: Found) -> list[list[Any]]:
    rows: list[list[Any]] = []
    for n, g in enumerate(found.groups, start=1):
        rows.append([n, "keep", g.keep.path, "", "", human_size(g.keep.size)])
        rows += [
            [n, "duplicate", d.record.path, round(d.score, 4), kind(d), human_size(d.record.size)] for d in g.duplicates
        ]
    return rows


def _render(engine: Engine, found: Found, i: int) -> tuple:
    n_dups = sum(len(g.duplicates) for g in found.groups)
    n_bytes = sum(d.record.size for g in found.groups for d in g.duplicates)
    t = "exact copies only" if found.threshold is None else f"score >= {found.threshold:.3f}"
    text = (
        f"**{len(found.groups)} groups, {n_dups} duplicates ({human_size(n_bytes)})** among {len(engine.index)} files,"
        f" {t}. The keeper of each group is chosen by pixels, then size, then age, then path; pick another below."
    )
    if not found.groups:
        return text, [], gr.update(maximum=1, value=1), [], gr.update(choices=[], value=None)
    tiles, keeper = _members(engine, found.groups[i])
    return text, table(found), gr.update(maximum=len(found.groups), value=i + 1), tiles, keeper


_EXPORTS: list[tempfile.TemporaryDirectory] = []


def _export_root() -> str:
    """A temporary folder for the export files, removed when the server process ends (Gradio serves copies)."""
    if not _EXPORTS:
        _EXPORTS.append(tempfile.TemporaryDirectory(prefix="retrieval-export-"))
    return _EXPORTS[0].name


def export(found: Found | None, fmt: str) -> str:
    """The current groups (with the keepers picked) as duplicates.json or duplicates.csv, for download."""
    if found is None:
        raise InputError("Find duplicates first.")
    out = Path(tempfile.mkdtemp(dir=_export_root())) / f"duplicates.{fmt}"  # one folder per export: no races
    if fmt == "json":
        out.write_text(json.dumps(groups_to_json(found.groups, found.threshold), indent=2) + "\n", encoding="utf-8")
    else:
        out.write_text(groups_to_csv(found.groups), encoding="utf-8")
    return str(out)


def export_json(found: Found | None) -> str:
    return export(found, "json")


def export_csv(found: Found | None) -> str:
    return export(found, "csv")


def plan(engine: Engine, found: Found | None) -> tuple:
    """First step of a move: what would move where (a dry run); the confirm button appears."""
    if engine.cfg.move_to is None:
        raise InputError("Moving is off: start the app with --move-to DIR to move duplicates aside.")
    if found is None or not found.groups:
        raise InputError("Find duplicates first.")
    p = plan_moves(found.groups, engine.root, Path(engine.cfg.move_to))
    lines = [f"- {m.source} → {Path(engine.cfg.move_to) / m.destination}" for m in p.moves[:50]]
    more = f"\n- ... and {len(p.moves) - 50} more" if len(p.moves) > 50 else ""
    left = "".join(f"\n- leaving {s.path}: {s.reason}" for s in p.skipped)
    size = human_size(sum(m.size for m in p.moves))
    text = f"**Would move {len(p.moves)} files ({size}) to {engine.cfg.move_to}**; keepers stay.\n\n"
    return text + "\n".join(lines) + more + left, gr.update(visible=bool(p.moves))


def confirm_move(engine: Engine, found: Found | None) -> tuple:
    """Move the duplicates aside (each re-checked first), logged for undo; the index is not changed."""
    if engine.cfg.move_to is None or found is None:
        raise InputError("Nothing to move.")
    move_to = Path(engine.cfg.move_to)
    report = apply_plan(plan_moves(found.groups, engine.root, move_to), engine.root, move_to)
    engine.last_move_log = report.log_path
    left = "".join(f"\n- left {s.path}: {s.reason}" for s in report.skipped)
    return (
        f"**Moved {len(report.moved)} files ({human_size(report.bytes_moved)}) to {move_to}.** Undo log:"
        f" `{report.log_path}` (or `retrieval undo {report.log_path}`). Run `retrieval index` again to refresh"
        f" the index.{left}",
        gr.update(visible=False),
    )


def undo_last(engine: Engine) -> str:
    log = engine.last_move_log
    if log is None:
        raise InputError("No move made from this app to undo.")
    result = undo(log)
    engine.last_move_log = None
    problems = "".join(f"\n- not restored {p.path}: {p.reason}" for p in result.problems)
    return f"**Restored {len(result.restored)} files** ({len(result.already_in_place)} already in place).{problems}"


def build(engine: Engine) -> None:
    heavy = {"concurrency_limit": 1, "concurrency_id": "dedup", "api_visibility": "private"}
    private = {"api_visibility": "private"}
    found = gr.State(None)
    with gr.Row():
        preset = gr.Radio(PRESET_CHOICES, value="default", label="threshold preset")
        value = gr.Slider(-0.99, 1.0, value=SCORE_PRESETS["default"], step=0.01, label="score threshold (custom)")
        go = gr.Button("Find duplicates", variant="primary")
    summary = gr.Markdown()
    rows = gr.Dataframe(headers=TABLE_HEADERS, label="all groups", interactive=False, max_height=300)
    with gr.Row():
        n = gr.Number(value=1, minimum=1, maximum=1, precision=0, label="group")
        keeper = gr.Dropdown(choices=[], label="file to keep in this group")
        keep = gr.Button("Keep this one instead")
    members = gr.Gallery(label="the group side by side: keeper first, then score and kind", columns=6, height=300)
    with gr.Row():
        as_json = gr.Button("Export JSON")
        as_csv = gr.Button("Export CSV")
        exported = gr.File(label="export", interactive=False)
    outputs = [summary, rows, n, members, keeper]
    preset.change(guard(preset_value), preset, value, **private)
    go.click(bind(find, engine), [preset, value], [found, *outputs], **heavy)
    n.change(bind(show_group, engine), [found, n], [members, keeper], **private)
    keep.click(bind(pick_keeper, engine), [found, n, keeper], [found, *outputs], **private)
    as_json.click(guard(export_json), found, exported, **private)
    as_csv.click(guard(export_csv), found, exported, **private)
    if engine.cfg.move_to is None:
        gr.Markdown("Review only: start the app with `--move-to DIR` to move duplicates aside (undoable).")
        return
    gr.Markdown(f"Duplicates are **moved** (never deleted) into `{engine.cfg.move_to}`, keeping their paths.")
    with gr.Row():
        move = gr.Button("Move duplicates aside...")
        confirm = gr.Button("Confirm: move them now", variant="stop", visible=False)
        undo_button = gr.Button("Undo last move")
    status = gr.Markdown()
    move.click(bind(plan, engine), found, [status, confirm], **private)
    confirm.click(bind(confirm_move, engine), found, [status, confirm], **heavy)
    undo_button.click(bind(undo_last, engine), None, status, **heavy)
