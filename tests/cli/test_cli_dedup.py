"""`retrieval dedup` / `retrieval undo` end to end: a tiny folder with planted duplicates (an exact byte
copy, a resized and re-encoded copy, unrelated images), indexed with a tiny random encoder, then the CLI.

The random encoder maps every image of this folder to cosine > 0.95 of every other; dedup's normalised
score still separates the resized copy (about 1.0) from unrelated pairs (at most about 0.5). The tests use
a threshold of 0.8, checked against brute-force scores of the index's own vectors first (the oracle)."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cli.commands import dedup as dedup_cmd
from moco.export import save_random_encoder
from retrieval.dedup.groups import BACKGROUND_RANK, normalised_scores
from retrieval.indexing.run import IndexConfig, index_folder
from retrieval.searching.searcher import SearchIndex
from tests import cli_runner

NEAR = "0.8"
EXACT_COPY = "sub/a copy.png"
NEAR_COPY = "edited/g small.jpg"
UNRELATED = ("b.png", "n.png", "s.png")


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/retrieval/conftest.py


def _blocky(seed: int, grid: tuple[int, int]) -> Image.Image:
    blocks = np.random.default_rng(seed).integers(0, 256, (*grid, 3), dtype=np.uint8)
    return Image.fromarray(blocks).resize((64, 48), Image.Resampling.NEAREST)


def _gradient(seed: int) -> Image.Image:
    """A colour gradient with some texture on it (a plain gradient is nearly flat: verification would need
    keypoints to group its copies, and it has none)."""
    rng = np.random.default_rng(seed)
    x = np.linspace(0, 1, 64)[None, :, None]  # (1, W, 1)
    y = np.linspace(0, 1, 48)[:, None, None]  # (H, 1, 1)
    a, b, c = rng.uniform(0, 255, 3), rng.uniform(-255, 255, 3), rng.uniform(-255, 255, 3)
    texture = np.asarray(_blocky(seed + 10, (6, 8)), dtype=np.float64) - 128  # (H, W, 3)
    return Image.fromarray(np.clip(a + b * x + c * y + 0.5 * texture, 0, 255).astype(np.uint8))


def _stripes(seed: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    on = ((np.arange(64) // int(rng.integers(2, 12))) % 2)[None, :, None]  # (1, W, 1)
    row = on * rng.integers(0, 256, 3) + (1 - on) * rng.integers(0, 256, 3)
    return Image.fromarray(np.broadcast_to(row, (48, 64, 3)).astype(np.uint8))


def make_photos(root: Path) -> None:
    """a.png + its exact byte copy, g.png + a smaller JPEG of it, and three unrelated images."""
    root.mkdir(parents=True)
    _blocky(1, (2, 3)).save(root / "a.png")
    (root / "sub").mkdir()
    shutil.copyfile(root / "a.png", root / EXACT_COPY)
    _gradient(3).save(root / "g.png")
    (root / "edited").mkdir()
    Image.open(root / "g.png").convert("RGB").resize((48, 36), Image.Resampling.BILINEAR).save(
        root / NEAR_COPY, quality=85
    )
    _blocky(0, (4, 5)).save(root / "b.png")
    Image.fromarray(np.random.default_rng(2).integers(0, 256, (48, 64, 3), dtype=np.uint8)).save(root / "n.png")
    _stripes(4).save(root / "s.png")
    for n, p in enumerate(sorted(root.rglob("*.*"))):  # deterministic mtimes: originals are the oldest
        t = 1_600_000_000 + (1000 if p.parent != root else n)
        os.utime(p, (t, t))


def build(base: Path, encoder: Path) -> dict[str, Path]:
    photos, index = base / "photos", base / "indexes" / "tiny"
    make_photos(photos)
    index_folder(IndexConfig(photos, encoder, index, batch_size=8, workers=0, device="cpu"))
    return {"base": base, "photos": photos, "index": index}


@pytest.fixture(scope="module")
def encoder(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("runs") / "tiny"
    save_random_encoder(out, embed_size=32, dim=16, seed=0)
    return out


@pytest.fixture(scope="module")
def built(tmp_path_factory, encoder) -> dict[str, Path]:
    """Read-only for the tests that use it (the move tests build their own folder)."""
    return build(tmp_path_factory.mktemp("dedup"), encoder)


def run_cli(monkeypatch, capsys, *args: str) -> tuple[int, str, str]:
    """Run `retrieval ARGS...` in-process through cli.main, on an app holding only dedup and undo."""
    return cli_runner.run_cli(monkeypatch, capsys, dedup_cmd.register, *args)


def snapshot(folder: Path) -> dict[str, str]:
    """{relative path: sha256} of every file under `folder`."""
    return {
        p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def test_the_planted_copies_are_separable_at_the_test_threshold(built):
    """The oracle: pair scores from the stored vectors by brute force (normalised as dedup defines them,
    over one copy per distinct file) put only the resized copy above NEAR."""
    index = SearchIndex.open(built["index"])
    reps = [r for r in index.records if r.path != EXACT_COPY]
    x = np.stack([np.asarray(index.vectors[r.id]) for r in reps])  # (R, D)
    sims = x @ x.T  # (R, R)
    np.fill_diagonal(sims, -np.inf)
    rank = min(BACKGROUND_RANK, len(reps) - 1)
    b = -np.sort(-sims, axis=1)[:, rank - 1]  # (R,)
    scores = normalised_scores(sims, b[:, None], b[None, :])  # (R, R)
    at = {r.path: i for i, r in enumerate(reps)}
    assert scores[at["g.png"], at[NEAR_COPY]] >= float(NEAR) + 0.05
    others = [(p, q) for p in at for q in at if p < q and {p, q} != {"g.png", NEAR_COPY}]
    assert max(scores[at[p], at[q]] for p, q in others) <= float(NEAR) - 0.05


def test_json_schema_is_exact_and_finds_both_copies(built, monkeypatch, capsys):
    code, out, err = run_cli(
        monkeypatch, capsys, "dedup", "--index", str(built["index"]), "--threshold", NEAR, "--format", "json"
    )
    assert code == 0, err
    data = json.loads(out)
    assert set(data) == {"format", "format_version", "index", "threshold", "groups"}  # a plan (dedup --plan)
    assert data["threshold"] == float(NEAR)
    for g in data["groups"]:
        assert set(g) == {"keep", "keep_sha256", "duplicates"} and isinstance(g["keep"], str)
        for d in g["duplicates"]:
            assert set(d) == {"path", "sha256", "score", "kind", "check", "move"} and d["move"] is True
            assert isinstance(d["path"], str) and isinstance(d["score"], float) and d["kind"] in ("exact", "near")
    found = {g["keep"]: [(d["path"], d["kind"]) for d in g["duplicates"]] for g in data["groups"]}
    assert found == {"a.png": [(EXACT_COPY, "exact")], "g.png": [(NEAR_COPY, "near")]}
    scores = {d["path"]: d["score"] for g in data["groups"] for d in g["duplicates"]}
    assert scores[EXACT_COPY] == 1.0 and float(NEAR) <= scores[NEAR_COPY] <= 1.0 + 1e-6
    assert "--move-to DIR --apply" in err  # a dry run says how to act


def test_threshold_exact_gives_only_hash_groups(built, monkeypatch, capsys):
    code, out, err = run_cli(
        monkeypatch, capsys, "dedup", "--index", str(built["index"]), "--threshold", "exact", "--format", "json"
    )
    assert code == 0, err
    data = json.loads(out)
    assert data["threshold"] is None
    assert [
        (g["keep"], [(d["path"], d["score"], d["kind"], d["check"]) for d in g["duplicates"]]) for g in data["groups"]
    ] == [("a.png", [(EXACT_COPY, 1.0, "exact", "bytes")])]


def test_default_table_and_csv_to_output_file(built, monkeypatch, capsys, tmp_path):
    code, out, err = run_cli(monkeypatch, capsys, "dedup", "--index", str(built["index"]), "--threshold", NEAR)
    assert code == 0, err
    assert "group 1: keep a.png" in out or "group 1: keep g.png" in out
    assert f"exact  {EXACT_COPY}" in out and f"near   {NEAR_COPY}" in out
    assert out.rstrip().endswith("2 groups, 2 duplicates, " + out.rstrip().rsplit(", ", 1)[-1])
    target = tmp_path / "groups.csv"
    code, out, err = run_cli(
        monkeypatch,
        capsys,
        "dedup",
        "--index",
        str(built["index"]),
        "--threshold",
        NEAR,
        "--format",
        "csv",
        "--output",
        str(target),
        "--keeper",
        "size,oldest",
    )  # the larger file is kept now, whatever its pixels
    assert code == 0, err
    assert out == "" and str(target) in err
    rows = list(csv.reader(io.StringIO(target.read_text())))
    assert rows[0] == ["group", "role", "path", "score", "kind"]
    roles = {(r[1], r[2]) for r in rows[1:]}
    big, small = sorted(["g.png", NEAR_COPY], key=lambda p: -(built["photos"] / p).stat().st_size)
    assert {("keep", "a.png"), ("duplicate", EXACT_COPY), ("keep", big), ("duplicate", small)} == roles


def test_calibrate_prints_a_histogram_with_the_presets(built, monkeypatch, capsys):
    code, out, err = run_cli(monkeypatch, capsys, "dedup", "--index", str(built["index"]), "--calibrate")
    assert code == 0, err
    lines = out.splitlines()
    assert "7 files" in lines[0] and len(lines) >= 21
    counts = [int(line.split()[3]) for line in lines[1:21]]
    assert sum(counts) == 7
    text = "\n".join(lines[1:])
    for name in ("strict", "default", "loose"):
        assert name in text
    code, out, _ = run_cli(
        monkeypatch, capsys, "dedup", "--index", str(built["index"]), "--calibrate", "--format", "json"
    )
    data = json.loads(out)
    assert sum(b["count"] for b in data["histogram"]) == 7 and data["files"] == 7
    assert set(data["presets"]) == {"strict", "default", "loose"}


def test_report_has_one_img_per_member(built, monkeypatch, capsys, tmp_path):
    page = tmp_path / "report.html"
    code, _, err = run_cli(
        monkeypatch, capsys, "dedup", "--index", str(built["index"]), "--threshold", NEAR, "--report", str(page)
    )
    assert code == 0, err
    html = page.read_text()
    assert html.count("<img ") == 4 and html.count('src="data:image/jpeg;base64,') == 4
    assert html.count("KEEP") == 2 and "http" not in html.replace("http-equiv", "")
    assert str(page) in err


def test_move_apply_then_undo_restores_the_tree_byte_for_byte(encoder, tmp_path, monkeypatch, capsys):
    b = build(tmp_path, encoder)
    photos, dups = b["photos"], tmp_path / "dups"
    before = snapshot(photos)

    code, out, err = run_cli(  # a dry run first: prints the moves, moves nothing
        monkeypatch, capsys, "dedup", "--index", str(b["index"]), "--threshold", NEAR, "--move-to", str(dups)
    )
    assert code == 0, err
    assert f"would move {EXACT_COPY}" in err and f"would move {NEAR_COPY}" in err and "add --apply" in err
    assert snapshot(photos) == before and not dups.exists()

    page = tmp_path / "report.html"
    code, out, err = run_cli(
        monkeypatch,
        capsys,
        "dedup",
        "--index",
        str(b["index"]),
        "--threshold",
        NEAR,
        "--move-to",
        str(dups),
        "--apply",
        "--report",
        str(page),
    )
    assert code == 0, err
    html = page.read_text()  # moved files are shown from where they are now
    assert html.count("<img ") == 4 and "no preview" not in html
    after = snapshot(photos)
    assert set(after) == set(before) - {EXACT_COPY, NEAR_COPY}  # keepers and unrelated files stay
    assert all(after[p] == before[p] for p in after)
    logs = sorted(dups.glob("undo-*.jsonl"))
    assert len(logs) == 1 and str(logs[0]) in err
    moved = snapshot(dups)
    assert moved[EXACT_COPY] == before[EXACT_COPY] and moved[NEAR_COPY] == before[NEAR_COPY]

    code, out, err = run_cli(monkeypatch, capsys, "undo", str(logs[0]))
    assert code == 0, err
    assert "restored 2 files" in out
    assert snapshot(photos) == before
    assert set(snapshot(dups)) == {logs[0].name}  # only the log is left in the move-to folder


@pytest.mark.parametrize(
    "case",
    [
        "apply without move-to",
        "bad threshold",
        "missing index",
        "bad format",
        "bad keeper",
        "bad k",
        "calibrate with move-to",
        "move-to inside",
        "missing log",
    ],
)
def test_errors_are_one_line_and_exit_2(built, monkeypatch, capsys, tmp_path, case):
    index = str(built["index"])
    args, needle = {
        "apply without move-to": (["dedup", "--index", index, "--apply"], "--move-to"),
        "bad threshold": (["dedup", "--index", index, "--threshold", "medium"], "threshold"),
        "missing index": (["dedup", "--index", str(tmp_path / "nowhere")], "nowhere"),
        "bad format": (["dedup", "--index", index, "--format", "xml"], "--format"),
        "bad keeper": (["dedup", "--index", index, "--keeper", "pixels,colour"], "colour"),
        "bad k": (["dedup", "--index", index, "-k", "0"], "k 0"),
        "calibrate with move-to": (
            ["dedup", "--index", index, "--calibrate", "--move-to", str(tmp_path / "dups")],
            "calibrate",
        ),
        "move-to inside": (
            ["dedup", "--index", index, "--threshold", "exact", "--move-to", str(built["photos"] / "dups"), "--apply"],
            "outside",
        ),
        "missing log": (["undo", str(tmp_path / "undo-x.jsonl")], "no such move log"),
    }[case]
    before = snapshot(built["photos"])
    code, out, err = run_cli(monkeypatch, capsys, *args)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and needle in lines[0], err
    assert out == ""
    assert snapshot(built["photos"]) == before


@pytest.mark.slow
def test_python_m_retrieval_entry_point(built):
    """The real console entry (register_all wires dedup): JSON on stdout, log lines only on stderr."""
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    cmd = [
        sys.executable,
        "-m",
        "cli",
        "dedup",
        "--index",
        str(built["index"]),
        "--threshold",
        "exact",
        "--format",
        "json",
    ]
    run = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120)
    assert run.returncode == 0, run.stderr
    data = json.loads(run.stdout)
    assert [(g["keep"], [(d["path"], d["score"], d["kind"]) for d in g["duplicates"]]) for g in data["groups"]] == [
        ("a.png", [(EXACT_COPY, 1.0, "exact")])
    ]
