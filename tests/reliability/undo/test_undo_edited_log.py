"""Issue 25 (items 2, 3 and the undo parts of 7): `retrieval undo` reads a log a person (or anyone who can
write to the move-to folder) may have edited. The whole log is checked before anything moves: every
record's original path must resolve inside the header's root and its moved copy inside move_to, at the
same relative path; a record that fails refuses the log in one line, and nothing moves. Undo never removes
a name under the root and never creates a folder outside it; an interrupted cross-device undo leaves no
temporary copy that the next run does not find and report."""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

import pytest

from plumbing.errors import InputError
from retrieval.dedup import moves
from retrieval.dedup.groups import Duplicate, Group
from retrieval.dedup.moves import apply_moves, plan_moves, undo_moves
from retrieval.records import FileRecord
from tests.reliability.conftest import make_image, one_line_error, run_cli, sha, snapshot
from tests.reliability.undo import undo_fuzz
from tests.reliability.undo.undo_fuzz import tree_of


class Crash(Exception):
    """Stands for the process dying (SIGKILL): not an OSError, so no cleanup code runs."""


@pytest.fixture
def world(tmp_path) -> dict[str, Path]:
    """photos/ (the root: keep.png, sub/copy.png moved to dups/ by a real apply), dups/ with its undo log,
    and outside/ (a stranger's files, and a home folder without .config)."""
    root, dups, outside = tmp_path / "photos", tmp_path / "dups", tmp_path / "outside"
    (root / "sub").mkdir(parents=True)
    (root / "keep.png").write_bytes(b"same bytes" * 100)
    (root / "sub" / "copy.png").write_bytes(b"same bytes" * 100)
    (root / "other.png").write_bytes(b"an unrelated photo")
    (outside / "home").mkdir(parents=True)
    (outside / "stranger.png").write_bytes(b"somebody else's file")
    (outside / "payload.desktop").write_bytes(b"[Desktop Entry]\nExec=evil\n")

    def rec(i: int, rel: str) -> FileRecord:
        p = root / rel
        return FileRecord(i, rel, p.stat().st_size, p.stat().st_mtime_ns, sha(p), 8, 8)

    groups = [Group(rec(0, "keep.png"), (Duplicate(rec(1, "sub/copy.png"), 1.0, "exact"),))]
    log = dups / "undo.jsonl"
    report = apply_moves(plan_moves(groups, root, dups), root, dups, log)
    assert len(report.moved) == 1 and (dups / "sub" / "copy.png").is_file()
    return {"root": root.resolve(), "dups": dups.resolve(), "outside": outside.resolve(), "log": log, "tmp": tmp_path}


def header(w: dict[str, Path]) -> dict:
    return json.loads(w["log"].read_text().splitlines()[0])


def move_record(source: object, destination: object, digest: str, session: str = "") -> dict:
    return {
        "type": "move",
        "session": session,
        "seq": 99,
        "source": source,
        "destination": destination,
        "sha256": digest,
    }


def add_records(w: dict[str, Path], *records: dict) -> None:
    session = header(w)["session"]
    with open(w["log"], "a", encoding="utf-8") as f:
        for r in records:
            f.write(json.dumps({**r, "session": r["session"] or session}) + "\n")


def state(w: dict[str, Path]) -> dict[str, dict[str, str]]:
    return {k: tree_of(w[k]) for k in ("root", "dups", "outside")}


# ------------------------------------------------------------------------------------------- item 2


def _outside_move_to(w: dict[str, Path]) -> list[dict]:
    """The moved copy named by the record is a stranger's file: undo would pull it into the root."""
    return [
        move_record(
            str(w["root"] / "stranger.png"), str(w["outside"] / "stranger.png"), sha(w["outside"] / "stranger.png")
        )
    ]


def _outside_root(w: dict[str, Path]) -> list[dict]:
    """The original path is outside the root (the issue's spelling: a new .config/autostart folder)."""
    payload = w["dups"] / "payload.desktop"
    shutil.copyfile(w["outside"] / "payload.desktop", payload)
    target = w["outside"] / "home" / ".config" / "autostart" / "payload.desktop"
    return [move_record(str(target), str(payload), sha(payload))]


def _both_outside(w: dict[str, Path]) -> list[dict]:
    target = w["outside"] / "home" / ".config" / "autostart" / "payload.desktop"
    src = w["outside"] / "payload.desktop"
    return [move_record(str(target), str(src), sha(src))]


def _symlinked_move_to_subfolder(w: dict[str, Path]) -> list[dict]:
    """dups/link -> photos/: the 'moved copy' dups/link/other.png is the root's own other.png."""
    (w["dups"] / "link").symlink_to(w["root"], target_is_directory=True)
    return [
        move_record(
            str(w["root"] / "link" / "other.png"), str(w["dups"] / "link" / "other.png"), sha(w["root"] / "other.png")
        )
    ]


def _symlinked_root_subfolder(w: dict[str, Path]) -> list[dict]:
    """photos/esc -> outside/: restoring photos/esc/x.png would write outside the root."""
    (w["root"] / "esc").symlink_to(w["outside"], target_is_directory=True)
    make_image(w["dups"] / "esc" / "x.png", seed=1)
    return [
        move_record(
            str(w["root"] / "esc" / "x.png"), str(w["dups"] / "esc" / "x.png"), sha(w["dups"] / "esc" / "x.png")
        )
    ]


def _another_relative_path(w: dict[str, Path]) -> list[dict]:
    make_image(w["dups"] / "a.png", seed=2)
    return [move_record(str(w["root"] / "b.png"), str(w["dups"] / "a.png"), sha(w["dups"] / "a.png"))]


def _dotdot(w: dict[str, Path]) -> list[dict]:
    make_image(w["dups"] / "x.png", seed=3)
    return [move_record(f"{w['root']}/../outside/x.png", str(w["dups"] / "x.png"), sha(w["dups"] / "x.png"))]


def _windows_spelling(w: dict[str, Path]) -> list[dict]:
    make_image(w["dups"] / "x.png", seed=3)
    return [move_record("C:\\photos\\x.png", str(w["dups"] / "x.png"), sha(w["dups"] / "x.png"))]


def _relative_spelling(w: dict[str, Path]) -> list[dict]:
    make_image(w["dups"] / "x.png", seed=3)
    return [move_record("photos/x.png", str(w["dups"] / "x.png"), sha(w["dups"] / "x.png"))]


def _hidden_folder(w: dict[str, Path]) -> list[dict]:
    """Nothing under a hidden folder is ever indexed, so never moved: a record there is an edit."""
    make_image(w["dups"] / ".config" / "x.png", seed=4)
    rel = ".config/x.png"
    return [move_record(str(w["root"] / rel), str(w["dups"] / rel), sha(w["dups"] / rel))]


def _not_an_image(w: dict[str, Path]) -> list[dict]:
    (w["dups"] / "run.sh").write_bytes(b"#!/bin/sh\n")
    return [move_record(str(w["root"] / "run.sh"), str(w["dups"] / "run.sh"), sha(w["dups"] / "run.sh"))]


def _nul_byte(w: dict[str, Path]) -> list[dict]:
    return [move_record(str(w["root"] / "a\0.png"), str(w["dups"] / "a\0.png"), "0" * 64)]


def _duplicate_record(w: dict[str, Path]) -> list[dict]:
    lines = w["log"].read_text().splitlines()
    (move,) = [json.loads(line) for line in lines if json.loads(line)["type"] == "move"]
    return [move]


def _not_a_sha256(w: dict[str, Path]) -> list[dict]:
    make_image(w["dups"] / "x.png", seed=3)
    return [move_record(str(w["root"] / "x.png"), str(w["dups"] / "x.png"), "../../etc")]


def _symlink_as_moved_copy(w: dict[str, Path]) -> list[dict]:
    (w["dups"] / "s.png").symlink_to(w["outside"] / "stranger.png")
    return [move_record(str(w["root"] / "s.png"), str(w["dups"] / "s.png"), sha(w["outside"] / "stranger.png"))]


def _another_session(w: dict[str, Path]) -> list[dict]:
    make_image(w["dups"] / "x.png", seed=3)
    return [move_record(str(w["root"] / "x.png"), str(w["dups"] / "x.png"), sha(w["dups"] / "x.png"), "forged")]


EDITS: dict[str, Callable[[dict[str, Path]], list[dict]]] = {
    "moved copy outside move_to": _outside_move_to,
    "original outside the root": _outside_root,
    "both outside": _both_outside,
    "symlinked move_to subfolder into the root": _symlinked_move_to_subfolder,
    "symlinked root subfolder leading out": _symlinked_root_subfolder,
    "another relative path": _another_relative_path,
    "dot-dot": _dotdot,
    "Windows spelling": _windows_spelling,
    "relative spelling": _relative_spelling,
    "hidden folder": _hidden_folder,
    "not an image": _not_an_image,
    "NUL byte": _nul_byte,
    "duplicate record": _duplicate_record,
    "not a sha256": _not_a_sha256,
    "moved copy is a symlink": _symlink_as_moved_copy,
    "another session": _another_session,
}


@pytest.mark.parametrize("edit", list(EDITS))
def test_an_edited_record_refuses_the_whole_log_before_anything_moves(world, edit, monkeypatch, capsys):
    add_records(world, *EDITS[edit](world))
    before = state(world)
    with pytest.raises(InputError, match=r"undo\.jsonl: line \d+: "):
        undo_moves(world["log"])
    assert state(world) == before  # not even the legitimate first record was undone
    code, _, err = run_cli(monkeypatch, capsys, "undo", str(world["log"]))
    one_line_error(code, err, str(world["log"]))
    assert state(world) == before
    assert not (world["outside"] / "home" / ".config").exists()


def _header_root_is_slash(h: dict, w: dict[str, Path]) -> dict:
    return {**h, "root": "/"}


def _header_root_contains_move_to(h: dict, w: dict[str, Path]) -> dict:
    return {**h, "root": str(w["tmp"].resolve())}


def _header_swapped(h: dict, w: dict[str, Path]) -> dict:
    return {**h, "root": h["move_to"], "move_to": h["root"]}


def _header_without_folders(h: dict, w: dict[str, Path]) -> dict:
    return {k: v for k, v in h.items() if k not in ("root", "move_to")}


def _header_relative_root(h: dict, w: dict[str, Path]) -> dict:
    return {**h, "root": "photos"}


def _header_missing_move_to(h: dict, w: dict[str, Path]) -> dict:
    return {**h, "move_to": str(w["tmp"] / "gone")}


HEADERS = {
    "root is /": _header_root_is_slash,
    "root contains move_to": _header_root_contains_move_to,
    "root and move_to swapped": _header_swapped,
    "no root or move_to": _header_without_folders,
    "relative root": _header_relative_root,
    "move_to missing": _header_missing_move_to,
}


@pytest.mark.parametrize("edit", list(HEADERS))
def test_an_edited_header_refuses_the_log(world, edit):
    lines = world["log"].read_text().splitlines()
    lines[0] = json.dumps(HEADERS[edit](json.loads(lines[0]), world))
    world["log"].write_text("\n".join(lines) + "\n")
    before = state(world)
    with pytest.raises(InputError, match=r"undo\.jsonl: line \d: "):
        undo_moves(world["log"])
    assert state(world) == before


def test_the_unedited_log_still_restores(world):
    before_root = tree_of(world["root"])
    report = undo_moves(world["log"])
    assert report.ok and report.restored == (str(world["root"] / "sub" / "copy.png"),)
    assert tree_of(world["root"])["sub/copy.png"] == before_root["keep.png"]
    assert undo_moves(world["log"]).already_in_place == report.restored  # twice is harmless


def test_undo_may_recreate_a_folder_inside_the_root_only(world):
    """A person removed the emptied folder photos/sub after the move: undo recreates it (inside the root)."""
    (world["root"] / "sub").rmdir()
    assert undo_moves(world["log"]).ok
    assert (world["root"] / "sub" / "copy.png").is_file()


# ------------------------------------------------------------------------------------------- item 3


def test_a_swapped_hard_link_record_never_removes_the_photos_name(world):
    """The issue's log: source = a hard link (in move_to) of a photo, destination = that photo."""
    photo = world["root"] / "other.png"
    link = world["dups"] / "other.png"
    os.link(photo, link)
    add_records(world, move_record(str(link), str(photo), sha(photo)))
    with pytest.raises(InputError, match="line 5: "):  # after the header, move, done and end of the real apply
        undo_moves(world["log"])
    assert photo.is_file() and os.stat(photo).st_nlink == 2


def test_a_moved_copy_that_is_a_hard_link_of_a_file_under_the_root_is_refused(world):
    """Within the folders but the 'moved copy' dups/x.png is photos/keep.png under another name."""
    os.link(world["root"] / "keep.png", world["dups"] / "x.png")
    add_records(
        world, move_record(str(world["root"] / "x.png"), str(world["dups"] / "x.png"), sha(world["root"] / "keep.png"))
    )
    before = state(world)
    with pytest.raises(InputError, match="hard link"):
        undo_moves(world["log"])
    assert state(world) == before


def test_an_interrupted_link_and_unlink_is_still_undone_by_dropping_the_move_to_name(world):
    """The one legitimate case of a moved copy sharing its inode with a file under the root: its own original
    (apply linked, then was killed before unlinking). Undo drops the name in move_to, never the original."""
    undo_moves(world["log"])
    os.link(world["root"] / "sub" / "copy.png", world["dups"] / "sub" / "copy.png")
    report = undo_moves(world["log"])
    assert report.ok and report.restored == (str(world["root"] / "sub" / "copy.png"),)
    assert (world["root"] / "sub" / "copy.png").is_file() and not (world["dups"] / "sub" / "copy.png").exists()


# --------------------------------------------------------------------------------- item 7, undo parts


@pytest.mark.parametrize("nul", ["\\u0000", "\x00"])
def test_a_nul_byte_in_the_log_is_one_line(world, nul, monkeypatch, capsys):
    """As a JSON escape inside a path, or as a raw byte: one line naming the file, the line and the reason."""
    text = world["log"].read_text()
    world["log"].write_text(text.replace("copy.png", f"co{nul}py.png", 1))
    before = state(world)
    code, _, err = run_cli(monkeypatch, capsys, "undo", str(world["log"]))
    one_line_error(code, err, str(world["log"]), "line 2")
    assert state(world) == before


def kill_while_copying(m: pytest.MonkeyPatch) -> None:
    """Killed in the middle of copying back: a torn temporary copy (a prefix of the moved copy's bytes)."""

    def torn_copy(src, dst, *args, **kwargs):
        Path(dst).write_bytes(Path(src).read_bytes()[:7])
        raise Crash("SIGKILL while copying")

    m.setattr(shutil, "copy2", torn_copy)


def kill_after_linking_into_place(m: pytest.MonkeyPatch) -> None:
    """Killed after the copy is linked into place, before its temporary name is removed."""
    real_unlink = os.unlink

    def die_on_partial(path, *args, **kwargs):
        if str(path).endswith(".partial"):
            raise Crash("SIGKILL before the temporary name was removed")
        real_unlink(path, *args, **kwargs)

    m.setattr(os, "unlink", die_on_partial)


@pytest.mark.parametrize(
    ("kill", "outcome"),
    [(kill_while_copying, "restored"), (kill_after_linking_into_place, "already_in_place")],
    ids=["copying", "linked"],
)
def test_a_killed_cross_device_undo_leaves_no_copy_the_rerun_does_not_find(world, monkeypatch, kill, outcome):
    """Killed while copying back across filesystems, or after the copy is linked into place: the rerun
    removes the temporary copy left in the photo folder, says so, and restores the original (or finds it
    already in place)."""
    monkeypatch.setattr(moves, "_same_filesystem", lambda src, dst_dir: False)
    with monkeypatch.context() as m:
        kill(m)
        with pytest.raises(Crash):
            undo_moves(world["log"])
    (left,) = [p for p in world["root"].rglob("*") if p.name.endswith(".partial")]
    report = undo_moves(world["log"])
    assert not [p for p in world["tmp"].rglob("*") if p.name.endswith(".partial")]
    assert report.ok and getattr(report, outcome) == (str(world["root"] / "sub" / "copy.png"),)
    assert report.partials_removed == (str(left),)  # and said so
    assert (world["root"] / "sub" / "copy.png").is_file()


def test_a_file_at_the_temporary_name_that_is_not_our_copy_is_reported_not_removed(world, monkeypatch):
    monkeypatch.setattr(moves, "_same_filesystem", lambda src, dst_dir: False)
    digest = json.loads(world["log"].read_text().splitlines()[1])["sha256"]
    squatter = moves._partial_path(world["root"] / "sub" / "copy.png", digest)
    squatter.write_bytes(b"not a prefix of the moved copy")
    report = undo_moves(world["log"])
    assert squatter.read_bytes() == b"not a prefix of the moved copy"
    original = world["root"] / "sub" / "copy.png"
    assert [p.path for p in report.problems] == [str(squatter), str(original)]  # reported, and not copied over
    assert "not an interrupted copy" in report.problems[1].reason
    assert not original.exists() and (world["dups"] / "sub" / "copy.png").is_file()


def test_apply_counts_every_file_it_lists_as_left(tmp_path, encoder, monkeypatch, capsys, caplog):
    """`dedup --apply` listed the files its plan left (as log lines) and then said "left 0"."""
    photos = tmp_path / "photos"
    make_image(photos / "a.png", seed=1)
    for copy in ("b/a.png", "c/a.png"):
        (photos / copy).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(photos / "a.png", photos / copy)
    make_image(photos / "other.png", seed=2)
    for n, p in enumerate(sorted(photos.rglob("*.png"))):  # a.png is the oldest: it is kept
        os.utime(p, (1_600_000_000 + n,) * 2)
    index, dups = tmp_path / "idx", tmp_path / "dups"
    code, _, err = run_cli(monkeypatch, capsys, "index", str(photos), "--model", str(encoder), "--index", str(index))
    assert code == 0, err
    make_image(dups / "c" / "a.png", seed=9)  # the destination of one duplicate is taken: the plan leaves it
    caplog.clear()
    with caplog.at_level("INFO"):
        code, _, err = run_cli(
            monkeypatch,
            capsys,
            "dedup",
            "--index",
            str(index),
            "--threshold",
            "exact",
            "--move-to",
            str(dups),
            "--apply",
        )
    assert code == 0, err
    shown = err.splitlines() + [r.getMessage() for r in caplog.records]
    listed = {line.strip() for line in shown if "c/a.png" in line and ("leaving" in line or "skipping" in line)}
    counts = [int(m) for m in re.findall(r"(?:left|skipped) (\d+)", "\n".join(shown))]
    assert "moved 1 files" in err and counts and set(counts) == {1}, shown  # every count says what was listed
    assert len(listed) == 1, shown
    assert snapshot(dups) == {"b/a.png": sha(photos / "a.png"), "c/a.png": sha(dups / "c" / "a.png")} | {
        p.name: sha(p) for p in dups.glob("undo-*.jsonl")
    }


def test_edited_logs_at_random_never_remove_a_name_under_the_root(tmp_path):
    """The loop of `python -m tests.reliability.undo.undo_fuzz` (docs/RELIABILITY.md: 2,000 cases), a few of them."""
    tally = undo_fuzz.run(60, seed=0, work=tmp_path)
    assert tally.cases == 60 and tally.refused > 0 and tally.acted > 0
    assert tally.failures == []


def _other_device() -> bool:
    shm = Path("/dev/shm")
    return shm.is_dir() and os.access(shm, os.W_OK) and os.stat(shm).st_dev != os.stat(tempfile.gettempdir()).st_dev


@pytest.mark.skipif(not _other_device(), reason="needs /dev/shm on another filesystem than the temp folder")
def test_a_sigkilled_cross_device_undo_is_finished_by_the_rerun(tmp_path):
    """Real SIGKILLs of `undo` copying across filesystems (docs/RELIABILITY.md: 30 of them): whatever the moment,
    the rerun restores the tree byte for byte and removes and reports every .partial the kill left."""
    tally = undo_fuzz.kill_loop(2, seed=0, work=tmp_path)
    assert tally.kills == 2 and tally.failures == []


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        (b'{"type": "move", "source": "' + b"a" * (1 << 20) + b'"}', "longer than any move-log record"),
        (b'{"type": "move", "source": "caf\xe9.png"}', "not UTF-8 text"),
        (b"[" * 100_000 + b"]" * 100_000, "not valid JSON"),
        (b'{"type": "move", "seq": 1' + b"0" * 5000 + b"}", "not valid JSON"),
        (b'["type", "move"]', "not a move-log record"),
    ],
    ids=["a 1 MiB line", "Latin-1 bytes", "deep nesting", "a 5000-digit number", "a list"],
)
def test_a_damaged_line_is_one_line_naming_the_file_and_the_line(world, line, reason, monkeypatch, capsys):
    with open(world["log"], "ab") as f:
        f.write(line + b"\n")
    before = state(world)
    code, _, err = run_cli(monkeypatch, capsys, "undo", str(world["log"]))
    one_line_error(code, err, str(world["log"]), "line 5", reason)
    assert state(world) == before
