"""Probe 1 (issue 12): `undo` must never remove the last copy of a file, whatever the move log says, and
`dedup --apply` must never move a file onto itself or back into the indexed folder through a symlink.
Since issue 25 such logs are refused whole before anything moves (tests/reliability/undo/test_undo_edited_log.py)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from plumbing.errors import InputError
from retrieval.dedup.groups import Duplicate, Group
from retrieval.dedup.moves import MOVE_LOG_FORMAT, MOVE_LOG_VERSION, apply_moves, plan_moves, undo_moves
from retrieval.records import FileRecord
from tests.reliability.conftest import one_line_error, run_cli, sha, snapshot


def write_log(path: Path, moves: list[tuple[Path, Path, str]], root: Path, move_to: Path) -> Path:
    header = {"type": "header", "format": MOVE_LOG_FORMAT, "version": MOVE_LOG_VERSION, "session": "s"}
    lines = [{**header, "root": str(root), "move_to": str(move_to)}]
    for seq, (src, dst, digest) in enumerate(moves):
        lines.append(
            {"type": "move", "session": "s", "seq": seq, "source": str(src), "destination": str(dst), "sha256": digest}
        )
        lines.append({"type": "done", "session": "s", "seq": seq})
    path.write_text("".join(json.dumps(rec) + "\n" for rec in lines))
    return path


def test_undo_keeps_the_only_copy_when_source_and_destination_are_one_path(tmp_path, monkeypatch, capsys):
    """Issue 25 made this a refusal of the whole log: the destination is not under the move-to folder."""
    photo = tmp_path / "photos" / "a.png"
    photo.parent.mkdir()
    photo.write_bytes(b"the only copy" * 100)
    (tmp_path / "moved").mkdir()
    digest = sha(photo)
    log = write_log(tmp_path / "undo.jsonl", [(photo, photo, digest)], photo.parent, tmp_path / "moved")

    with pytest.raises(InputError, match="line 2: the destination .* is not"):
        undo_moves(log)
    assert photo.is_file() and sha(photo) == digest

    code, _, err = run_cli(monkeypatch, capsys, "undo", str(log))
    one_line_error(code, err, str(log), "line 2")
    assert photo.is_file() and sha(photo) == digest


def test_undo_keeps_the_only_copy_reached_through_a_symlinked_folder(tmp_path):
    """moved/sub is a symlink to photos/sub: the 'moved copy' is the original itself; refused before acting."""
    photo = tmp_path / "photos" / "sub" / "a.png"
    photo.parent.mkdir(parents=True)
    photo.write_bytes(b"the only copy" * 100)
    moved = tmp_path / "moved"
    moved.mkdir()
    (moved / "sub").symlink_to(photo.parent, target_is_directory=True)
    digest = sha(photo)
    log = write_log(tmp_path / "undo.jsonl", [(photo, moved / "sub" / "a.png", digest)], tmp_path / "photos", moved)

    with pytest.raises(InputError, match="outside the move-to folder"):
        undo_moves(log)
    assert photo.is_file() and sha(photo) == digest


def test_undo_checks_the_hash_before_dropping_a_second_name(tmp_path):
    """Two hard links of one file whose bytes are not the recorded ones: not ours to drop."""
    photo = tmp_path / "photos" / "a.png"
    photo.parent.mkdir()
    photo.write_bytes(b"edited after the move")
    twin = tmp_path / "moved" / "a.png"
    twin.parent.mkdir()
    os.link(photo, twin)
    report = undo_moves(write_log(tmp_path / "undo.jsonl", [(photo, twin, "0" * 64)], photo.parent, twin.parent))
    assert photo.is_file() and twin.is_file() and len(report.problems) == 1


def test_an_interrupted_hard_link_move_is_still_undone(tmp_path):
    """The general rule keeps the legitimate case: two distinct names of one file, the recorded bytes."""
    photo = tmp_path / "photos" / "a.png"
    photo.parent.mkdir()
    photo.write_bytes(b"bytes" * 50)
    twin = tmp_path / "moved" / "a.png"
    twin.parent.mkdir()
    os.link(photo, twin)
    report = undo_moves(write_log(tmp_path / "undo.jsonl", [(photo, twin, sha(photo))], photo.parent, twin.parent))
    assert report.ok and report.restored == (str(photo),)
    assert photo.is_file() and not twin.exists()


def _group(root: Path) -> list[Group]:
    def rec(i: int, rel: str) -> FileRecord:
        p = root / rel
        return FileRecord(i, rel, p.stat().st_size, p.stat().st_mtime_ns, sha(p), 8, 8)

    return [Group(rec(0, "keep.png"), (Duplicate(rec(1, "sub/copy.png"), 1.0, "exact"),))]


def test_apply_refuses_a_destination_that_leads_back_into_the_root(tmp_path):
    """move_to/sub is a symlink to a folder inside the root: the 'moved' file would stay indexed, and
    a destination there could be its own source."""
    root = tmp_path / "photos"
    (root / "sub").mkdir(parents=True)
    (root / "other").mkdir()
    (root / "keep.png").write_bytes(b"same bytes")
    (root / "sub" / "copy.png").write_bytes(b"same bytes")
    move_to = tmp_path / "dups"
    move_to.mkdir()
    (move_to / "sub").symlink_to(root / "other", target_is_directory=True)
    before = snapshot(root)

    plan = plan_moves(_group(root), root, move_to)
    assert plan.moves == () and "symbolic link" in plan.skipped[0].reason

    forced = plan_moves(_group(root), root, tmp_path / "elsewhere").moves  # planned before the link appeared
    report = apply_moves(forced, root, move_to, tmp_path / "undo.jsonl")
    assert report.moved == () and "symbolic link" in report.skipped[0].reason
    assert snapshot(root) == before

    (move_to / "sub").unlink()
    (move_to / "sub").symlink_to(root / "sub", target_is_directory=True)  # the destination is the source
    report = apply_moves(forced, root, move_to, tmp_path / "undo2.jsonl")
    assert report.moved == () and snapshot(root) == before
