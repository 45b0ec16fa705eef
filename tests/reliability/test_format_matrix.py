"""Issue 18, format matrix: all 8 EXIF orientations, in every format that carries one, load upright and
embed like the upright picture (cosine > 0.99, and closer than the stored pixels read without the tag);
WebP (lossless, lossy, animated), AVIF and HEIC (where Pillow has them) load as a person expects."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image, features

from plumbing.images import image_size, load_image
from retrieval.embed import Embedder
from tests.retrieval.conftest import scene

# display = STORED_TO_SHOWN[o](stored), so a file holding inverse(upright) with tag o shows the upright picture
STORED_TO_SHOWN = {
    1: None,
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
INVERSE = {
    None: None,
    Image.Transpose.ROTATE_270: Image.Transpose.ROTATE_90,
    Image.Transpose.ROTATE_90: Image.Transpose.ROTATE_270,
}
LOSSLESS = {"PNG": {}, "TIFF": {}, "WEBP": {"lossless": True}}
LOSSY = {"JPEG": {"quality": 95}}


def stored(upright: Image.Image, orientation: int) -> Image.Image:
    t = STORED_TO_SHOWN[orientation]
    t = INVERSE.get(t, t)
    return upright if t is None else upright.transpose(t)


def save_with_orientation(path: Path, im: Image.Image, fmt: str, orientation: int) -> None:
    exif = Image.Exif()
    exif[0x0112] = orientation
    options = {**LOSSLESS, **LOSSY}[fmt]
    if fmt == "TIFF":
        im.save(path, fmt, tiffinfo={0x0112: orientation})
    else:
        im.save(path, fmt, exif=exif.tobytes(), **options)


@pytest.fixture(scope="module")
def embedder(encoder) -> Embedder:
    return Embedder.load(encoder, device="cpu")


UPRIGHT = scene(5, (96, 64))  # wider than tall: a wrong orientation changes the shape too


@pytest.mark.parametrize("fmt", [*LOSSLESS, *LOSSY])
@pytest.mark.parametrize("orientation", range(1, 9))
def test_every_orientation_loads_and_embeds_upright(tmp_path, embedder, fmt, orientation):
    path = tmp_path / f"photo.{fmt.lower()}"
    raw = stored(UPRIGHT, orientation)
    save_with_orientation(path, raw, fmt, orientation)

    im = load_image(path)
    assert im.size == UPRIGHT.size and image_size(path) == UPRIGHT.size
    a, b = np.asarray(im, np.int16), np.asarray(UPRIGHT, np.int16)
    if fmt in LOSSLESS:
        np.testing.assert_array_equal(a, b)
    else:
        assert np.abs(a - b).mean() < 3

    z = embedder.encode([load_image(path, min_side=embedder.min_side), UPRIGHT, raw.convert("RGB")])  # (3, D)
    same, ignoring_tag = float(z[0] @ z[1]), float(z[2] @ z[1])
    assert same > 0.99
    if orientation not in (1, 2) and fmt in LOSSLESS:  # 2 is a mirror: it embeds alike (flip averaging)
        assert same > ignoring_tag  # the oracle separates: the tag is what makes it match


def _frames(path: Path, fmt: str, **options) -> None:
    first, second = scene(1, (48, 32)), scene(2, (48, 32))
    first.save(path, fmt, save_all=True, append_images=[second], duration=100, **options)


@pytest.mark.parametrize(
    ("fmt", "options", "tolerance"),
    [("WEBP", {"lossless": True}, 0), ("WEBP", {"quality": 90}, 12), ("AVIF", {"quality": 90}, 12)],
)
def test_webp_and_avif_load_as_the_picture(tmp_path, fmt, options, tolerance):
    if fmt == "AVIF" and not features.check("avif"):
        pytest.skip("Pillow built without AVIF")
    path = tmp_path / f"p.{fmt.lower()}"
    pic = scene(3, (48, 32))
    pic.save(path, fmt, **options)
    im = load_image(path)
    assert im.mode == "RGB" and im.size == pic.size
    assert np.abs(np.asarray(im, np.int16) - np.asarray(pic, np.int16)).mean() <= tolerance


def test_animated_webp_gives_the_first_frame(tmp_path):
    path = tmp_path / "anim.webp"
    _frames(path, "WEBP", lossless=True)
    np.testing.assert_array_equal(np.asarray(load_image(path)), np.asarray(scene(1, (48, 32))))


def test_heic_loads_where_pillow_heif_is_installed(tmp_path):
    heif = pytest.importorskip("pillow_heif")
    heif.register_heif_opener()
    path = tmp_path / "p.heic"
    pic = scene(4, (64, 48))
    pic.save(path, "HEIF", quality=90)
    im = load_image(path)
    assert im.size == pic.size and np.abs(np.asarray(im, np.int16) - np.asarray(pic, np.int16)).mean() < 8
