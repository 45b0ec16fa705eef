"""Probe 4 (issue 12): where one line is promised there was a traceback: `--index`, `--output` or
`--report` under a regular file or where nothing can be written, and an edited or damaged encoder.json
(unknown arch, wrong dim, not an object, `embed_size: 0`, which marked every image bad and exited 0)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from moco.export import read_spec
from plumbing.errors import EncoderSpecError
from tests.reliability.conftest import HUGE, edited_encoder, make_image, one_line_error, run_cli


@pytest.fixture(scope="module")
def built(tmp_path_factory, encoder) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("oneline")
    photos = base / "photos"
    for i in range(5):
        make_image(photos / f"{i}.png", seed=i)
    (base / "a-file").write_text("not a folder")
    from retrieval.indexing.run import IndexConfig, index_folder

    index_folder(IndexConfig(photos, encoder, base / "idx", batch_size=4, workers=0, device="cpu"))
    return {"base": base, "photos": photos, "index": base / "idx", "file": base / "a-file"}


UNWRITABLE = ["a-file/inside"] + (["/proc/retrieval-probe/inside"] if sys.platform == "linux" else [])


@pytest.mark.parametrize("where", UNWRITABLE)
def test_index_folder_that_cannot_be_created(built, encoder, monkeypatch, capsys, where):
    target = where if where.startswith("/") else str(built["base"] / where)
    code, _, err = run_cli(
        monkeypatch, capsys, "index", str(built["photos"]), "--model", str(encoder), "--index", target
    )
    one_line_error(code, err, target)


@pytest.mark.parametrize("option", ["--output", "--report"])
@pytest.mark.parametrize("where", [*UNWRITABLE, "."])
def test_dedup_output_that_cannot_be_written(built, monkeypatch, capsys, option, where):
    target = where if where.startswith("/") else str(built["base"] / where)
    code, out, err = run_cli(monkeypatch, capsys, "dedup", "--index", str(built["index"]), option, target)
    one_line_error(code, err, option)
    assert out == ""  # refused before any work: nothing half-done


EDITS = {
    "arch": lambda s: {**s, "arch": "resnet9000"},
    "embedding_dim": lambda s: {**s, "embedding_dim": s["embedding_dim"] + 1},
    "embed_size": lambda s: {**s, "embed_size": 0},
    "head_dim": lambda s: {**s, "head_dim": "sixteen"},
    "std": lambda s: {**s, "std": [0.2, 0.0, 0.2]},
    "flip_average": lambda s: {**s, "flip_average": "yes"},
}


@pytest.mark.parametrize(
    ("edit", "field"),
    [*((EDITS[f], f) for f in EDITS), *((HUGE[f], f) for f in HUGE)],
    ids=[*EDITS, *(f"huge-{f}" for f in HUGE)],
)
def test_an_edited_encoder_json_is_refused_naming_the_file_and_the_field(encoder, tmp_path, edit, field):
    """A wrong value (probe 4) or a size that would allocate without bound (issue 25 item 5, the HUGE cases):
    read_spec refuses it before building anything, naming encoder.json and the field."""
    run = edited_encoder(encoder, tmp_path, edit)
    with pytest.raises(EncoderSpecError) as info:
        read_spec(run)
    assert info.value.field == field and str(run / "encoder.json") in str(info.value)


@pytest.mark.parametrize("field", ["arch", "embedding_dim", "embed_size"])
def test_index_with_an_edited_encoder_is_one_line(built, encoder, tmp_path, monkeypatch, capsys, field):
    run = edited_encoder(encoder, tmp_path, EDITS[field])
    code, _, err = run_cli(
        monkeypatch, capsys, "index", str(built["photos"]), "--model", str(run), "--index", str(tmp_path / "i")
    )
    one_line_error(code, err, "encoder.json", field)
    assert not (tmp_path / "i" / "CURRENT").exists()


@pytest.mark.parametrize("text", ["[1, 2, 3]", '"resnet18"', "null", "{"])
def test_encoder_json_that_is_not_an_object(built, encoder, tmp_path, monkeypatch, capsys, text):
    run = edited_encoder(encoder, tmp_path, lambda s: s)
    (run / "encoder.json").write_text(text)
    code, _, err = run_cli(monkeypatch, capsys, "search", str(built["photos"]), "--index", str(built["index"]),
                           "--model", str(run))  # fmt: skip
    one_line_error(code, err, "encoder.json")
