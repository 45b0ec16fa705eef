"""The reviewed move plan (`retrieval.dedup.plan`): written by `--format json`, edited, followed by `--plan`.

A folder of exact copies (the exact stage needs no verification: fast and certain): a.png with two copies, b.png
with one, c.png alone. Oracles: the bytes of every file before and after (sha256 by relative path); a refused plan
leaves both folders byte-identical and makes no undo log."""

from __future__ import annotations

import copy
import hashlib
import json
import shutil
from pathlib import Path

import pytest

from cli.commands import dedup as dedup_cmd
from plumbing.errors import FormatVersionError, InputError
from retrieval.dedup.formats import groups_to_json
from retrieval.dedup.plan import PLAN_FORMAT, PLAN_VERSION
from retrieval.dedup.run import DedupConfig, find_duplicates, undo
from retrieval.dedup.threshold import Threshold
from retrieval.indexing.run import IndexConfig, index_folder
from tests import cli_runner
from tests.retrieval.conftest import make_image

pytestmark = pytest.mark.usefixtures("one_thread")

COPIES = {"a.png": ["x/a1.png", "y/a2.png"], "b.png": ["x/b1.png"]}


def snapshot(*folders: Path) -> dict[str, str]:
    return {
        f"{n}/{p.relative_to(folder).as_posix()}": hashlib.sha256(p.read_bytes()).hexdigest()
        for n, folder in enumerate(folders)
        if folder.exists()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


@pytest.fixture
def folder(tmp_path, encoder) -> dict[str, Path]:
    photos = tmp_path / "photos"
    for seed, name in enumerate(["a.png", "b.png", "c.png"]):
        make_image(photos / name, seed, size=(64, 48))
    for original, copies in COPIES.items():
        for c in copies:
            (photos / c).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(photos / original, photos / c)
    index = tmp_path / "idx"
    index_folder(IndexConfig(photos, encoder, index, batch_size=8, workers=0, device="cpu"))
    return {"photos": photos, "index": index, "move_to": tmp_path / "aside", "plan": tmp_path / "plan.json"}


def write_plan(folder: dict[str, Path]) -> dict:
    result = find_duplicates(DedupConfig(index=folder["index"], threshold=Threshold.parse("exact")))
    doc = groups_to_json(result.groups, result.threshold, result.similar, index=result.identity)
    folder["plan"].write_text(json.dumps(doc), encoding="utf-8")
    return doc


def follow(folder: dict[str, Path], doc: dict | None = None, apply: bool = True):
    if doc is not None:
        folder["plan"].write_text(json.dumps(doc), encoding="utf-8")
    cfg = DedupConfig(index=folder["index"], plan=folder["plan"], move_to=folder["move_to"], apply=apply)
    return find_duplicates(cfg)


def members(doc: dict) -> dict[str, list[str]]:
    return {g["keep"]: sorted(d["path"] for d in g["duplicates"] if d["move"]) for g in doc["groups"]}


def test_plan_round_trip(folder):
    doc = write_plan(folder)
    assert doc["format"] == PLAN_FORMAT and doc["format_version"] == PLAN_VERSION
    assert set(doc["index"]) == {"generation", "manifest_sha256", "root"}
    assert members(doc) == {k: sorted(v) for k, v in COPIES.items()}
    shas = snapshot(folder["photos"])
    for g in doc["groups"]:
        assert g["keep_sha256"] == shas[f"0/{g['keep']}"]
        for d in g["duplicates"]:
            assert d["sha256"] == shas[f"0/{d['path']}"] and d["check"] == "bytes" and d["kind"] == "exact"
    dry = follow(folder, apply=False)  # read back: exactly the groups and moves the search found
    assert {g.keep.path: sorted(d.record.path for d in g.duplicates) for g in dry.groups} == members(doc)
    assert sorted(m.source for m in dry.plan.moves) == sorted(p for v in COPIES.values() for p in v)
    assert dry.moved is None and not folder["move_to"].exists()
    assert json.loads(dedup_cmd.format_groups(dry, "json"))["groups"] == json.loads(json.dumps(doc["groups"]))


def test_an_edited_plan_moves_exactly_the_rest_and_undo_restores(folder):
    doc = write_plan(folder)
    before = snapshot(folder["photos"])
    a = next(g for g in doc["groups"] if g["keep"] == "a.png")
    a["duplicates"] = [d for d in a["duplicates"] if d["path"] != "y/a2.png"]  # "not a duplicate": it stays
    b = next(g for g in doc["groups"] if g["keep"] == "b.png")
    b["duplicates"][0]["move"] = False  # the other way to say it
    result = follow(folder, doc)
    assert sorted(m.source for m in result.moved.moved) == ["x/a1.png"] and result.moved.skipped == ()
    after = snapshot(folder["photos"], folder["move_to"])
    log = result.moved.log_path.relative_to(folder["move_to"]).as_posix()
    assert after == {
        **{k: v for k, v in before.items() if k != "0/x/a1.png"},
        "1/x/a1.png": before["0/x/a1.png"],
        f"1/{log}": after[f"1/{log}"],
    }
    assert len(undo(result.moved.log_path).restored) == 1
    assert snapshot(folder["photos"]) == before


def test_a_changed_keeper_is_kept_and_the_old_one_moves(folder):
    doc = write_plan(folder)
    before = snapshot(folder["photos"])
    a = next(g for g in doc["groups"] if g["keep"] == "a.png")
    new = next(d for d in a["duplicates"] if d["path"] == "x/a1.png")
    a["keep"], a["keep_sha256"] = new["path"], new["sha256"]
    new["path"] = "a.png"  # the same bytes: the old keeper moves, x/a1.png stays
    result = follow(folder, doc)
    assert sorted(m.source for m in result.moved.moved) == ["a.png", "x/b1.png", "y/a2.png"]
    assert (folder["photos"] / "x/a1.png").exists() and not (folder["photos"] / "a.png").exists()
    undo(result.moved.log_path)
    assert snapshot(folder["photos"]) == before


def _edit(doc: dict, how: str, folder: dict[str, Path]) -> dict:
    doc = copy.deepcopy(doc)
    a = next(g for g in doc["groups"] if g["keep"] == "a.png")
    if how == "generation":
        doc["index"]["generation"] = "gen-9999"
    elif how == "manifest":
        doc["index"]["manifest_sha256"] = "0" * 64
    elif how == "hash":
        a["duplicates"][0]["sha256"] = "f" * 64
    elif how == "outside":
        a["duplicates"][0]["path"] = "../outside.png"
    elif how == "absolute":
        a["duplicates"][0]["path"] = str(folder["photos"].parent / "outside.png")
    elif how == "symlink":
        a["duplicates"][0]["path"] = "link/outside.png"
    elif how == "keeper":
        a["duplicates"].append({"path": "a.png", "sha256": a["keep_sha256"], "kind": "exact", "move": True})
    elif how == "twice":
        b = next(g for g in doc["groups"] if g["keep"] == "b.png")
        b["duplicates"].append(dict(a["duplicates"][0]))
    elif how == "similar":
        d = a["duplicates"][0]
        c_sha = hashlib.sha256((folder["photos"] / "c.png").read_bytes()).hexdigest()
        doc["similar"] = [{"keep": "c.png", "keep_sha256": c_sha, "similar": [{**d, "kind": "similar"}]}]
        del doc["similar"][0]["similar"][0]["move"]
        a["duplicates"] = a["duplicates"][1:]
    elif how == "version":
        doc["format_version"] = PLAN_VERSION + 1
    return doc


REFUSALS = {
    "generation": "gen-9999",
    "manifest": "manifest_sha256 differs",
    "hash": "not the one indexed",
    "outside": "outside the indexed folder",
    "absolute": "outside the indexed folder",
    "symlink": "leads outside the indexed folder",
    "keeper": "a keeper and also listed to move",
    "twice": "listed to move twice",
    "similar": "only similar",
    "version": "newer than this program",
}


@pytest.mark.parametrize("how", list(REFUSALS))
def test_a_bad_plan_is_refused_and_nothing_moves(folder, how):
    doc = write_plan(folder)
    outside = folder["photos"].parent / "outside"
    outside.mkdir()
    make_image(outside / "outside.png", 9)
    (folder["photos"] / "link").symlink_to(outside)
    before = snapshot(folder["photos"], folder["move_to"], outside)
    with pytest.raises(InputError, match=REFUSALS[how]) as refused:
        follow(folder, _edit(doc, how, folder))
    assert "\n" not in str(refused.value)
    assert (how == "version") == isinstance(refused.value, FormatVersionError)
    assert snapshot(folder["photos"], folder["move_to"], outside) == before and not folder["move_to"].exists()


def test_a_file_changed_since_the_plan_is_refused(folder):
    doc = write_plan(folder)
    (folder["photos"] / "y/a2.png").write_bytes(b"\x89PNG edited since")
    before = snapshot(folder["photos"])
    with pytest.raises(InputError, match="y/a2.png changed since the plan"):
        follow(folder, doc)
    assert snapshot(folder["photos"]) == before and not folder["move_to"].exists()


def test_a_plan_of_an_older_index_is_refused(folder, encoder):
    doc = write_plan(folder)
    make_image(folder["photos"] / "d.png", 7)
    index_folder(IndexConfig(folder["photos"], encoder, folder["index"], batch_size=8, workers=0, device="cpu"))
    before = snapshot(folder["photos"])
    with pytest.raises(InputError, match="the index is now"):
        follow(folder, doc)
    assert snapshot(folder["photos"]) == before


def test_cli_writes_the_plan_and_follows_it(folder, monkeypatch, capsys):
    def run(*args: str) -> tuple[int, str, str]:
        return cli_runner.run_cli(monkeypatch, capsys, dedup_cmd.register, *args)

    index, plan, move_to = str(folder["index"]), str(folder["plan"]), str(folder["move_to"])
    code, _, err = run("dedup", "--index", index, "--threshold", "exact", "--format", "json", "--output", plan)
    assert code == 0, err
    doc = json.loads(folder["plan"].read_text())
    doc["groups"] = [g for g in doc["groups"] if g["keep"] == "b.png"]  # only b's copy moves
    folder["plan"].write_text(json.dumps(doc))
    before = snapshot(folder["photos"])
    code, _, err = run("dedup", "--index", index, "--plan", plan, "--move-to", move_to, "--apply")
    assert code == 0, err
    assert "moved 1 files" in err
    assert snapshot(folder["photos"]) == {k: v for k, v in before.items() if k != "0/x/b1.png"}
    doc["groups"][0]["duplicates"][0]["sha256"] = "0" * 64
    folder["plan"].write_text(json.dumps(doc))
    code, _, err = run("dedup", "--index", index, "--plan", plan, "--move-to", move_to, "--apply")
    assert code == 2 and "not the one indexed" in err and len(err.strip().splitlines()) == 1
    assert not (folder["move_to"] / "x/a1.png").exists()


def test_a_similar_member_moves_only_when_set_to(folder):
    doc = write_plan(folder)
    before = snapshot(folder["photos"])
    b = next(g for g in doc["groups"] if g["keep"] == "b.png")
    doc["groups"] = [g for g in doc["groups"] if g is not b]
    doc["similar"] = [{"keep": "b.png", "keep_sha256": b["keep_sha256"], "similar": b["duplicates"]}]
    doc["similar"][0]["similar"][0] |= {"kind": "similar", "move": False}  # as written: shown, never moved
    a_moves = sorted(d["path"] for d in doc["groups"][0]["duplicates"])
    assert sorted(m.source for m in follow(folder, doc, apply=False).plan.moves) == a_moves
    doc["similar"][0]["similar"][0]["move"] = True  # the person asked for it
    result = follow(folder, doc)
    assert sorted(m.source for m in result.moved.moved) == sorted([*a_moves, "x/b1.png"])
    undo(result.moved.log_path)
    assert snapshot(folder["photos"]) == before
