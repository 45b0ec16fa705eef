"""moves: plan, apply (re-checked, logged before acting) and undo, byte for byte; nothing is deleted."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest

from plumbing.errors import FormatVersionError, InputError
from retrieval.dedup import moves
from retrieval.dedup.groups import Duplicate, Group
from retrieval.dedup.moves import apply_moves, plan_moves, undo_moves
from retrieval.records import FileRecord


class Crash(Exception):
    """Stands for the process dying: not an OSError, so apply_moves does not catch it."""


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def snapshot(folder: Path) -> dict[str, str]:
    """{relative path: sha256 of the bytes} for every file; symlinks as their target."""
    out = {}
    for p in sorted(folder.rglob("*")):
        rel = p.relative_to(folder).as_posix()
        if p.is_symlink():
            out[rel] = "link->" + os.readlink(p)
        elif p.is_file():
            out[rel] = sha(p.read_bytes())
    return out


def record_of(root: Path, rel: str, i: int) -> FileRecord:
    data = (root / rel).read_bytes()
    st = (root / rel).stat()
    return FileRecord(i, rel, len(data), st.st_mtime_ns, sha(data), 64, 64)


def write(root: Path, rel: str, data: bytes) -> None:
    (root / rel).parent.mkdir(parents=True, exist_ok=True)
    (root / rel).write_bytes(data)


@pytest.fixture
def tree(tmp_path):
    """photos/ with two groups: a/keep.jpg (+ exact copy, + near) and x.jpg (+ exact copy)."""
    root = tmp_path / "photos"
    k1 = os.urandom(3000)
    files = {
        "a/keep.jpg": k1,
        "a/dup.jpg": k1,
        "b/c/near.jpg": os.urandom(2000),
        "x.jpg": b"x" * 500,
        "y/x copy.jpg": b"x" * 500,
        "other.jpg": b"unrelated",
    }
    for rel, data in files.items():
        write(root, rel, data)
    r = {rel: record_of(root, rel, i) for i, rel in enumerate(files)}
    groups = [
        Group(
            r["a/keep.jpg"],
            (Duplicate(r["a/dup.jpg"], 1.0, "exact"), Duplicate(r["b/c/near.jpg"], 0.93, "near")),
        ),
        Group(r["x.jpg"], (Duplicate(r["y/x copy.jpg"], 1.0, "exact"),)),
    ]
    return root, tmp_path / "photos-duplicates", groups, r


def test_apply_then_undo_restores_the_tree_byte_for_byte(tree, tmp_path):
    root, move_to, groups, _ = tree
    before = snapshot(root)
    plan = plan_moves(groups, root, move_to)
    assert sorted(m.source for m in plan) == ["a/dup.jpg", "b/c/near.jpg", "y/x copy.jpg"]
    assert plan.skipped == ()

    report = apply_moves(plan, root, move_to, tmp_path / "undo.jsonl")
    assert len(report.moved) == 3 and report.skipped == ()
    assert report.bytes_moved == 3000 + 2000 + 500
    after = snapshot(root)
    assert after == {k: v for k, v in before.items() if k not in {"a/dup.jpg", "b/c/near.jpg", "y/x copy.jpg"}}
    assert snapshot(move_to) == {k: before[k] for k in ("a/dup.jpg", "b/c/near.jpg", "y/x copy.jpg")}

    lines = [json.loads(line) for line in (tmp_path / "undo.jsonl").read_text().splitlines()]
    assert [rec["type"] for rec in lines] == ["header"] + ["move", "done"] * 3 + ["end"]

    undo = undo_moves(tmp_path / "undo.jsonl")
    assert len(undo.restored) == 3 and undo.ok
    assert snapshot(root) == before
    assert snapshot(move_to) == {}

    again = undo_moves(tmp_path / "undo.jsonl")  # idempotent
    assert again.restored == () and len(again.already_in_place) == 3 and again.ok
    assert snapshot(root) == before


def test_moves_across_filesystems_copy_verify_and_undo(tree, tmp_path, monkeypatch):
    root, move_to, groups, _ = tree
    monkeypatch.setattr(moves, "_same_filesystem", lambda src, dst_dir: False)
    before = snapshot(root)
    report = apply_moves(plan_moves(groups, root, move_to), root, move_to, tmp_path / "undo.jsonl")
    assert len(report.moved) == 3
    assert snapshot(move_to) == {k: before[k] for k in ("a/dup.jpg", "b/c/near.jpg", "y/x copy.jpg")}
    assert not any(p.name.endswith(".partial") for p in move_to.rglob("*"))
    assert undo_moves(tmp_path / "undo.jsonl").ok
    assert snapshot(root) == before


def test_file_changed_since_indexing_is_skipped(tree, tmp_path):
    root, move_to, groups, _ = tree
    plan = plan_moves(groups, root, move_to)
    write(root, "b/c/near.jpg", os.urandom(2000))  # same size, different bytes
    changed = snapshot(root)["b/c/near.jpg"]
    report = apply_moves(plan, root, move_to, tmp_path / "undo.jsonl")
    assert [(s.path, s.reason) for s in report.skipped] == [("b/c/near.jpg", "changed since indexing")]
    assert sorted(m.source for m in report.moved) == ["a/dup.jpg", "y/x copy.jpg"]
    assert snapshot(root)["b/c/near.jpg"] == changed
    assert not (move_to / "b/c/near.jpg").exists()


def test_destination_collision_is_never_overwritten(tree, tmp_path):
    root, move_to, groups, _ = tree
    write(move_to, "a/dup.jpg", b"already here")
    plan = plan_moves(groups, root, move_to)
    assert [s.path for s in plan.skipped] == ["a/dup.jpg"] and "exists" in plan.skipped[0].reason
    write(move_to, "y/x copy.jpg", b"appeared after planning")
    report = apply_moves(plan, root, move_to, tmp_path / "undo.jsonl")
    assert [s.path for s in report.skipped] == ["y/x copy.jpg"] and "not overwritten" in report.skipped[0].reason
    assert (move_to / "a/dup.jpg").read_bytes() == b"already here"
    assert (move_to / "y/x copy.jpg").read_bytes() == b"appeared after planning"
    assert (root / "a/dup.jpg").exists() and (root / "y/x copy.jpg").exists()


def test_keeper_and_its_aliases_are_never_moved(tree, tmp_path):
    root, move_to, groups, r = tree
    os.link(root / "a/keep.jpg", root / "a/hard.jpg")
    os.symlink("keep.jpg", root / "a/sym.jpg")
    write(root, "real.jpg", b"real")
    os.symlink("real.jpg", root / "keeper_link.jpg")  # a keeper that is a symlink to its duplicate
    keep = r["a/keep.jpg"]
    aliases = Group(
        keep,
        (
            Duplicate(keep, 1.0, "exact"),  # the keeper itself
            Duplicate(FileRecord(10, "./a/keep.jpg", keep.size, 0, keep.content_hash, 64, 64), 1.0, "exact"),
            Duplicate(record_of(root, "a/hard.jpg", 11), 1.0, "exact"),
            Duplicate(record_of(root, "a/sym.jpg", 12), 1.0, "exact"),
            Duplicate(r["a/dup.jpg"], 1.0, "exact"),
        ),
    )
    link_group = Group(
        record_of(root, "keeper_link.jpg", 13), (Duplicate(record_of(root, "real.jpg", 14), 1.0, "exact"),)
    )
    plan = plan_moves([aliases, link_group], root, move_to)
    assert [m.source for m in plan] == ["a/dup.jpg"]
    reasons = {s.path: s.reason for s in plan.skipped}
    assert set(reasons) == {"a/keep.jpg", "./a/keep.jpg", "a/hard.jpg", "a/sym.jpg", "real.jpg"}
    assert "keeper" in reasons["a/keep.jpg"] and "keeper" in reasons["./a/keep.jpg"]
    assert "hard link" in reasons["a/hard.jpg"] and "symbolic link" in reasons["a/sym.jpg"]
    assert "keeper" in reasons["real.jpg"]

    # even a hand-made plan that moves a hard link of the keeper is refused at apply time
    bad = moves.PlannedMove(
        "a/hard.jpg", "a/keep.jpg", keep.size, keep.content_hash, keep.size, keep.content_hash, 1.0, "exact"
    )
    # ... and so is one that moves the keeper of another move in the plan
    x = record_of(root, "x.jpg", 20)
    moves_keeper = moves.PlannedMove(
        "a/keep.jpg", "y/x copy.jpg", keep.size, keep.content_hash, x.size, x.content_hash, 1.0, "exact"
    )
    report = apply_moves([*plan, bad, moves_keeper], root, move_to, tmp_path / "undo.jsonl")
    assert [m.source for m in report.moved] == ["a/dup.jpg"]
    assert "same file as its keeper" in report.skipped[0].reason
    assert report.skipped[1] == moves.SkippedMove("a/keep.jpg", "is a keeper; keepers are never moved")
    for g in (aliases, link_group):  # never every copy: each keeper is still there
        assert (root / g.keep.path).exists()
    assert (root / "keeper_link.jpg").read_bytes() == b"real"


def test_missing_or_changed_keeper_blocks_its_duplicates(tree, tmp_path):
    root, move_to, groups, _ = tree
    plan = plan_moves(groups, root, move_to)
    (root / "a/keep.jpg").rename(tmp_path / "elsewhere.jpg")
    write(root, "x.jpg", b"y" * 500)
    report = apply_moves(plan, root, move_to, tmp_path / "undo.jsonl")
    assert report.moved == ()
    reasons = {s.path: s.reason for s in report.skipped}
    assert reasons["a/dup.jpg"] == reasons["b/c/near.jpg"] == "keeper a/keep.jpg is missing"
    assert reasons["y/x copy.jpg"] == "keeper x.jpg changed since indexing"
    # and a plan made while a keeper is missing plans nothing for its group
    replan = plan_moves(groups, root, move_to)
    assert [m.source for m in replan] == ["y/x copy.jpg"]
    assert {s.path: s.reason for s in replan.skipped} == {
        "a/dup.jpg": "keeper a/keep.jpg is missing",
        "b/c/near.jpg": "keeper a/keep.jpg is missing",
    }


def test_crash_mid_way_then_undo_restores_everything(tree, tmp_path, monkeypatch):
    root, move_to, groups, _ = tree
    before = snapshot(root)
    real_move = moves._move_file
    calls = []

    def crash_on_third(src, dst, expected_hash):
        calls.append(src)
        if len(calls) == 3:
            raise Crash("power cut")
        real_move(src, dst, expected_hash)

    monkeypatch.setattr(moves, "_move_file", crash_on_third)
    log_path = tmp_path / "undo.jsonl"
    with pytest.raises(Crash):
        apply_moves(plan_moves(groups, root, move_to), root, move_to, log_path)
    types = [json.loads(line)["type"] for line in log_path.read_text().splitlines()]
    assert types == ["header", "move", "done", "move", "done", "move"]  # the 3rd intent, logged first
    assert len(snapshot(move_to)) == 2

    report = undo_moves(log_path)
    assert len(report.restored) == 2 and len(report.already_in_place) == 1 and report.ok
    assert snapshot(root) == before


def test_crash_between_link_and_unlink_then_undo(tree, tmp_path, monkeypatch):
    root, move_to, groups, _ = tree
    before = snapshot(root)

    def die(path, *args, **kwargs):
        raise Crash(f"died before unlinking {path}")

    monkeypatch.setattr(os, "unlink", die)
    with pytest.raises(Crash):
        apply_moves(plan_moves(groups, root, move_to), root, move_to, tmp_path / "undo.jsonl")
    monkeypatch.undo()
    assert (move_to / "a/dup.jpg").samefile(root / "a/dup.jpg")  # two names, one file
    report = undo_moves(tmp_path / "undo.jsonl")
    assert report.ok and len(report.restored) == 1
    assert snapshot(root) == before and snapshot(move_to) == {}


def test_crash_after_cross_filesystem_copy_then_undo(tree, tmp_path, monkeypatch):
    root, move_to, groups, _ = tree
    before = snapshot(root)
    monkeypatch.setattr(moves, "_same_filesystem", lambda src, dst_dir: False)
    real_place = moves._rename_no_replace

    def place_then_die(src, dst):
        real_place(src, dst)
        raise Crash("died before unlinking the source")

    monkeypatch.setattr(moves, "_rename_no_replace", place_then_die)
    with pytest.raises(Crash):
        apply_moves(plan_moves(groups, root, move_to), root, move_to, tmp_path / "undo.jsonl")
    report = undo_moves(tmp_path / "undo.jsonl")
    assert report.ok and report.already_in_place == (str((root / "a/dup.jpg").resolve()),)
    assert report.extra_copies == (str((move_to / "a/dup.jpg").resolve()),)  # a verified copy, left alone
    assert snapshot(root) == before


def test_undo_never_overwrites_a_file_that_reappeared(tree, tmp_path):
    root, move_to, groups, _ = tree
    apply_moves(plan_moves(groups, root, move_to), root, move_to, tmp_path / "undo.jsonl")
    write(root, "a/dup.jpg", b"a new file with the old name")
    write(move_to, "y/x copy.jpg", b"edited after the move")
    report = undo_moves(tmp_path / "undo.jsonl")
    problems = {Path(p.path).relative_to(root.resolve()).as_posix(): p.reason for p in report.problems}
    assert set(problems) == {"a/dup.jpg", "y/x copy.jpg"}
    assert "different file" in problems["a/dup.jpg"] and "changed" in problems["y/x copy.jpg"]
    assert len(report.restored) == 1  # b/c/near.jpg
    assert (root / "a/dup.jpg").read_bytes() == b"a new file with the old name"
    assert (move_to / "a/dup.jpg").exists() and (move_to / "y/x copy.jpg").exists()


def test_move_to_must_not_overlap_the_root(tree, tmp_path):
    root, _, groups, _ = tree
    for bad in (root, root / "dups", tmp_path):
        with pytest.raises(InputError, match="outside the indexed folder"):
            plan_moves(groups, root, bad)
        with pytest.raises(InputError, match="outside the indexed folder"):
            apply_moves([], root, bad, tmp_path / "undo.jsonl")
    (tmp_path / "a-file").write_bytes(b"")
    with pytest.raises(InputError, match="a-file.*not a folder"):
        apply_moves([], root, tmp_path / "a-file", tmp_path / "undo.jsonl")
    with pytest.raises(InputError, match="a-file.*move-to folder"):
        apply_moves([], root, tmp_path / "a-file" / "sub", tmp_path / "undo.jsonl")


def test_bad_move_logs_are_input_errors(tree, tmp_path):
    root, move_to, groups, _ = tree
    with pytest.raises(InputError, match="missing.jsonl.*no such move log"):
        undo_moves(tmp_path / "missing.jsonl")

    log_path = tmp_path / "undo.jsonl"
    apply_moves(plan_moves(groups, root, move_to), root, move_to, log_path)
    good = log_path.read_text()
    lines = good.splitlines(keepends=True)

    bad = tmp_path / "bad.jsonl"
    bad.write_text(lines[0] + "{not json\n" + "".join(lines[1:]))
    with pytest.raises(InputError, match="bad.jsonl: line 2 is not valid JSON"):
        undo_moves(bad)
    bad.write_text("".join(lines[1:]))
    with pytest.raises(InputError, match="bad.jsonl: not a move log"):
        undo_moves(bad)
    bad.write_text(lines[0] + json.dumps({"type": "move", "source": "x"}) + "\n")
    with pytest.raises(InputError, match="line 2: a move record needs"):
        undo_moves(bad)
    move = json.loads(lines[1])
    bad.write_text(lines[0] + json.dumps({**move, "source": "x"}) + "\n")
    with pytest.raises(InputError, match="line 2: the source x is not an absolute path"):
        undo_moves(bad)
    header = json.loads(lines[0])
    bad.write_text(json.dumps({**header, "version": 99}) + "\n")
    with pytest.raises(FormatVersionError, match="version 99"):
        undo_moves(bad)
    with pytest.raises(InputError, match="bad.jsonl"):  # apply never appends to a foreign file
        bad.write_text("my shopping list\n")
        apply_moves([], root, move_to, bad)

    log_path.write_text(good + '{"type": "mo')  # a torn last line (crash while writing) is ignored
    assert len(undo_moves(log_path).restored) == 3
    assert not (move_to / "a/dup.jpg").exists()


def test_a_log_with_two_sessions_is_undone_whole(tree, tmp_path):
    """apply_moves appends to an existing move log: each session is checked against its own header."""
    root, move_to, groups, _ = tree
    before = snapshot(root)
    log_path = tmp_path / "undo.jsonl"
    plan = plan_moves(groups, root, move_to)
    apply_moves(plan.moves[:1], root, move_to, log_path)
    apply_moves(plan.moves[1:], root, move_to, log_path)
    headers = [json.loads(line) for line in log_path.read_text().splitlines() if '"header"' in line]
    assert len(headers) == 2 and headers[0]["session"] != headers[1]["session"]
    report = undo_moves(log_path)
    assert report.ok and len(report.restored) == 3
    assert snapshot(root) == before
