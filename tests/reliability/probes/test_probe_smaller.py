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

from plumbing.images import list_images
from retrieval.indexing.run import IndexConfig, index_folder
from tests.reliability.conftest import REPO, cli_subprocess, make_image, run_cli


def png_header_only(path: Path, width: int, height: int) -> None:
    """A small PNG file that declares width x height (a decompression bomb by its header)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)))


def test_dangling_symlink_and_bomb_each_get_a_skipping_line(tmp_path, encoder):
    photos = tmp_path / "photos"
    for i in range(3):
        make_image(photos / f"{i}.png", seed=i)
    (photos / "dangling.png").symlink_to(photos / "gone.png")
    png_header_only(photos / "bomb.png", 100_000, 100_000)
    code, out, err, shown = cli_subprocess(
        "index", str(photos), "--model", str(encoder), "--index", str(tmp_path / "i")
    )
    assert code == 0, err
    skipping = [line for line in shown if line.startswith("skipping ")]
    assert any(str(photos / "dangling.png") in line and "missing" in line for line in skipping), err
    assert any(str(photos / "bomb.png") in line and "bomb" in line for line in skipping), err
    assert "3 images indexed, 1 bad" in out


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
    index_folder(IndexConfig(photos, encoder, tmp_path / "idx", batch_size=4, workers=0, device="cpu"))
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
                         device="cpu"))
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

    report = index_folder(IndexConfig(photos, encoder, index, batch_size=4, workers=0, device="cpu"))
    assert report.resumed == 4 * batches_done
    assert report.embedded == 12 - 4 * batches_done
    assert report.ok == 12


def test_reading_the_resume_cache_reads_each_array_once(tmp_path, monkeypatch):
    """Reopening the cache read every array from the zip once per row (12,800 rows: 34 s; now 0.45 s on this
    machine, measured outside the test suite). Counted here, not timed: one read per array and shard."""
    import numpy as np

    from retrieval.indexing.plan import Row
    from retrieval.indexing.resume_cache import WorkCache

    cache = WorkCache(tmp_path / "work", "e" * 64, 8, 0)
    rows = [Row(f"{i}.png", i, i, f"{i:064x}", 4, 3, vector=np.full(8, i, np.float32)) for i in range(100)]
    cache.save(rows[:60])
    cache.save(rows[60:])
    reads: list[str] = []
    real = np.lib.npyio.NpzFile.__getitem__
    monkeypatch.setattr(np.lib.npyio.NpzFile, "__getitem__", lambda self, key: reads.append(key) or real(self, key))
    again = WorkCache(tmp_path / "work", "e" * 64, 8, 0)
    assert len(reads) == 2 * 9  # 2 shards x 9 arrays
    assert again.get("42.png", 42, 42).vector.tolist() == [42.0] * 8
    assert again.by_hash(f"{99:064x}").path == "99.png"
