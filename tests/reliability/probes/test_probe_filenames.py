"""Probe 2 (issue 12): a file name that is not UTF-8 (a Latin-1 `caf\\xe9.png` from an old archive, as
bytes on Linux) is indexed, searched, reported, moved and restored like any other, and `train` lists it
in bad_files.csv. Storage keeps the exact bytes; text output shows them as `\\xNN`."""

from __future__ import annotations

import csv
import json
import os
import shutil
import sys

import pytest

from moco.data import write_bad_files
from plumbing.filenames import printable
from tests.reliability.conftest import make_image, run_cli, snapshot

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="names are bytes on Linux only")

LATIN1 = os.fsdecode(b"caf\xe9.png")  # 'caf\udce9.png'
COPY = os.fsdecode(b"old/caf\xe9 copie.png")
SHOWN = "caf\\xe9.png"


def test_printable_shows_undecodable_bytes_and_keeps_valid_names():
    assert printable(LATIN1) == SHOWN
    assert printable("café.png") == "café.png"
    assert printable("plain.png") == "plain.png"


def test_index_search_dedup_move_and_undo_round_trip(tmp_path, encoder, monkeypatch, capsys):
    photos = tmp_path / "photos"
    make_image(photos / LATIN1, seed=1)
    (photos / "old").mkdir()
    shutil.copyfile(photos / LATIN1, photos / COPY)
    for i in range(2, 6):
        make_image(photos / f"other{i}.png", seed=i)
    (photos / os.fsdecode(b"cass\xe9.jpg")).write_bytes(b"not an image")  # a bad file with such a name
    for n, p in enumerate(sorted(photos.rglob("*.*"))):  # the original is the oldest: it is kept
        os.utime(p, (1_600_000_000 + n + (1000 if p.parent != photos else 0),) * 2)
    before = snapshot(photos)
    index = tmp_path / "idx"

    code, out, err = run_cli(monkeypatch, capsys, "index", str(photos), "--model", str(encoder), "--index", str(index))
    assert code == 0, err
    assert "6 images indexed, 1 bad" in out

    code, out, err = run_cli(
        monkeypatch, capsys, "search", str(photos / LATIN1), "--index", str(index), "-k", "2", "--format", "json"
    )
    assert code == 0, err
    data = json.loads(out)
    assert data[0]["query"] == str(photos / LATIN1)
    assert {h["path"] for h in data[0]["results"]} == {str(photos / LATIN1), str(photos / COPY)}  # exact names
    code, out, err = run_cli(monkeypatch, capsys, "search", str(photos / LATIN1), "--index", str(index), "-k", "2")
    assert code == 0, err
    assert SHOWN in out
    code, out, err = run_cli(
        monkeypatch, capsys, "search", str(photos / LATIN1), "--index", str(index), "-k", "2", "--format", "csv"
    )
    assert code == 0, err
    assert {row["path"] for row in csv.DictReader(out.splitlines())} == {
        printable(str(photos / p)) for p in (LATIN1, COPY)
    }

    report = tmp_path / "report.html"
    code, out, err = run_cli(
        monkeypatch, capsys, "dedup", "--index", str(index), "--threshold", "exact", "--format", "json",
        "--report", str(report),
    )  # fmt: skip
    assert code == 0, err
    groups = json.loads(out)["groups"]
    assert [(g["keep"], [(d["path"], d["score"], d["kind"]) for d in g["duplicates"]]) for g in groups] == [
        (LATIN1, [(COPY, 1.0, "exact")])
    ]
    assert SHOWN in report.read_text(encoding="utf-8")
    code, out, err = run_cli(monkeypatch, capsys, "dedup", "--index", str(index), "--threshold", "exact")
    assert code == 0, err
    assert f"keep {SHOWN}" in out and printable(COPY) in out

    dups = tmp_path / "dups"
    code, out, err = run_cli(
        monkeypatch, capsys, "dedup", "--index", str(index), "--threshold", "exact", "--move-to", str(dups), "--apply"
    )
    assert code == 0, err
    moved = {k: v for k, v in snapshot(dups).items() if not k.endswith(".jsonl")}
    assert moved == {COPY: before[COPY]}
    assert not (photos / COPY).exists() and (photos / LATIN1).exists()
    (log,) = dups.glob("undo-*.jsonl")

    code, out, err = run_cli(monkeypatch, capsys, "undo", str(log))
    assert code == 0, err
    assert "restored 1 files" in out
    assert snapshot(photos) == before


def test_train_lists_a_non_utf8_bad_file(tmp_path):
    from moco.data import BadFile

    target = tmp_path / "bad_files.csv"
    write_bad_files(target, [BadFile(str(tmp_path / LATIN1), "not an image")])
    rows = list(csv.reader(target.read_text(encoding="utf-8").splitlines()))
    assert rows == [["path", "reason"], [f"{tmp_path}/{SHOWN}", "not an image"]]
