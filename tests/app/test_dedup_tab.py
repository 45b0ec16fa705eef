"""Duplicates tab on the tiny index: the planted exact copy is found, another keeper can be picked and is
what the export says, and with --move-to the move is the one `dedup --apply` makes (undo log included)."""

from __future__ import annotations

import csv
import hashlib
import json
import shutil
from pathlib import Path

import pytest

from app import dedup_tab
from app.config import AppConfig
from app.engine import Engine
from plumbing.errors import InputError
from retrieval.dedup.moves import undo_moves
from retrieval.dedup.threshold import Threshold
from tests.app.conftest import COPY, _index

ORIGINAL = "a/p03.png"


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_exact_preset_finds_the_planted_copy_with_the_rule_keeper(engine):
    found, text, rows, *_ = dedup_tab.find(engine, "exact", 0.5)
    assert [(g.keep.path, [d.record.path for d in g.duplicates]) for g in found.groups] == [(ORIGINAL, [COPY])]
    assert found.threshold is None and "1 groups, 1 duplicates" in text
    assert rows == [[1, "keep", ORIGINAL, "", "", rows[0][5]], [1, "duplicate", COPY, 1.0, "exact", rows[1][5]]]


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
    monkeypatch.setattr(engine, "duplicates", lambda t: seen.append(t) or real(t))
    dedup_tab.find(engine, dedup_tab.CUSTOM, 0.31)
    dedup_tab.find(engine, "loose", 0.9)
    assert seen == [Threshold(0.31), Threshold.preset("loose")]


def test_picking_another_keeper_is_what_gets_exported(engine):
    found = dedup_tab.find(engine, "exact", 0.5)[0]
    found, *_ = dedup_tab.pick_keeper(engine, found, 1, COPY)
    g = found.groups[0]
    assert g.keep.path == COPY and [(d.record.path, d.kind) for d in g.duplicates] == [(ORIGINAL, "exact")]
    data = json.loads(Path(dedup_tab.export_json(found)).read_text())
    assert data["groups"] == [{"keep": COPY, "duplicates": [{"path": ORIGINAL, "score": 1.0, "kind": "exact"}]}]
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
    move_to = tmp_path / "photos-duplicates"
    engine = Engine.load(AppConfig(index=_index(photos, tiny.run, tmp_path / "idx"), device="cpu", move_to=move_to))
    before = {p.relative_to(photos).as_posix(): sha(p) for p in photos.rglob("*") if p.is_file()}
    found = dedup_tab.find(engine, "exact", 0.5)[0]
    text, confirm = dedup_tab.plan(engine, found)
    assert "Would move 1 files" in text and confirm["visible"] is True
    assert (photos / COPY).exists() and not move_to.exists()  # planning moves nothing

    text, _ = dedup_tab.confirm_move(engine, found)
    assert "Moved 1 files" in text
    assert not (photos / COPY).exists() and sha(move_to / COPY) == before[COPY]
    assert sha(photos / ORIGINAL) == before[ORIGINAL]  # the keeper stays
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
