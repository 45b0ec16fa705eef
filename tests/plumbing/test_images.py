"""plumbing.images: listing, decoding edge cases and bad files, each against a hand-made oracle."""

from __future__ import annotations

import os
import struct
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageOps, JpegImagePlugin

from plumbing import images
from plumbing.errors import InputError
from plumbing.images import BadImageError, image_size, list_images, load_image

RED = (255, 0, 0)
GREY = (128, 128, 128)
WHITE = (255, 255, 255)


def _close(pixel: tuple[int, ...], expected: tuple[int, ...], tol: int) -> bool:
    return all(abs(int(a) - int(b)) <= tol for a, b in zip(pixel, expected, strict=True))


def _save_jpeg_with_orientation(path: Path, orientation: int, size: tuple[int, int] = (512, 256)) -> None:
    """Grey picture with a red square in its stored top-left corner, tagged with an EXIF orientation."""
    im = Image.new("RGB", size, GREY)
    im.paste(RED, (0, 0, size[1] * 3 // 8, size[1] * 3 // 8))
    exif = Image.Exif()
    exif[0x0112] = orientation
    im.save(path, quality=95, exif=exif.tobytes())


def _pixels(im: Image.Image) -> list[tuple[int, ...]]:
    return [tuple(int(v) for v in p) for p in np.asarray(im).reshape(-1, len(im.getbands()))]


def _corners(size: tuple[int, int], inset: int) -> dict[str, tuple[int, int]]:
    w, h = size
    return {
        "top-left": (inset, inset),
        "top-right": (w - 1 - inset, inset),
        "bottom-left": (inset, h - 1 - inset),
        "bottom-right": (w - 1 - inset, h - 1 - inset),
    }


# Where the stored top-left corner is displayed, and the displayed size of a 512x256 stored picture.
ORIENTATIONS = {
    1: ("top-left", (512, 256)),
    3: ("bottom-right", (512, 256)),
    6: ("top-right", (256, 512)),
    8: ("bottom-left", (256, 512)),
}


@pytest.mark.parametrize("min_side", [None, 64])
@pytest.mark.parametrize("orientation", [1, 3, 6, 8])
def test_exif_orientation_puts_the_corner_where_it_is_displayed(tmp_path, orientation, min_side):
    path = tmp_path / "photo.jpg"
    _save_jpeg_with_orientation(path, orientation)
    red_corner, displayed = ORIENTATIONS[orientation]

    im = load_image(path, min_side=min_side)

    assert im.mode == "RGB"
    expected_size = displayed if min_side is None else tuple(s // 4 for s in displayed)
    assert im.size == expected_size
    assert image_size(path) == displayed
    for name, xy in _corners(im.size, inset=4).items():
        expected = RED if name == red_corner else GREY
        assert _close(im.getpixel(xy), expected, tol=30), (name, im.getpixel(xy))
    if min_side is None:  # and the same pixels as Pillow's own reference transpose
        with Image.open(path) as ref:
            oracle = ImageOps.exif_transpose(ref).convert("RGB")
        np.testing.assert_array_equal(np.asarray(im), np.asarray(oracle))


def test_min_side_on_a_large_jpeg_decodes_in_draft_mode(tmp_path, monkeypatch):
    path = tmp_path / "big.jpg"
    Image.new("RGB", (1024, 768), GREY).save(path)
    decoded_sizes = []
    original_draft = JpegImagePlugin.JpegImageFile.draft

    def spy(self, mode, size):
        result = original_draft(self, mode, size)
        decoded_sizes.append(self.size)
        return result

    monkeypatch.setattr(JpegImagePlugin.JpegImageFile, "draft", spy)
    im = load_image(path, min_side=96)

    assert decoded_sizes == [(128, 96)]  # 1/8 scale: shorter side 96 >= min_side
    assert im.size == (128, 96)


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
@pytest.mark.parametrize(
    ("size", "min_side", "expected"),
    [
        ((300, 200), 64, (96, 64)),
        ((200, 300), 64, (64, 96)),
        ((1000, 333), 100, (300, 100)),
        ((2000, 1500), 100, (133, 100)),
        ((50, 40), 64, (50, 40)),  # never upscaled
        ((64, 64), 64, (64, 64)),
    ],
)
def test_min_side_keeps_aspect_and_never_upscales(tmp_path, fmt, size, min_side, expected):
    path = tmp_path / f"im.{fmt.lower()}"
    Image.new("RGB", size, GREY).save(path, fmt)

    im = load_image(path, min_side=min_side)

    assert im.size == expected
    assert min(im.size) >= min(min_side, min(size))
    assert abs(im.size[0] / im.size[1] - size[0] / size[1]) < 0.02
    assert _close(im.getpixel((im.size[0] // 2, im.size[1] // 2)), GREY, tol=3)


def test_min_side_must_be_positive(tmp_path):
    path = tmp_path / "a.png"
    Image.new("RGB", (8, 8)).save(path)
    with pytest.raises(ValueError, match="min_side"):
        load_image(path, min_side=0)


def test_cmyk_jpeg_adobe_inverted_decodes_to_rgb(tmp_path):
    path = tmp_path / "cmyk.jpg"
    im = Image.new("CMYK", (32, 16), (0, 255, 255, 0))  # left: pure red ink mix
    im.paste((0, 0, 0, 128), (16, 0, 32, 16))  # right: half black
    im.save(path, quality=95)
    assert b"Adobe" in path.read_bytes()  # Pillow writes Adobe-style inverted CMYK

    rgb = load_image(path)

    assert rgb.mode == "RGB"
    assert _close(rgb.getpixel((4, 8)), RED, tol=12)
    assert _close(rgb.getpixel((27, 8)), (127, 127, 127), tol=12)


def test_rgba_composites_onto_white(tmp_path):
    path = tmp_path / "rgba.png"
    im = Image.new("RGBA", (4, 1))
    im.putdata([(0, 0, 0, 0), (0, 0, 255, 255), (0, 0, 0, 128), (255, 0, 0, 255)])
    im.save(path)

    pixels = _pixels(load_image(path))

    expected = [WHITE, (0, 0, 255), (127, 127, 127), RED]  # c * a + 255 * (1 - a)
    assert all(_close(p, e, tol=1) for p, e in zip(pixels, expected, strict=True)), pixels


def test_la_composites_onto_white(tmp_path):
    path = tmp_path / "la.png"
    im = Image.new("LA", (2, 1))
    im.putdata([(0, 0), (0, 255)])
    im.save(path)

    assert _pixels(load_image(path)) == [WHITE, (0, 0, 0)]


@pytest.mark.parametrize("suffix", [".png", ".gif"])
def test_palette_with_transparency_composites_onto_white(tmp_path, suffix):
    path = tmp_path / f"p{suffix}"
    im = Image.new("P", (4, 1))
    im.putpalette([0, 0, 0, 255, 0, 0] + [0, 0, 0] * 254)  # index 0 black (transparent), 1 red
    im.putdata([0, 1, 0, 1])
    im.save(path, transparency=0)
    with Image.open(path) as check:
        assert check.mode == "P" and "transparency" in check.info

    assert _pixels(load_image(path)) == [WHITE, RED, WHITE, RED]


def test_one_bit_image(tmp_path):
    path = tmp_path / "bw.png"
    im = Image.new("1", (2, 1))
    im.putdata([0, 1])
    im.save(path)

    assert _pixels(load_image(path)) == [(0, 0, 0), WHITE]


@pytest.mark.parametrize(
    ("suffix", "dtype", "top", "mode"),
    [
        (".png", np.uint16, 65535, "I;16"),
        (".tif", ">u2", 65535, "I;16B"),
        (".tif", np.int32, 65535, "I"),
        (".tif", np.float32, 1.0, "F"),
    ],
)
def test_high_bit_depth_gradient_maps_to_full_8_bit_range(tmp_path, suffix, dtype, top, mode):
    path = tmp_path / f"grad{suffix}"
    row = np.linspace(0, top, 257)
    if np.issubdtype(np.dtype(dtype), np.integer):
        row = np.rint(row)
    Image.fromarray(np.tile(row, (2, 1)).astype(dtype)).save(path)
    with Image.open(path) as check:
        assert check.mode == mode

    grey = np.asarray(load_image(path))[0, :, 0].astype(int)  # (257,) red channel of row 0

    assert (np.diff(grey) >= 0).all()
    assert grey[0] == 0 and grey[-1] == 255
    assert abs(grey[128] - 128) <= 1  # mid-grey stays mid-grey, nothing clipped to white
    assert (grey >= 250).sum() <= 6


def test_dark_16_bit_png_stays_dark(tmp_path):
    path = tmp_path / "dark.png"
    Image.fromarray(np.full((4, 4), 4112, dtype=np.uint16)).save(path)  # 4112 / 257 = 16

    assert load_image(path).getpixel((0, 0)) == (16, 16, 16)


@pytest.mark.parametrize("suffix", [".gif", ".webp"])
def test_animated_image_gives_first_frame(tmp_path, suffix):
    path = tmp_path / f"anim{suffix}"
    frames = [Image.new("RGB", (16, 16), c) for c in (RED, (0, 0, 255))]
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=100, loop=0, lossless=True)
    with Image.open(path) as check:
        assert check.n_frames == 2

    im = load_image(path)

    assert _close(im.getpixel((8, 8)), RED, tol=4)


# ----------------------------------------------------------------------------------------- bad files


def _noise_jpeg(path: Path) -> bytes:
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (128, 128, 3), dtype=np.uint8)).save(path, quality=90)
    return path.read_bytes()


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _make_truncated_jpeg(path: Path) -> None:
    data = _noise_jpeg(path)
    path.write_bytes(data[: len(data) * 6 // 10])


def _make_truncated_png(path: Path) -> None:
    rng = np.random.default_rng(1)
    Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _make_random_bytes(path: Path) -> None:
    path.write_bytes(np.random.default_rng(2).bytes(2000))


def _make_text(path: Path) -> None:
    path.write_text("not a picture\n")


def _make_empty(path: Path) -> None:
    path.write_bytes(b"")


def _make_zero_width_png(path: Path) -> None:
    ihdr = struct.pack(">IIBBBBB", 0, 5, 8, 2, 0, 0, 0)  # width 0, height 5, 8-bit RGB
    idat = zlib.compress(b"\x00" * 5)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", idat) + _png_chunk(b"IEND", b"")
    )


def _make_folder(path: Path) -> None:
    path.mkdir()


BAD_FILES = {
    "truncated.jpg": _make_truncated_jpeg,
    "truncated.png": _make_truncated_png,
    "random.jpg": _make_random_bytes,
    "notes.png": _make_text,
    "empty.jpg": _make_empty,
    "zero.png": _make_zero_width_png,
    "folder.jpg": _make_folder,
}


def _assert_bad(exc: BadImageError, path: Path) -> None:
    assert isinstance(exc, InputError)
    assert exc.path == path
    assert exc.reason
    assert str(exc) == f"{path}: {exc.reason}"


@pytest.mark.parametrize("name", sorted(BAD_FILES))
def test_bad_files_raise_bad_image_error_naming_the_file(tmp_path, name):
    path = tmp_path / name
    BAD_FILES[name](path)

    with pytest.raises(BadImageError) as caught:
        load_image(path, min_side=32)
    _assert_bad(caught.value, path)
    with pytest.raises(BadImageError) as caught:
        load_image(path)
    _assert_bad(caught.value, path)


def test_truncated_jpeg_reason_says_truncated(tmp_path):
    path = tmp_path / "cut.jpg"
    _make_truncated_jpeg(path)

    with pytest.raises(BadImageError, match="truncated"):
        load_image(path)


def test_empty_and_missing_files_have_clear_reasons(tmp_path):
    empty, missing = tmp_path / "empty.jpg", tmp_path / "missing.jpg"
    empty.write_bytes(b"")

    with pytest.raises(BadImageError, match="empty file"):
        image_size(empty)
    with pytest.raises(BadImageError, match="does not exist"):
        load_image(missing)


def test_images_over_max_pixels_are_refused_from_the_header(tmp_path, monkeypatch):
    path = tmp_path / "bomb.png"
    Image.new("RGB", (20, 20)).save(path)
    monkeypatch.setattr(images, "MAX_PIXELS", 399)

    with pytest.raises(BadImageError, match="pixels") as caught:
        load_image(path)
    _assert_bad(caught.value, path)
    with pytest.raises(BadImageError, match="pixels"):
        image_size(path)

    monkeypatch.setattr(images, "MAX_PIXELS", 400)
    assert load_image(path).size == (20, 20)


def test_pillow_bomb_error_becomes_bad_image_and_its_warning_is_silenced(tmp_path, monkeypatch):
    path = tmp_path / "big.png"
    Image.new("RGB", (20, 20)).save(path)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 300)  # 400 px: over Pillow's warning threshold only

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert load_image(path).size == (20, 20)
    assert not [w for w in caught if issubclass(w.category, Image.DecompressionBombWarning)]

    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)  # 400 px > 2 * 100: Pillow's own error
    with pytest.raises(BadImageError, match="pixels"):
        load_image(path)


def test_permission_denied_is_a_bad_image(tmp_path, monkeypatch):
    path = tmp_path / "locked.jpg"
    Image.new("RGB", (8, 8)).save(path)
    if os.geteuid() != 0:
        path.chmod(0)
    else:  # root reads anything: simulate the OS refusing instead

        def refuse(*args, **kwargs):
            raise PermissionError(13, "Permission denied", str(path))

        monkeypatch.setattr(Image, "open", refuse)

    with pytest.raises(BadImageError, match="permission denied") as caught:
        load_image(path)
    _assert_bad(caught.value, path)


def test_bad_exif_block_does_not_make_a_bad_image(tmp_path):
    path = tmp_path / "odd_exif.jpg"
    Image.new("RGB", (16, 8), GREY).save(path, exif=b"Exif\x00\x00garbage-not-tiff")

    assert load_image(path).size == (16, 8)
    assert image_size(path) == (16, 8)


# ----------------------------------------------------------------------------------------- listing


def test_list_images_finds_exactly_the_visible_images(tmp_path):
    root = tmp_path / "photos"
    for rel in [
        "a.jpg",
        "B.JPG",
        "c.png",
        "notes.txt",
        ".hidden.jpg",
        ".cache/x.jpg",
        "sub/d.jpeg",
        "sub/deep/e.TIFF",
        "sub/.trash/f.png",
        "album.jpg/g.webp",  # a folder with an image extension is walked, not listed
    ]:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(b"x")
    (root / "sub" / "loop").symlink_to(root, target_is_directory=True)
    (root / "link.jpg").symlink_to(root / "a.jpg")  # a.jpg stands for it: one file is listed once
    (tmp_path / "elsewhere.jpg").write_bytes(b"x")
    (root / "outside.jpg").symlink_to(tmp_path / "elsewhere.jpg")  # its only name under the root
    (root / "broken.jpg").symlink_to(root / "gone.jpg")

    found = list_images(root)

    expected = ["B.JPG", "a.jpg", "album.jpg/g.webp", "c.png", "outside.jpg", "sub/d.jpeg", "sub/deep/e.TIFF"]
    assert found == sorted(root / rel for rel in expected)


def test_list_images_refuses_a_missing_root_or_a_file(tmp_path):
    with pytest.raises(InputError, match="folder does not exist"):
        list_images(tmp_path / "nope")
    (tmp_path / "file.jpg").write_bytes(b"x")
    with pytest.raises(InputError, match="not a folder"):
        list_images(tmp_path / "file.jpg")


def test_image_extensions_are_lowercase_with_dot():
    assert {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff"} <= images.IMAGE_EXTENSIONS
    assert all(e.startswith(".") and e == e.lower() for e in images.IMAGE_EXTENSIONS)
