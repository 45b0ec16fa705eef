"""The Duplicates tab: the groups of `retrieval dedup` at a preset or chosen threshold, the keeper marked,
another keeper pickable, a file markable "not a duplicate" (it stays; marked again, it is one again), each member
with why it joined (kind, score, the check that passed; for keypoint matches the matched points drawn between the
two pictures) and its pixels, bytes and date beside the keeper's; export as JSON (the move plan `retrieval dedup
--plan` follows) / CSV; with `--move-to`, moving the reviewed duplicates aside exactly as `retrieval dedup --apply`
does (same checks, same undo log) and undoing the last move. Nothing is deleted.

Everything a person picks travels as a path that must be one of the group's members (checked against the
session's groups, kept by the server in gr.State); no path the browser sends is ever opened."""

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
from retrieval.dedup.formats import check_of, file_date, file_facts, groups_to_csv, groups_to_json, human_size, why
from retrieval.dedup.groups import Duplicate, Group, with_keeper
from retrieval.dedup.moves import plan_moves
from retrieval.dedup.report import draw_matches
from retrieval.dedup.run import apply_plan, undo
from retrieval.dedup.threshold import SCORE_PRESETS, THRESHOLD_PRESETS, Threshold

CUSTOM = "custom (slider)"
PRESET_CHOICES = [*THRESHOLD_PRESETS, CUSTOM]
TABLE_HEADERS = ["group", "role", "path", "score", "kind", "check", "pixels", "size", "date"]
STAYS = "stays (not a duplicate)"


@dataclasses.dataclass
class Found:
    """One session's groups: as found, then with the keepers the person picked and the files they marked "not a
    duplicate" (`stays`, paths: a file is a duplicate in one group at most)."""

    threshold: float | None
    groups: list[Group]
    stays: set[str] = dataclasses.field(default_factory=set)
    identity: dict[str, str] | None = None  # the index, as the exported plan names it
    similar: list[Group] = dataclasses.field(default_factory=list)  # shown apart, never in the move plan

    def reviewed(self) -> list[Group]:
        """The groups as the person left them: the members marked "not a duplicate" left out (and the groups
        that then have none)."""
        out = [Group(g.keep, tuple(d for d in g.duplicates if d.record.path not in self.stays)) for g in self.groups]
        return [g for g in out if g.duplicates]


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


def find(engine: Engine, preset: str, value: float, similar: bool = False) -> tuple:
    """The groups at the threshold; with `similar` (the checkbox), similar pictures are listed apart: different
    shots of one scene or drawings of one template, shown for review and never part of the move plan."""
    if not isinstance(similar, bool):
        raise InputError("similar: true or false")
    result = engine.duplicates(threshold(preset, value), similar=similar)
    identity = None if result.identity is None else dict(result.identity)
    found = Found(result.threshold, list(result.groups), identity=identity, similar=list(result.similar))
    return (found, *_render(engine, found, 0), similar_table(found))


def similar_table(found: Found) -> list[list[Any]]:
    """One row per similar picture: its group, path, score and the check's measurements (never moved)."""
    rows: list[list[Any]] = []
    for n, g in enumerate(found.similar, start=1):
        rows.append([n, "first", g.keep.path, "", ""])
        rows += [[n, "similar", d.record.path, round(d.score, 4), check_of(d)] for d in g.duplicates]
    return rows


def pick_keeper(engine: Engine, found: Found | None, n: float, path: str | None) -> tuple:
    if found is None or not found.groups:
        raise InputError("Find duplicates first.")
    i = _group_index(found, n)
    if not path:
        raise InputError("Choose the file to keep.")
    found.groups[i] = with_keeper(found.groups[i], path)
    found.stays.discard(path)  # the file kept is no longer "not a duplicate" of the one it replaced
    return (found, *_render(engine, found, i))


def toggle_stays(engine: Engine, found: Found | None, n: float, path: str | None) -> tuple:
    """Mark a member of the group "not a duplicate": it stays where it is and leaves the move plan. Marked
    again, it is a duplicate again. The keeper cannot be marked (pick another keeper instead)."""
    if found is None or not found.groups:
        raise InputError("Find duplicates first.")
    i = _group_index(found, n)
    g = found.groups[i]
    if not isinstance(path, str) or not any(d.record.path == path for d in g.duplicates):
        if isinstance(path, str) and path == g.keep.path:
            raise InputError("That file is the keeper: pick another file to keep first.")
        raise InputError("That file is not in this group; choose one from the list.")
    if path in found.stays:
        found.stays.discard(path)
    else:
        found.stays.add(path)
    return (found, *_render(engine, found, i))


def show_group(engine: Engine, found: Found | None, n: float) -> tuple:
    if found is None or not found.groups:
        return [], gr.update(choices=[], value=None)
    return _members(engine, found.groups[_group_index(found, n)], found.stays)


def _group_index(found: Found, n: float) -> int:
    try:
        wanted = int(n or 1)
    except (TypeError, ValueError, OverflowError):
        wanted = 1
    return max(0, min(len(found.groups) - 1, wanted - 1))


def _members(engine: Engine, g: Group, stays: set[str] | frozenset[str] = frozenset()) -> tuple:
    """The group side by side: the keeper, each member with why it joined and its pixels, bytes and date, and for
    a keypoint match the matched points drawn between the two pictures."""
    k = g.keep
    tiles = [(engine.indexed_thumbnail(k.id), f"KEEP · {k.path} · {file_facts(k)}")]
    for d in g.duplicates:
        r = d.record
        role = "STAYS (not a duplicate) · " if r.path in stays else ""
        tiles.append((engine.indexed_thumbnail(r.id), f"{role}{r.path} · {file_facts(r)} · {why(d)}"))
        ev = d.evidence
        if ev is not None and ev.matches is not None and len(ev.matches) and check_of(d) in ("keypoints", "none"):
            drawn = draw_matches(engine.indexed_thumbnail(k.id), engine.indexed_thumbnail(r.id), ev.matches)
            tiles.append((drawn, f"{len(ev.matches)} matched points: {k.path} (left) and {r.path} (right)"))
    paths = [r.path for r in g.records]
    return tiles, gr.update(choices=paths, value=g.keep.path)


def table(found: Found) -> list[list[Any]]:
    rows: list[list[Any]] = []
    for n, g in enumerate(found.groups, start=1):
        k = g.keep
        rows.append([n, "keep", k.path, "", "", "", f"{k.width}x{k.height}", human_size(k.size), file_date(k)])
        for d in g.duplicates:
            r = d.record
            role = STAYS if r.path in found.stays else "duplicate"
            rows.append(
                [
                    n,
                    role,
                    r.path,
                    round(d.score, 4),
                    kind(d),
                    check_of(d),
                    f"{r.width}x{r.height}",
                    human_size(r.size),
                    file_date(r),
                ]
            )
    return rows


def _render(engine: Engine, found: Found, i: int) -> tuple:
    reviewed = found.reviewed()
    n_dups = sum(len(g.duplicates) for g in reviewed)
    n_bytes = sum(d.record.size for g in reviewed for d in g.duplicates)
    t = "exact copies only" if found.threshold is None else f"score >= {found.threshold:.3f}"
    marked = f", {len(found.stays)} marked not a duplicate" if found.stays else ""
    text = (
        f"**{len(found.groups)} groups, {n_dups} duplicates ({human_size(n_bytes)})**{marked} among"
        f" {len(engine.index)} files, {t}. The keeper of each group is chosen by pixels, then size, then age, then"
        " path; pick another below, or mark a file not a duplicate: it stays."
    )
    if not found.groups:
        return text, [], gr.update(maximum=1, value=1), [], gr.update(choices=[], value=None)
    tiles, keeper = _members(engine, found.groups[i], found.stays)
    return text, table(found), gr.update(maximum=len(found.groups), value=i + 1), tiles, keeper


_EXPORTS: list[tempfile.TemporaryDirectory] = []


def _export_root() -> str:
    """A temporary folder for the export files, removed when the server process ends (Gradio serves copies)."""
    if not _EXPORTS:
        _EXPORTS.append(tempfile.TemporaryDirectory(prefix="retrieval-export-"))
    return _EXPORTS[0].name


def export(found: Found | None, fmt: str) -> str:
    """The current groups (with the keepers picked) as duplicates.json (the move plan, the files marked "not a
    duplicate" set not to move: `retrieval dedup --plan` follows it) or duplicates.csv, for download."""
    if found is None:
        raise InputError("Find duplicates first.")
    out = Path(tempfile.mkdtemp(dir=_export_root())) / f"duplicates.{fmt}"  # one folder per export: no races
    if fmt == "json":
        doc = groups_to_json(found.groups, found.threshold, index=found.identity, stays=found.stays)
        out.write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
    else:
        out.write_text(groups_to_csv(found.reviewed()), encoding="utf-8")
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
    p = plan_moves(found.reviewed(), engine.root, Path(engine.cfg.move_to))
    lines = [f"- {m.source} → {Path(engine.cfg.move_to) / m.destination}" for m in p.moves[:50]]
    more = f"\n- ... and {len(p.moves) - 50} more" if len(p.moves) > 50 else ""
    left = "".join(f"\n- leaving {s.path}: {s.reason}" for s in p.skipped)
    left += "".join(f"\n- leaving {path}: marked not a duplicate" for path in sorted(found.stays))
    size = human_size(sum(m.size for m in p.moves))
    text = f"**Would move {len(p.moves)} files ({size}) to {engine.cfg.move_to}**; keepers stay.\n\n"
    return text + "\n".join(lines) + more + left, gr.update(visible=bool(p.moves))


def confirm_move(engine: Engine, found: Found | None) -> tuple:
    """Move the duplicates aside (each re-checked first), logged for undo; the index is not changed."""
    if engine.cfg.move_to is None or found is None:
        raise InputError("Nothing to move.")
    move_to = Path(engine.cfg.move_to)
    report = apply_plan(plan_moves(found.reviewed(), engine.root, move_to), engine.root, move_to)
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
        similar = gr.Checkbox(False, label="also list similar pictures (other shots, same template: never moved)")
        go = gr.Button("Find duplicates", variant="primary")
    summary = gr.Markdown()
    rows = gr.Dataframe(headers=TABLE_HEADERS, label="all groups", interactive=False, max_height=300)
    with gr.Row():
        n = gr.Number(value=1, minimum=1, maximum=1, precision=0, label="group")
        keeper = gr.Dropdown(choices=[], label="file in this group")
        keep = gr.Button("Keep this one instead")
        not_dup = gr.Button("Not a duplicate (it stays) / undo that")
    members = gr.Gallery(
        label="the group side by side: keeper first; each file's pixels, size, date and why it joined",
        columns=6,
        height=300,
    )
    with gr.Row():
        as_json = gr.Button("Export JSON")
        as_csv = gr.Button("Export CSV")
        exported = gr.File(label="export", interactive=False)
    outputs = [summary, rows, n, members, keeper]
    preset.change(guard(preset_value), preset, value, **private)
    similar_rows = gr.Dataframe(
        headers=["group", "role", "path", "score", "check"],
        label="similar pictures: shown for review, never moved",
        interactive=False,
        max_height=200,
    )
    go.click(bind(find, engine), [preset, value, similar], [found, *outputs, similar_rows], **heavy)
    n.change(bind(show_group, engine), [found, n], [members, keeper], **private)
    keep.click(bind(pick_keeper, engine), [found, n, keeper], [found, *outputs], **private)
    not_dup.click(bind(toggle_stays, engine), [found, n, keeper], [found, *outputs], **private)
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
