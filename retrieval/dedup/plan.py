"""The move plan a person reviews: `retrieval dedup --format json --output plan.json`, edited, then
`retrieval dedup --plan plan.json --move-to DIR --apply` moves exactly what it lists.

The file (`formats.groups_to_json`, FORMAT "retrieval-dedup-plan", `format_version` PLAN_VERSION):

    {"format": ..., "format_version": 1,
     "index": {"generation": "gen-0003", "manifest_sha256": "...", "root": "/photos"},
     "threshold": 0.28,
     "groups": [{"keep": "a.png", "keep_sha256": "...",
                 "duplicates": [{"path", "sha256", "score", "kind", "check", "move": true}, ...]}],
     "similar": [{"keep": ..., "keep_sha256": ..., "similar": [{..., "move": false}]}]}

A person's edits: a member deleted from its list, or set `"move": false`, stays; another `keep` (path and sha256)
keeps that file instead; a similar member moves only when set `"move": true` (a member of kind "similar" without
an explicit `"move": true` is refused, wherever it is listed).

`read_plan` checks the whole file before anything moves and refuses it (InputError, one line, nothing moved) when:
it is not a plan or is newer than this program; the index's generation or manifest differs from the plan's; a path
is not a safe relative path, or leads outside the root after symlinks; a path or its sha256 is not the catalog's;
a file's current sha256 differs from the plan's; a keeper is listed to move; a file is listed to move twice; a
move would be refused at apply time (`moves.check_moves`: a symlink, a destination taken). Then
`moves.apply_moves` makes exactly those moves, each re-checked and logged for `retrieval undo`.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from plumbing.errors import FormatVersionError, InputError
from plumbing.filenames import printable
from plumbing.hashing import content_hash
from retrieval.dedup.groups import Duplicate, Group, normalise_path
from retrieval.dedup.moves import MovePlan, PlannedMove, check_move_target, check_moves
from retrieval.records import FileRecord

if TYPE_CHECKING:
    from retrieval.searching.searcher import SearchIndex

PLAN_FORMAT = "retrieval-dedup-plan"
PLAN_VERSION = 1
MAX_PLAN_BYTES = 256 << 20  # a plan lists each file once with a few short fields: 1M files is ~300 MB at most


def index_identity(index: SearchIndex) -> dict[str, str]:
    """What a plan names its index by: the live generation, the sha256 of its manifest.json, the root."""
    manifest = index.generation.path / "manifest.json"
    digest = hashlib.sha256(manifest.read_bytes()).hexdigest()
    return {"generation": index.manifest.generation, "manifest_sha256": digest, "root": str(index.root)}


@dataclass(frozen=True)
class ReadPlan:
    """A plan checked against its index and the files: the groups as the person left them (only the members
    set to move), and the moves."""

    groups: tuple[Group, ...]
    moves: MovePlan
    threshold: float | None


def read_plan(path: Path, index: SearchIndex, move_to: Path) -> ReadPlan:
    """The plan at `path`, checked (see the module docstring); InputError naming the first problem."""
    doc = _load(Path(path))
    where = printable(str(path))
    root_r, move_r = check_move_target(index.root, move_to)
    _check_identity(doc, index, where)
    by_path = {normalise_path(r.path): r for r in index.records}
    hashes: dict[str, str] = {}  # current sha256 by path, each file read once

    def record(rel: object, sha: object, what: str) -> FileRecord:
        if not isinstance(rel, str) or not rel or "\x00" in rel:
            raise InputError(f"{where}: {what}: a path must be a non-empty string")
        shown = printable(rel)
        norm = normalise_path(rel)
        if os.path.isabs(rel) or norm == ".." or norm.startswith("../") or norm == ".":
            raise InputError(f"{where}: {what} {shown} is outside the indexed folder {printable(str(root_r))}")
        try:
            real = (root_r / norm).resolve()
        except (OSError, RuntimeError) as e:
            raise InputError(f"{where}: {what} {shown}: cannot be resolved ({e})") from None
        if not real.is_relative_to(root_r):
            raise InputError(f"{where}: {what} {shown} leads outside the indexed folder (to {printable(str(real))})")
        rec = by_path.get(norm)
        if rec is None:
            raise InputError(f"{where}: {what} {shown} is not in the index; plan again (retrieval dedup)")
        if sha != rec.content_hash:
            raise InputError(f"{where}: {what} {shown}: its sha256 is not the one indexed; plan again")
        if norm not in hashes:
            try:
                hashes[norm] = content_hash(root_r / norm)
            except OSError as e:
                raise InputError(f"{where}: {what} {shown} cannot be read ({e.strerror or e}); nothing moved") from None
        if hashes[norm] != sha:
            raise InputError(f"{where}: {what} {shown} changed since the plan (sha256 differs); nothing moved")
        return rec

    groups: list[Group] = []
    moves: list[PlannedMove] = []
    keepers: set[str] = set()
    listed: dict[str, str] = {}
    for section, members_key in (("groups", "duplicates"), ("similar", "similar")):
        entries = doc.get(section, [])
        if not isinstance(entries, list):
            raise InputError(f"{where}: {section!r} must be a list")
        for n, g in enumerate(entries, start=1):
            what = f"{section} {n}"
            if not isinstance(g, dict) or not isinstance(g.get(members_key, []), list):
                raise InputError(f"{where}: {what}: expected {{'keep', 'keep_sha256', {members_key!r}: [...]}}")
            keep = record(g.get("keep"), g.get("keep_sha256"), f"{what}: keeper")
            keep_rel = normalise_path(keep.path)
            dups: list[Duplicate] = []
            for m in g.get(members_key, []):
                if not isinstance(m, dict):
                    raise InputError(f"{where}: {what}: each member is an object with path and sha256")
                move = m.get("move", "similar" if m.get("kind") == "similar" else True)
                if move == "similar":
                    raise InputError(
                        f"{where}: {what}: {printable(str(m.get('path')))} is only similar; it moves only when"
                        ' set "move": true'
                    )
                if not isinstance(move, bool):
                    raise InputError(f'{where}: {what}: "move" must be true or false')
                if not move:
                    continue
                rec = record(m.get("path"), m.get("sha256"), f"{what}: member")
                rel = normalise_path(rec.path)
                if rel in listed:
                    raise InputError(f"{where}: {printable(rel)} is listed to move twice ({listed[rel]} and {what})")
                listed[rel] = what
                kind = m.get("kind") if m.get("kind") in ("exact", "near", "similar") else "near"
                score = m.get("score")
                score = float(score) if isinstance(score, (int, float)) and not isinstance(score, bool) else 0.0
                dups.append(Duplicate(rec, score, kind))
                moves.append(
                    PlannedMove(rel, keep_rel, rec.size, rec.content_hash, keep.size, keep.content_hash, score, kind)
                )
            if dups:  # a keeper of a group that moves nothing (a similar group left as is) constrains nothing
                keepers.add(keep_rel)
                groups.append(Group(keep, tuple(dups)))
    for rel, what in listed.items():
        if rel in keepers:
            raise InputError(f"{where}: {printable(rel)} is a keeper and also listed to move ({what}); nothing moved")
    refused = check_moves(moves, root_r, move_r)
    if refused:
        s = refused[0]
        raise InputError(f"{where}: {printable(s.path)}: {printable(s.reason)}; nothing moved")
    t = doc.get("threshold")
    threshold = float(t) if isinstance(t, (int, float)) and not isinstance(t, bool) else None
    return ReadPlan(tuple(groups), MovePlan(tuple(moves)), threshold)


def _load(path: Path) -> dict[str, Any]:
    where = printable(str(path))
    try:
        with open(path, "rb") as f:
            raw = f.read(MAX_PLAN_BYTES + 1)
    except OSError as e:
        raise InputError(f"{where}: cannot read the plan ({e.strerror or e})") from None
    if len(raw) > MAX_PLAN_BYTES:
        raise InputError(f"{where}: larger than {MAX_PLAN_BYTES >> 20} MB; not a plan")
    try:
        doc = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        raise InputError(f"{where}: not a JSON plan ({type(e).__name__})") from None
    if not isinstance(doc, dict) or doc.get("format") != PLAN_FORMAT:
        raise InputError(f"{where}: not a dedup plan (write one with retrieval dedup --format json --output FILE)")
    version = doc.get("format_version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise InputError(f"{where}: damaged plan (no format_version)")
    if version > PLAN_VERSION:
        raise FormatVersionError(
            f"{where}: plan format {version} is newer than this program reads ({PLAN_VERSION}); upgrade retrieval"
        )
    return doc


def _check_identity(doc: Mapping[str, Any], index: SearchIndex, where: str) -> None:
    given = doc.get("index")
    if not isinstance(given, dict):
        raise InputError(f"{where}: the plan names no index (write it with retrieval dedup --format json)")
    now = index_identity(index)
    for key in ("generation", "manifest_sha256"):
        if given.get(key) != now[key]:
            raise InputError(
                f"{where}: made on index {printable(str(given.get('generation')))}, the index is now"
                f" {now['generation']} ({key} differs); plan again; nothing moved"
            )


__all__ = ["PLAN_FORMAT", "PLAN_VERSION", "ReadPlan", "index_identity", "read_plan"]
