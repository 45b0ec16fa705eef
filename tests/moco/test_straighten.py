"""Undoing a rotation on an expanded canvas: the planted angle and picture come back; other pictures stay."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageOps

from moco.augment.presets import IMAGENET_MEAN, IMAGENET_STD
from moco.export import EncoderSpec
from moco.preprocess import make_preprocess
from moco.straighten import _meet, find_tilt, straighten


def _photo(w: int = 320, h: int = 224, seed: int = 0) -> Image.Image:
    """A smooth, photo-like picture whose corners are not one colour."""
    rng = np.random.default_rng(seed)
    coarse = Image.fromarray((rng.random((21, 29, 3)) * 200 + 30).astype(np.uint8))
    return coarse.resize((w, h), Image.BICUBIC)


def _centre(im: Image.Image, size: tuple[int, int]) -> np.ndarray:
    w, h = im.size
    left, top = (w - size[0]) // 2, (h - size[1]) // 2
    return np.asarray(im.convert("L").crop((left, top, left + size[0], top + size[1])), np.float64)


def _error(original: Image.Image, other: Image.Image, size: tuple[int, int], margin: int = 6) -> float:
    """Mean grey-level difference of the two pictures' centres (`size`), edges left out."""
    return float(np.abs(_centre(original, size) - _centre(other, size))[margin:-margin, margin:-margin].mean())


@pytest.mark.parametrize("fill", [(0, 0, 0), (255, 255, 255)])
@pytest.mark.parametrize("angle", [-20.0, -7.0, -2.0, 3.0, 12.0, 28.0])
def test_a_rotated_copy_comes_back_upright(angle, fill):
    im = _photo()
    rotated = im.rotate(angle, resample=Image.BICUBIC, expand=True, fillcolor=fill)
    found = find_tilt(np.asarray(rotated.convert("L")))
    assert found is not None
    assert found[1] == pytest.approx(angle, abs=0.5)
    out = straighten(rotated)
    for got, want in zip(out.size, im.size, strict=True):  # less the few pixels of blended edge on each side
        assert want * 0.95 <= got <= want
    before, after = _error(im, rotated, out.size), _error(im, out, out.size)
    assert after < 0.3 * before  # what is left: interpolating twice and the 0.5% inset


def _coarse_error(a: Image.Image, b: Image.Image, size: tuple[int, int] = (64, 44), margin: int = 4) -> float:
    """Mean grey-level difference of the two pictures squashed to `size`, edges left out."""
    x, y = (np.asarray(im.convert("L").resize(size, Image.BOX), np.float64) for im in (a, b))
    return float(np.abs(x - y)[margin:-margin, margin:-margin].mean())


@pytest.mark.parametrize(("angle", "stretch"), [(8.0, (0.7, 1.0)), (-10.0, (1.0, 0.65)), (4.0, (1.3, 1.0))])
def test_a_rotated_copy_stretched_afterwards_comes_back(angle, stretch):
    """Rotated, then its width or height changed: the picture is a parallelogram on the canvas. Once
    straightened it matches the original as well as a rotated copy that was not stretched does."""
    im = _photo()
    rotated = im.rotate(angle, resample=Image.BICUBIC, expand=True)
    w, h = rotated.size
    skewed = rotated.resize((round(w * stretch[0]), round(h * stretch[1])), Image.BICUBIC)
    assert find_tilt(np.asarray(skewed.convert("L"))) is not None
    out = straighten(skewed)
    assert out is not skewed
    baseline = _coarse_error(im, straighten(rotated))  # the inset and resampling twice leave this much
    assert _coarse_error(im, out) < 1.25 * baseline
    assert _coarse_error(im, out) < 0.45 * _coarse_error(im, skewed)


def test_a_parallelogram_far_from_square_is_left_alone():
    im = Image.new("RGB", (200, 120), "white")  # a sheared shape: corner angles about 30 degrees from square
    ImageDraw.Draw(im).polygon([(40, 5), (195, 15), (160, 115), (5, 105)], fill=(20, 90, 200))
    assert straighten(im) is im


@pytest.mark.parametrize("name", ["upright photo", "framed photo", "drawing on white", "diamond", "tiny tilt"])
def test_pictures_that_are_not_rotated_copies_are_left_alone(name):
    im = _photo()
    if name == "framed photo":
        im = ImageOps.expand(im, border=9, fill=(0, 0, 0))
    elif name == "drawing on white":
        im = Image.new("RGB", (160, 120), "white")
        ImageDraw.Draw(im).ellipse((30, 10, 130, 110), fill=(200, 40, 40))
    elif name == "diamond":  # a square turned 45 degrees is a drawing, not a tilted photo
        im = Image.new("RGB", (120, 120), "white")
        ImageDraw.Draw(im).polygon([(60, 0), (119, 60), (60, 119), (0, 60)], fill=(20, 90, 200))
    elif name == "tiny tilt":  # under half a degree: nothing worth resampling for
        im = im.rotate(0.3, resample=Image.BICUBIC, expand=True)
    assert straighten(im) is im


def test_parallel_edge_lines_are_not_a_rectangle():
    assert _meet((1.0, 0.0), (1.0, 5.0)) is None  # y = x and x = y + 5 never meet
    assert _meet((0.0, 2.0), (0.0, 3.0)).tolist() == [3.0, 2.0]


def test_the_copy_detection_input_of_a_rotated_copy_matches_the_original():
    im = _photo()
    rotated = im.rotate(5.0, resample=Image.BICUBIC, expand=True)
    steps = {"resize": "squash", "grayscale": True, "standardize_channels": True, "trim": True}
    plain = make_preprocess(32, IMAGENET_MEAN, IMAGENET_STD, **steps)
    upright = make_preprocess(32, IMAGENET_MEAN, IMAGENET_STD, **steps, straighten=True)
    err_plain = (plain(im) - plain(rotated)).abs().mean()
    err_upright = (upright(im) - upright(rotated)).abs().mean()
    assert err_upright < 0.4 * err_plain  # the rest: a blended edge a few pixels wide is cut off
    assert upright(im).equal(plain(im))  # an upright picture is untouched


def test_a_frame_rotated_with_the_picture_is_trimmed_after_straightening():
    im = _photo()
    framed = ImageOps.expand(im, border=12, fill=(255, 255, 255)).rotate(6.0, resample=Image.BICUBIC, expand=True)
    steps = {"resize": "squash", "trim": True, "straighten": True}
    pre = make_preprocess(32, IMAGENET_MEAN, IMAGENET_STD, **steps)
    assert (pre(im) - pre(framed)).abs().mean() < 0.15


def test_straighten_is_part_of_the_descriptor_identity():
    base = {"arch": "resnet18", "embedding_dim": 512, "embed_size": 32, "sha256": "ab" * 32, "resize": "squash"}
    assert EncoderSpec(**base).identity != EncoderSpec(**base, straighten=True).identity


def test_a_changed_straighten_gives_indexes_built_with_the_old_one_another_identity():
    spec = EncoderSpec(arch="resnet18", embedding_dim=512, embed_size=32, sha256="ab" * 32, resize="squash")
    spec = EncoderSpec(**{**spec.__dict__, "straighten": True})
    steps = {"resize": "squash", "grayscale": False, "standardize": False, "trim_borders": False, "straighten": True}
    first = hashlib.sha256(f"{spec.sha256}:{json.dumps(steps, sort_keys=True)}".encode()).hexdigest()
    assert spec.identity != first  # an index made with revision 1 (rectangles only) asks for --rebuild
