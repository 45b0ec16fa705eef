"""Issue 18: the image loader under fuzzing (Hypothesis; the long run is `python -m tests.reliability.fuzz_images`).
Mutated JPEG/PNG/WebP/GIF/TIFF/BMP bytes, truncations, header bombs, zero bytes and wrong extensions give
an RGB image or a BadImageError, within a time limit, with no warning printed; an index run over such a
folder completes and keeps every good file."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from plumbing.images import BadImageError, load_image
from retrieval.indexing.run import IndexConfig, index_folder
from tests.reliability.conftest import cli_subprocess, make_image
from tests.reliability.fuzz_images import FORMATS, MUTATIONS, SUFFIX, check_file, header_bomb, mutate, seed_bytes

SEEDS = {fmt: seed_bytes(fmt) for fmt in FORMATS}
OPS = st.lists(
    st.tuples(st.sampled_from(MUTATIONS), st.integers(0, 1 << 30), st.integers(0, 1 << 16)), min_size=1, max_size=5
)


def test_every_seed_loads_as_it_should(tmp_path):
    """The oracle for the mutations: unmutated, each seed decodes (so a 'bad' outcome comes from the damage)."""
    for fmt, data in SEEDS.items():
        im = load_image(_write(tmp_path, fmt, data), min_side=32)
        assert im.mode == "RGB" and im.size == (24, 18), fmt


def _write(folder: Path, fmt: str, data: bytes) -> Path:
    path = folder / f"case{SUFFIX[fmt]}"
    path.write_bytes(data)
    return path


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(fmt=st.sampled_from(FORMATS), ops=OPS)
def test_mutated_files_are_an_image_or_a_bad_file_never_a_crash(tmp_path, fmt, ops):
    path = _write(tmp_path, fmt, mutate(SEEDS[fmt], ops))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        outcome = check_file(path, timeout=10.0)
    assert outcome in ("ok", "bad"), outcome
    assert not [w for w in caught if "PIL" in (w.filename or "")], [str(w.message) for w in caught]


@pytest.mark.parametrize(
    ("name", "data", "reason"),
    [
        ("bomb.png", header_bomb("PNG", 100_000, 100_000), "bomb"),
        ("bomb.gif", header_bomb("GIF", 65_535, 65_535), "bomb"),
        ("zero.jpg", b"", "empty file"),
        ("half.png", SEEDS["PNG"][: len(SEEDS["PNG"]) // 2], "truncated|corrupt"),
        ("text.webp", b"RIFF\0\0\0\0WEBPnot really", "not an image|corrupt"),
    ],
    ids=["png-bomb", "gif-bomb", "zero-bytes", "truncated-png", "fake-webp"],
)
def test_bombs_and_empty_or_truncated_files_are_bad_files(tmp_path, name, data, reason):
    (tmp_path / name).write_bytes(data)
    with pytest.raises(BadImageError, match=reason):
        load_image(tmp_path / name, min_side=32)


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "GIF"])
def test_a_wrong_extension_still_loads_by_content(tmp_path, fmt):
    wrong = {"PNG": ".jpg", "JPEG": ".png", "GIF": ".tif"}[fmt]
    path = tmp_path / f"picture{wrong}"
    path.write_bytes(SEEDS[fmt])
    assert load_image(path, min_side=32).size == (24, 18)


def test_an_index_run_over_fuzzed_files_completes_and_keeps_the_good_ones(tmp_path, encoder):
    rng = np.random.default_rng(3)
    photos = tmp_path / "photos"
    good = [make_image(photos / f"good{i}.png", seed=i) for i in range(3)]
    for i in range(40):
        fmt = FORMATS[i % len(FORMATS)]
        ops = [(MUTATIONS[int(rng.integers(len(MUTATIONS)))], int(rng.integers(1 << 30)), int(rng.integers(1 << 16)))]
        (photos / f"fuzz{i:02d}{SUFFIX[fmt]}").write_bytes(mutate(SEEDS[fmt], ops))
    report = index_folder(IndexConfig(photos, encoder, tmp_path / "idx", batch_size=4, workers=2, device="cpu"))
    assert report.ok + report.bad == 43
    from retrieval.searching.searcher import SearchIndex

    indexed = {r.path for r in SearchIndex.open(tmp_path / "idx").records}
    assert {p.name for p in good} <= indexed


def tiff_with_samples_per_pixel(n: int) -> bytes:
    """The TIFF seed with its SamplesPerPixel tag (277) set to n: Pillow logs an error line, then refuses it."""
    import struct

    data = bytearray(SEEDS["TIFF"])
    assert data[:2] == b"II"
    (ifd,) = struct.unpack_from("<I", data, 4)
    (count,) = struct.unpack_from("<H", data, ifd)
    for k in range(count):
        entry = ifd + 2 + 12 * k
        if struct.unpack_from("<H", data, entry)[0] == 277:
            struct.pack_into("<HHIHH", data, entry, 277, 3, 1, n, 0)
            return bytes(data)
    raise AssertionError("no SamplesPerPixel tag in the seed")


def test_the_cli_prints_one_skipping_line_not_pillows_own_log(tmp_path, encoder):
    photos = tmp_path / "photos"
    make_image(photos / "good.png", seed=0)
    (photos / "odd.tif").write_bytes(tiff_with_samples_per_pixel(40_000))
    with pytest.raises(BadImageError):
        load_image(photos / "odd.tif")
    code, _, err, shown = cli_subprocess("index", str(photos), "--model", str(encoder), "--index", str(tmp_path / "i"))
    assert code == 0, err
    assert not [line for line in shown if "More samples per pixel" in line], err
    assert [line for line in shown if line.startswith(f"skipping {photos / 'odd.tif'}")], err
