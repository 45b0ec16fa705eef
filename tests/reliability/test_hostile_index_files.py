"""Issue 18, hostile files: a bit-flipped or truncated catalog, vectors or FAISS file is caught by its
checksum before it is used, and every command says, in one line, which file and how to rebuild."""

from __future__ import annotations

from pathlib import Path

import pytest

from retrieval.indexing.generations import CHECKSUMMED, current_generation
from retrieval.indexing.run import IndexConfig, index_folder
from tests.reliability.conftest import make_image, one_line_error, run_cli, snapshot


@pytest.fixture(scope="module")
def pristine(tmp_path_factory, encoder) -> tuple[Path, Path]:
    base = tmp_path_factory.mktemp("hostile")
    photos = base / "photos"
    for i in range(6):
        make_image(photos / f"{i}.png", seed=i)
    index_folder(IndexConfig(photos, encoder, base / "idx", batch_size=4, workers=0, device="cpu", progress=False))
    return photos, base / "idx"


def damaged_copy(pristine: tuple[Path, Path], tmp_path: Path, file: str, how: str) -> Path:
    import shutil

    index = tmp_path / "idx"
    shutil.copytree(pristine[1], index)
    path = index / current_generation(index) / file
    data = bytearray(path.read_bytes())
    if how == "flip":
        data[len(data) // 2] ^= 0x10
    else:
        del data[len(data) * 2 // 3 :]
    path.write_bytes(bytes(data))
    return index


@pytest.mark.parametrize("how", ["flip", "truncate"])
@pytest.mark.parametrize("file", CHECKSUMMED)
def test_a_damaged_index_file_is_named_with_how_to_rebuild(pristine, encoder, tmp_path, monkeypatch, capsys, file, how):
    photos, _ = pristine
    index = damaged_copy(pristine, tmp_path, file, how)
    before = snapshot(index)
    rebuild = f"retrieval index {photos} --model {encoder} --index {index} --rebuild"
    for args in (
        ("search", str(photos / "0.png"), "--index", str(index)),
        ("dedup", "--index", str(index)),
        ("index", str(photos), "--model", str(encoder), "--index", str(index)),
    ):
        if args[0] == "index" and file == "index.faiss":
            continue  # an update reads only the catalog and the vectors (the FAISS index is rebuilt anyway)
        code, out, err = run_cli(monkeypatch, capsys, *args)
        one_line_error(code, err, f"{file}: checksum mismatch", rebuild)
        assert out == ""
    assert snapshot(index) == before  # nothing used, nothing changed

    code, out, err = run_cli(monkeypatch, capsys, "index", str(photos), "--model", str(encoder), "--index", str(index),
                             "--rebuild")  # fmt: skip
    assert code == 0 and "6 images indexed" in out, err
    code, out, err = run_cli(monkeypatch, capsys, "search", str(photos / "0.png"), "--index", str(index))
    assert code == 0, err
