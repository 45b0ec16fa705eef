"""`retrieval index / search / info` through the real CLI entry (cli.main.main): output formats
with their exact schema, the default index folder, and one-line errors with exit code 2."""

from __future__ import annotations

import contextlib
import csv
import io
import json
from pathlib import Path

import numpy as np
import pytest
import typer
from PIL import Image

from cli.commands import index as index_cmd
from cli.commands import info as info_cmd
from cli.commands import search as search_cmd
from moco.export import save_random_encoder
from tests import cli_runner


def make_image(path: Path, seed: int) -> Path:
    blocks = np.random.default_rng(seed).integers(0, 256, (4, 5, 3), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(blocks).resize((40, 32), Image.Resampling.NEAREST).save(path)
    return path


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/retrieval/conftest.py


def run_cli(monkeypatch, capsys, *args: str) -> tuple[int, str, str]:
    """Run `retrieval ARGS...` in-process via cli.main, on an app holding only this issue's commands."""
    return cli_runner.run_cli(
        monkeypatch, capsys, lambda app: [c.register(app) for c in (index_cmd, search_cmd, info_cmd)], *args
    )


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> dict[str, Path]:
    """photos/ (6 images + 1 bad), runs/tiny, and indexes/tiny built by the CLI with the default --index."""
    base = tmp_path_factory.mktemp("cli")
    photos = base / "photos"
    for i in range(6):
        make_image(photos / f"{i}.png", seed=i)
    (photos / "bad.png").write_bytes(b"not a png")
    save_random_encoder(base / "runs" / "tiny", embed_size=32, dim=16, seed=0)
    mp = pytest.MonkeyPatch()
    mp.chdir(base)
    stdout, stderr = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        code, _, _ = run_cli(mp, _NoCapture(), "index", str(photos), "--model", "runs/tiny", "--workers", "2")
    mp.undo()
    out, err = stdout.getvalue(), stderr.getvalue()
    assert code == 0, err
    assert "6 images indexed, 1 bad" in out
    return {"base": base, "photos": photos, "index": base / "indexes" / "tiny", "model": base / "runs" / "tiny"}


class _NoCapture:
    """capsys stand-in for the module fixture, which redirects the streams itself."""

    def readouterr(self) -> tuple[str, str]:
        return "", ""


def test_default_index_folder_is_named_after_the_run(built):
    assert (built["index"] / "CURRENT").is_file()


def test_search_json_schema_is_exact(built, monkeypatch, capsys):
    photos = built["photos"]
    code, out, err = run_cli(
        monkeypatch,
        capsys,
        "search",
        str(photos / "2.png"),
        str(photos / "4.png"),
        "--index",
        str(built["index"]),
        "-k",
        "3",
        "--format",
        "json",
    )
    assert code == 0, err
    data = json.loads(out)
    assert isinstance(data, list) and len(data) == 2
    for entry, q in zip(data, ("2.png", "4.png"), strict=True):
        assert set(entry) == {"query", "results"}
        assert entry["query"] == str(photos / q)
        assert [r["rank"] for r in entry["results"]] == [1, 2, 3]
        for r in entry["results"]:
            assert set(r) == {"rank", "path", "score", "band", "cosine"}  # the score as read, its band, the raw cosine
            assert isinstance(r["rank"], int) and isinstance(r["path"], str) and isinstance(r["score"], float)
            assert isinstance(r["band"], str) and isinstance(r["cosine"], float)
            assert -1.0 - 1e-5 <= r["cosine"] <= 1.0 + 1e-5 and r["score"] <= 1.0 + 1e-5
        cosines = [r["cosine"] for r in entry["results"]]  # ranked by cosine (each hit's score has its own scale)
        assert cosines == sorted(cosines, reverse=True)
        assert entry["results"][0]["path"] == str(photos.resolve() / q)
        assert entry["results"][0]["score"] == pytest.approx(1.0, abs=1e-5)


def test_search_exclude_self_folder_and_csv(built, monkeypatch, capsys):
    photos = built["photos"]
    code, out, err = run_cli(
        monkeypatch,
        capsys,
        "search",
        str(photos),
        "--index",
        str(built["index"]),
        "-k",
        "2",
        "--format",
        "csv",
        "--exclude-self",
    )
    assert code == 0, err
    rows = list(csv.reader(io.StringIO(out)))
    assert rows[0] == ["query", "rank", "path", "score", "band", "cosine"]
    assert len(rows) == 1 + 6 * 2  # a bad file inside a query folder is skipped
    for query, rank, path, score, band, cosine in rows[1:]:
        assert path != str(Path(query).resolve()) and rank in ("1", "2") and band
        float(score), float(cosine)


def test_search_table(built, monkeypatch, capsys):
    photos = built["photos"]
    code, out, _ = run_cli(monkeypatch, capsys, "search", str(photos / "1.png"), "--index", str(built["index"]))
    assert code == 0
    lines = out.splitlines()
    assert lines[0] == str(photos / "1.png")
    assert len(lines) == 1 + 6 and str(photos.resolve() / "1.png") in lines[1]


def test_info(built, monkeypatch, capsys):
    code, out, _ = run_cli(monkeypatch, capsys, "info", "--index", str(built["index"]))
    assert code == 0
    fields = dict(line.split(":", 1) for line in out.splitlines())
    assert fields["root"].strip() == str(built["photos"].resolve())
    assert fields["files"].strip() == "6 ok, 1 bad"
    assert fields["kind"].strip() == "flat"
    assert fields["recall@10"].strip() == "1.0000"
    assert str(built["model"].resolve()) in fields["encoder"]


def test_info_json_and_csv_schema_is_exact(built, monkeypatch, capsys):
    keys = ["index", "generation", "format_version", "created", "root", "files_ok", "files_bad", "encoder"]
    keys += ["encoder_sha256", "dim", "kind", "params", "recall_at_10"]
    code, out, err = run_cli(monkeypatch, capsys, "info", "--index", str(built["index"]), "--format", "json")
    assert code == 0, err
    data = json.loads(out)
    assert list(data) == keys
    assert (data["root"], data["files_ok"], data["files_bad"], data["kind"]) == (
        str(built["photos"].resolve()),
        6,
        1,
        "flat",
    )
    assert data["dim"] == 16 and data["params"] == {} and data["recall_at_10"] == 1.0
    code, out, err = run_cli(monkeypatch, capsys, "info", "--index", str(built["index"]), "--format", "csv")
    assert code == 0, err
    rows = list(csv.reader(io.StringIO(out)))
    assert rows[0] == ["field", "value"] and [r[0] for r in rows[1:]] == keys
    assert dict(rows[1:])["files_ok"] == "6" and dict(rows[1:])["params"] == "{}"


@pytest.mark.parametrize(
    "case",
    ["missing query", "corrupt query", "missing index", "bad kind", "damaged index", "newer format", "other model"],
)
def test_errors_are_one_line_and_exit_2(built, monkeypatch, capsys, tmp_path, case):
    photos, index = built["photos"], built["index"]
    if case == "missing query":
        args, needle = ["search", str(photos / "nope.png"), "--index", str(index)], str(photos / "nope.png")
    elif case == "corrupt query":
        args, needle = ["search", str(photos / "bad.png"), "--index", str(index)], str(photos / "bad.png")
    elif case == "missing index":
        args, needle = ["search", str(photos / "1.png"), "--index", str(tmp_path / "nowhere")], "nowhere"
    elif case == "bad kind":
        args, needle = ["index", str(photos), "--model", str(built["model"]), "--kind", "lsh"], "--kind"
    elif case == "other model":
        other = tmp_path / "other"
        save_random_encoder(other, embed_size=32, dim=16, seed=1)
        args, needle = ["search", str(photos / "1.png"), "--index", str(index), "--model", str(other)], "encoder"
    else:
        import shutil

        copy = tmp_path / "copy"
        shutil.copytree(index, copy)
        gen = copy / (copy / "CURRENT").read_text().strip()
        if case == "damaged index":
            data = bytearray((gen / "index.faiss").read_bytes())
            data[-20] ^= 0xFF
            (gen / "index.faiss").write_bytes(bytes(data))
            needle = "index.faiss: checksum mismatch"
        else:
            manifest = json.loads((gen / "manifest.json").read_text())
            manifest["format_version"] = 99
            (gen / "manifest.json").write_text(json.dumps(manifest))
            needle = "newer"
        args = ["search", str(photos / "1.png"), "--index", str(copy)]
    code, out, err = run_cli(monkeypatch, capsys, *args)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and needle in lines[0], err
    assert out == ""


ALL_COMMANDS = {"train", "index", "search", "info", "dedup", "undo", "export-init", "eval", "app"}
EVAL_MODES = {"knn", "dedup", "pairs"}


def test_register_all_wires_every_command():
    """Every command of the CLI, each once, and nothing else: a command added or lost shows here."""
    from cli.commands import register_all

    app = typer.Typer()
    register_all(app)
    cli = typer.main.get_command(app)
    assert set(cli.commands) == ALL_COMMANDS
    assert len(app.registered_commands) + len(app.registered_groups) == len(ALL_COMMANDS)  # none registered twice
    assert set(cli.commands["eval"].commands) == EVAL_MODES
