"""Probe 7 (issue 12): a 13,000 x 13,000 PNG cost hundreds of MB beyond its decoded pixels (full-size RGB
and RGBA copies before the downscale). Now the conversion and the integer box reduce run strip by strip:
the same pixels as before (so vectors do not change), and little memory beyond the decoded picture."""

from __future__ import annotations

import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import plumbing.images as images
from plumbing.images import load_image
from tests.reliability.conftest import REPO

CHANNELS = {0: 1, 2: 3, 3: 1, 6: 4}  # PNG colour type -> bytes per pixel (L, RGB, P, RGBA)


def big_png(path: Path, side: int, colour_type: int) -> Path:
    """A side x side PNG written row by row: cheap to make, large to decode."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    n = side * CHANNELS[colour_type]
    row = b"\0" + (bytes(range(256)) * (n // 256 + 1))[:n]
    z = zlib.compressobj(1)
    data = b"".join(z.compress(row) for _ in range(side)) + z.flush()
    head = chunk(b"IHDR", struct.pack(">IIBBBBB", side, side, 8, colour_type, 0, 0, 0))
    palette = chunk(b"PLTE", bytes(i % 256 for i in range(768))) if colour_type == 3 else b""
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + head + palette + chunk(b"IDAT", data) + chunk(b"IEND", b""))
    return path


PEAK = """
import sys
from pathlib import Path
from plumbing.images import load_image
from tests.reliability.conftest import REPO
from PIL import Image

def status(key):
    for line in open("/proc/self/status"):
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024

Image.new("RGB", (64, 64)).save(sys.argv[2])
load_image(Path(sys.argv[2]), min_side=32)  # warm: every code path imported
with open("/proc/self/clear_refs", "w") as f:
    f.write("5")  # resets the peak (VmHWM) to the current resident size
before = status("VmRSS")
im = load_image(Path(sys.argv[1]), min_side=32)
assert im.mode == "RGB" and min(im.size) == 32, im
print(status("VmHWM") - before)
"""


@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="peak memory read from Linux /proc")
@pytest.mark.parametrize(("colour_type", "side"), [(0, 8000), (3, 8000), (6, 4000)])
def test_peak_memory_stays_near_the_decoded_picture(tmp_path, colour_type, side):
    """Pillow holds the decoded picture (1 byte/px for L and P, 4 for RGBA); before the fix the RGB copy
    (4 bytes/px) and the white composite of RGBA came on top: 5x the decoded size for L and P, 3.2x for RGBA
    (measured); now under 2x."""
    path = big_png(tmp_path / "big.png", side, colour_type)
    proc = subprocess.run(
        [sys.executable, "-c", PEAK, str(path), str(tmp_path / "small.png")],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    extra = int(proc.stdout.split()[-1])
    decoded = side * side * (4 if colour_type == 6 else 1)
    assert extra < 2 * decoded, f"{extra / 2**20:.0f} MiB beyond the start for {decoded / 2**20:.0f} MiB decoded"


def _old_path(im: Image.Image, target: tuple[int, int]) -> Image.Image:
    """The oracle: what load_image did before, one full-size RGB copy then Pillow's reduce + LANCZOS."""
    return images._to_rgb(im).resize(target, Image.Resampling.LANCZOS, reducing_gap=images.REDUCING_GAP)


@pytest.mark.parametrize("mode", ["RGB", "L", "P", "RGBA", "LA", "CMYK", "1", "I;16", "P+transparency"])
@pytest.mark.parametrize(("size", "min_side"), [((1000, 700), 32), ((701, 1333), 64), ((97, 2000), 32)])
def test_strips_give_exactly_the_pixels_of_the_whole_image_path(monkeypatch, mode, size, min_side):
    monkeypatch.setattr(images, "STRIP_PIXELS", 5000)  # many strips, most not a multiple of anything
    a = np.random.default_rng(0).integers(0, 256, (size[1], size[0], 4), dtype=np.uint8)
    if mode == "I;16":
        im = Image.fromarray(a[..., 0].astype(np.uint16) * 257)
    else:
        im = Image.fromarray(a, "RGBA").convert(mode.split("+")[0])
    if mode == "P+transparency":
        im.info["transparency"] = 3
    target = images._target_size(im.size, min_side)
    np.testing.assert_array_equal(np.asarray(images._shrink(im, target)), np.asarray(_old_path(im, target)))


def test_load_image_uses_the_strip_path_for_a_large_png(tmp_path, monkeypatch):
    seen: list[tuple[int, int]] = []
    real = images._shrink
    monkeypatch.setattr(images, "_shrink", lambda im, target: seen.append(im.size) or real(im, target))
    path = tmp_path / "p.png"
    Image.fromarray(np.random.default_rng(1).integers(0, 256, (600, 900), dtype=np.uint8)).save(path)
    im = load_image(path, min_side=32)
    assert seen == [(900, 600)] and im.size == (48, 32)
