"""Probe 7 (issue 12), the smaller findings: a dangling symlink and a decompression bomb skipped without a
"skipping" line of their own; a symlink and its target offered as a duplicate group (and the real copy
elsewhere not); a kill of `index` re-embedding everything because the resume cache was saved every
1,024 images or 30 s."""

from __future__ import annotations

import shutil
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import pytest

from moco.images import list_images
from retrieval.indexing.run import IndexConfig, index_folder
from tests.reliability.conftest import make_image, run_cli

REPO = Path(__file__).resolve().parents[2]


def png_header_only(path: Path, width: int, height: int) -> None:
    """A small PNG file that declares width x height (a decompression bomb by its header)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)))


def shown_lines(stderr: str) -> list[str]:
    """The lines as a terminal shows them: what follows the last carriage return (a progress bar redraw)."""
    return [line.rsplit("\r", 1)[-1] for line in stderr.split("\n")]


def test_dangling_symlink_and_bomb_each_get_a_skipping_line(tmp_path, encoder):
    photos = tmp_path / "photos"
    for i in range(3):
        make_image(photos / f"{i}.png", seed=i)
    (photos / "dangling.png").symlink_to(photos / "gone.png")
    png_header_only(photos / "bomb.png", 100_000, 100_000)
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "retrieval",
            "index",
            str(photos),
            "--model",
            str(encoder),
            "--index",
            str(tmp_path / "i"),
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    skipping = [line for line in shown_lines(proc.stderr) if line.startswith("skipping ")]
    assert any(str(photos / "dangling.png") in line and "missing" in line for line in skipping), proc.stderr
    assert any(str(photos / "bomb.png") in line and "bomb" in line for line in skipping), proc.stderr
    assert "3 images indexed, 1 bad" in proc.stdout


def test_a_symlink_is_listed_once_by_its_real_file(tmp_path, caplog):
    root = tmp_path / "photos"
    make_image(root / "deep" / "original.png", seed=1)
    (root / "l.png").symlink_to(root / "deep" / "original.png")
    (root / "l2.png").symlink_to(root / "l.png")  # a chain leads to the same file
    make_image(tmp_path / "outside.png", seed=2)
    (root / "out1.png").symlink_to(tmp_path / "outside.png")
    (root / "out2.png").symlink_to(tmp_path / "outside.png")  # two names of one file outside: listed once
    with caplog.at_level("INFO"):
        found = list_images(root)
    assert found == [root / "deep" / "original.png", root / "out1.png"]
    assert sum("symbolic link" in r.getMessage() for r in caplog.records) == 3


def test_dedup_groups_the_real_copy_not_the_symlink(tmp_path, encoder, monkeypatch, capsys):
    import json

    photos = tmp_path / "photos"
    for i in range(4):
        make_image(photos / f"img{i}.png", seed=i)
    make_image(photos / "zz" / "deep" / "original.png", seed=9)
    (photos / "l.png").symlink_to(photos / "zz" / "deep" / "original.png")  # shortest path: would be kept
    (photos / "other").mkdir()
    shutil.copyfile(photos / "zz" / "deep" / "original.png", photos / "other" / "copy.png")
    index_folder(IndexConfig(photos, encoder, tmp_path / "idx", batch_size=4, workers=0, device="cpu", progress=False))
    code, out, err = run_cli(
        monkeypatch, capsys, "dedup", "--index", str(tmp_path / "idx"), "--threshold", "exact", "--format", "json"
    )
    assert code == 0, err
    groups = json.loads(out)["groups"]
    assert [(g["keep"], [d["path"] for d in g["duplicates"]]) for g in groups] in (
        [("zz/deep/original.png", ["other/copy.png"])],
        [("other/copy.png", ["zz/deep/original.png"])],
    )


KILL_AFTER = """
import os, sys
from pathlib import Path
from retrieval.embed import Embedder
from retrieval.indexing.run import IndexConfig, index_folder

real, calls = Embedder.encode_tensors, [0]

def encode_then_die(self, x):
    calls[0] += 1
    if calls[0] > int(sys.argv[4]):
        os._exit(137)  # as SIGKILL: no finally, no atexit
    return real(self, x)

Embedder.encode_tensors = encode_then_die
index_folder(IndexConfig(Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3]), batch_size=4, workers=0,
                         device="cpu", progress=False))
"""


@pytest.mark.parametrize("batches_done", [1, 2])
def test_a_kill_after_n_batches_resumes_without_embedding_them_again(tmp_path, encoder, batches_done):
    photos = tmp_path / "photos"
    for i in range(12):
        make_image(photos / f"{i:02d}.png", seed=i)
    index = tmp_path / "idx"
    args = [str(photos), str(encoder), str(index), str(batches_done)]
    proc = subprocess.run([sys.executable, "-c", KILL_AFTER, *args], cwd=REPO, capture_output=True, timeout=300)
    assert proc.returncode == 137, proc.stderr.decode()
    assert not (index / "CURRENT").exists()

    report = index_folder(IndexConfig(photos, encoder, index, batch_size=4, workers=0, device="cpu", progress=False))
    assert report.resumed == 4 * batches_done
    assert report.embedded == 12 - 4 * batches_done
    assert report.ok == 12
