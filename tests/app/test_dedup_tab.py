"""Duplicates tab on the tiny index: the planted exact copy is found, another keeper can be picked and is
what the export says, a file marked "not a duplicate" leaves the plan and the export, each member says why it
joined, and with --move-to the move is the one `dedup --apply` makes (undo log included)."""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from app import dedup_tab
from app.config import AppConfig
from app.engine import Engine
from plumbing.errors import InputError
from retrieval.dedup.groups import Duplicate, Group
from retrieval.dedup.moves import undo_moves
from retrieval.dedup.threshold import Threshold
from retrieval.dedup.verify.rule import Evidence
from tests.app.conftest import COPY, _index

ORIGINAL = "a/p03.png"
SECOND = "a/second-copy-of-p03.png"


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_exact_preset_finds_the_planted_copy_with_the_rule_keeper(engine):
    found, text, rows, *_ = dedup_tab.find(engine, "exact", 0.5)
    assert [(g.keep.path, [d.record.path for d in g.duplicates]) for g in found.groups] == [(ORIGINAL, [COPY])]
    assert found.threshold is None and "1 groups, 1 duplicates" in text
    assert [r[:6] for r in rows] == [[1, "keep", ORIGINAL, "", "", ""], [1, "duplicate", COPY, 1.0, "exact", "bytes"]]
    assert rows[0][6:8] == rows[1][6:8] == ["64x48", rows[0][7]]  # the same bytes: same pixels and size


def test_custom_threshold_comes_from_the_slider(engine):
    assert dedup_tab.threshold(dedup_tab.CUSTOM, 0.5) == Threshold(0.5)
    assert dedup_tab.threshold("strict", 0.5) == Threshold.preset("strict")
    assert dedup_tab.threshold("exact", 0.5).exact_only
    found = dedup_tab.find(engine, dedup_tab.CUSTOM, 0.999)[0]
    assert found.threshold == pytest.approx(0.999)
    assert any(g.keep.path in (ORIGINAL, COPY) for g in found.groups)  # identical bytes pass any threshold
    for preset, value in [(dedup_tab.CUSTOM, 1.5), (dedup_tab.CUSTOM, float("nan")), (dedup_tab.CUSTOM, None)]:
        with pytest.raises(InputError, match="threshold"):
            dedup_tab.find(engine, preset, value)
    with pytest.raises(InputError, match="threshold preset"):
        dedup_tab.find(engine, "0.3", 0.5)  # a preset is a name, never text parsed as a number


def test_the_engine_gets_the_threshold_object_built_from_the_controls(engine, monkeypatch):
    seen = []
    real = engine.duplicates
    monkeypatch.setattr(engine, "duplicates", lambda t, similar=False: seen.append(t) or real(t, similar))
    dedup_tab.find(engine, dedup_tab.CUSTOM, 0.31)
    dedup_tab.find(engine, "loose", 0.9)
    assert seen == [Threshold(0.31), Threshold.preset("loose")]


def test_picking_another_keeper_is_what_gets_exported(engine):
    found = dedup_tab.find(engine, "exact", 0.5)[0]
    found, *_ = dedup_tab.pick_keeper(engine, found, 1, COPY)
    g = found.groups[0]
    assert g.keep.path == COPY and [(d.record.path, d.kind) for d in g.duplicates] == [(ORIGINAL, "exact")]
    data = json.loads(Path(dedup_tab.export_json(found)).read_text())
    assert [(g["keep"], [(d["path"], d["kind"], d["move"]) for d in g["duplicates"]]) for g in data["groups"]] == [
        (COPY, [(ORIGINAL, "exact", True)])
    ]
    assert data["index"]["generation"] == engine.index.manifest.generation  # a plan `dedup --plan` can follow
    with open(dedup_tab.export_csv(found), newline="") as f:
        rows = list(csv.reader(f))
    assert rows[1][:3] == ["1", "keep", COPY] and rows[2][:3] == ["1", "duplicate", ORIGINAL]
    for outsider in ("a/p00.png", "../photos/a/p03.png", "/etc/passwd", "b/../" + COPY):
        with pytest.raises(InputError, match="not in this group"):
            dedup_tab.pick_keeper(engine, found, 1, outsider)


def test_review_only_without_move_to(engine):
    found = dedup_tab.find(engine, "exact", 0.5)[0]
    with pytest.raises(InputError, match="--move-to"):
        dedup_tab.plan(engine, found)


def test_move_aside_then_undo(tiny, tmp_path):
    photos = tmp_path / "photos"
    shutil.copytree(tiny.photos, photos)
    shutil.copyfile(photos / ORIGINAL, photos / SECOND)  # a second copy, which the person says stays
    move_to = tmp_path / "photos-duplicates"
    engine = Engine.load(AppConfig(index=_index(photos, tiny.run, tmp_path / "idx"), device="cpu", move_to=move_to))
    before = {p.relative_to(photos).as_posix(): sha(p) for p in photos.rglob("*") if p.is_file()}
    found = dedup_tab.find(engine, "exact", 0.5)[0]
    assert sorted(d.record.path for d in found.groups[0].duplicates) == sorted([COPY, SECOND])
    found = dedup_tab.toggle_stays(engine, found, 1, SECOND)[0]
    text, confirm = dedup_tab.plan(engine, found)
    assert "Would move 1 files" in text and confirm["visible"] is True
    assert f"leaving {SECOND}: marked not a duplicate" in text
    assert (photos / COPY).exists() and not move_to.exists()  # planning moves nothing

    text, _ = dedup_tab.confirm_move(engine, found)
    assert "Moved 1 files" in text
    assert not (photos / COPY).exists() and sha(move_to / COPY) == before[COPY]
    assert sha(photos / ORIGINAL) == before[ORIGINAL]  # the keeper stays
    assert sha(photos / SECOND) == before[SECOND] and not (move_to / SECOND).exists()  # and the file marked
    logs = list(move_to.glob("undo-*.jsonl"))
    assert logs == [engine.last_move_log]
    header = json.loads(logs[0].read_text().splitlines()[0])
    assert header["format"] == "retrieval-move-log"  # the log `retrieval undo` reads

    assert "Restored 1 files" in dedup_tab.undo_last(engine)
    after = {p.relative_to(photos).as_posix(): sha(p) for p in photos.rglob("*") if p.is_file()}
    assert after == before  # nothing lost, nothing deleted
    assert undo_moves(logs[0]).restored == ()  # a second undo finds everything in place
    with pytest.raises(InputError, match="No move"):
        dedup_tab.undo_last(engine)


def test_a_file_marked_not_a_duplicate_stays_out_of_the_plan_and_the_export(engine):
    found = dedup_tab.find(engine, "exact", 0.5)[0]
    found, text, rows, _, tiles, _ = dedup_tab.toggle_stays(engine, found, 1, COPY)
    assert found.stays == {COPY} and found.reviewed() == []
    assert rows[1][1] == dedup_tab.STAYS and "0 duplicates" in text and "1 marked not a duplicate" in text
    assert tiles[1][1].startswith("STAYS (not a duplicate) · " + COPY)
    data = json.loads(Path(dedup_tab.export_json(found)).read_text())
    assert [d["move"] for d in data["groups"][0]["duplicates"]] == [False]  # in the plan, set to stay
    for outsider in (ORIGINAL, "a/p00.png", "../photos/" + COPY, "/etc/passwd", None):
        with pytest.raises(InputError, match="keeper|not in this group"):
            dedup_tab.toggle_stays(engine, found, 1, outsider)
    found = dedup_tab.toggle_stays(engine, found, 1, COPY)[0]  # marked again: a duplicate again
    assert found.stays == set() and [g.keep.path for g in found.reviewed()] == [ORIGINAL]
    with pytest.raises(InputError, match="Find duplicates first"):
        dedup_tab.toggle_stays(engine, None, 1, COPY)


def test_each_member_says_why_it_joined_and_keypoint_matches_are_drawn(engine):
    records = {r.path: r for r in engine.index.records}
    keep, member = records["a/p00.png"], records["a/p01.png"]
    matches = np.array([[10, 10, 20, 20], [50, 40, 60, 30]], dtype=np.float32)  # (2, 4)
    ev = Evidence("keypoints", inliers=2, contained=1.0, agreement=0.8, conflict=0.1, matches=matches)
    found = dedup_tab.Found(0.28, [Group(keep, (Duplicate(member, 0.3, "near", 0.5, ev),))])
    tiles, choices = dedup_tab.show_group(engine, found, 1)
    assert [caption.split(" · ")[0] for _, caption in tiles] == [
        "KEEP",
        "a/p01.png",
        "2 matched points: a/p00.png (left) and a/p01.png (right)",
    ]
    assert "64x48" in tiles[1][1] and "keypoints agree on one geometry · 2 matched points" in tiles[1][1]
    drawing = tiles[2][0]
    assert drawing.width > drawing.height  # the two pictures side by side
    assert choices["choices"] == ["a/p00.png", "a/p01.png"]


def test_similar_pictures_are_listed_apart_and_never_planned(tiny, tmp_path, monkeypatch):
    """The checkbox asks the library for similar pictures; they get their own table and stay out of the move plan
    (the planted exact copy still moves). The similar group is planted in the result the engine returns."""
    move_to = tmp_path / "aside"
    engine = Engine.load(AppConfig(index=tiny.index, device="cpu", move_to=move_to))
    real = engine.duplicates
    asked: list[bool] = []

    def with_similar(threshold, similar=False):
        asked.append(similar)
        result = real(threshold, similar)
        records = {r.path: r for g in result.groups for r in g.records}
        other = next(r for r in engine.index.records if r.path not in records)
        planted = Group(result.groups[0].keep, (Duplicate(other, 0.41, "similar"),))
        return dataclasses.replace(result, similar=(planted,) if similar else ())

    monkeypatch.setattr(engine, "duplicates", with_similar)
    out = dedup_tab.find(engine, "exact", 0.5, True)
    found, similar_rows = out[0], out[-1]
    assert asked == [True] and len(found.similar) == 1
    other = found.similar[0].duplicates[0].record.path
    assert [r[:4] for r in similar_rows] == [[1, "first", ORIGINAL, ""], [1, "similar", other, 0.41]]
    text, _ = dedup_tab.plan(engine, found)
    assert "Would move 1 files" in text and other not in text
    assert dedup_tab.find(engine, "exact", 0.5, False)[-1] == [] and asked[-1] is False
    with pytest.raises(InputError, match="similar"):
        dedup_tab.find(engine, "exact", 0.5, "yes")
