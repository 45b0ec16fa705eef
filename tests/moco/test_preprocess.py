"""Descriptor preprocessing: each step cancels the edit it is meant for (checked exactly or to rounding)."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
import torch
from PIL import Image, ImageOps

from moco.augment.presets import IMAGENET_MEAN, IMAGENET_STD
from moco.export import EncoderSpec
from moco.preprocess import make_preprocess, standardize, trim_borders


def _picture(w: int = 48, h: int = 40, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray((rng.random((h, w, 3)) * 200 + 30).astype(np.uint8))


@pytest.mark.parametrize("fill", [(0, 0, 0), (255, 255, 255), (120, 30, 200)])
def test_trim_borders_recovers_the_padded_picture(fill):
    im = _picture()
    padded = ImageOps.expand(im, border=(7, 3, 5, 9), fill=fill)  # left, top, right, bottom
    out = trim_borders(padded)
    # the picture, less one pixel on each side (past where a frame's edge blends into it)
    assert np.array_equal(np.asarray(out), np.asarray(im.crop((1, 1, im.width - 1, im.height - 1))))


def test_trim_borders_keeps_a_picture_without_a_frame_and_a_plain_picture():
    im = _picture()
    assert trim_borders(im).size == im.size
    plain = Image.new("RGB", (30, 20), (10, 200, 10))
    assert trim_borders(plain).size == plain.size  # nothing but "border": left alone


def test_trim_borders_removes_a_frame_and_then_the_plain_background_inside_it():
    drawing = Image.new("RGB", (60, 50), (255, 255, 255))
    drawing.paste(_picture(20, 16), (25, 9))  # a drawing on a white background
    framed = ImageOps.expand(drawing, border=6, fill=(40, 40, 40))
    assert trim_borders(drawing).size == (18, 14)  # the drawing's box, less one pixel of each side
    assert np.array_equal(np.asarray(trim_borders(framed)), np.asarray(trim_borders(drawing)))


def test_stray_noise_in_a_frame_does_not_stop_the_trim():
    im = _picture()
    padded = np.asarray(ImageOps.expand(im, border=8, fill=(0, 0, 0))).copy()
    padded[2, 30] = padded[50, 3] = (70, 70, 70)  # single pixels off the frame colour (JPEG noise)
    out = trim_borders(Image.fromarray(padded))
    assert np.array_equal(np.asarray(out), np.asarray(im.crop((1, 1, im.width - 1, im.height - 1))))


def test_trim_borders_never_cuts_below_the_minimum_area():
    canvas = Image.new("RGB", (100, 100), (0, 0, 0))
    canvas.paste(_picture(10, 10), (45, 45))  # a 1% picture in a black frame: not treated as a frame
    assert trim_borders(canvas).size == (100, 100)


def test_standardize_cancels_brightness_and_contrast():
    x = torch.rand(3, 16, 16) * 0.5 + 0.2
    edited = x * 1.6 - 0.1  # contrast x1.6 and a brightness shift, per channel the same
    assert torch.allclose(standardize(x, eps=0), standardize(edited, eps=0), atol=1e-5)  # exact without the guard
    assert (standardize(x) - standardize(edited)).abs().max() < 0.03  # the flat-image guard costs a little
    s = standardize(x)
    assert torch.allclose(s.mean(dim=(1, 2)), torch.full((3,), 0.45), atol=1e-5)


def test_squash_undoes_an_aspect_change_and_crop_does_not():
    im = _picture(64, 64)
    stretched = im.resize((96, 64), Image.BICUBIC)  # aspect edit
    squash = make_preprocess(32, IMAGENET_MEAN, IMAGENET_STD, resize="squash")
    crop = make_preprocess(32, IMAGENET_MEAN, IMAGENET_STD)
    err_squash = (squash(im) - squash(stretched)).abs().mean()
    err_crop = (crop(im) - crop(stretched)).abs().mean()
    assert err_squash < 0.5 * err_crop


def test_grayscale_maps_a_black_and_white_copy_to_the_same_input():
    im = _picture()
    grey = im.convert("L").convert("RGB")
    pre = make_preprocess(24, IMAGENET_MEAN, IMAGENET_STD, resize="squash", grayscale=True)
    assert torch.allclose(pre(im), pre(grey))
    x = pre(im)
    assert torch.allclose(
        x[0] * IMAGENET_STD[0] + IMAGENET_MEAN[0], x[1] * IMAGENET_STD[1] + IMAGENET_MEAN[1], atol=1e-5
    )  # the three channels carry the same picture


def test_unknown_resize_is_refused():
    with pytest.raises(ValueError, match="resize"):
        make_preprocess(24, IMAGENET_MEAN, IMAGENET_STD, resize="stretch")
    with pytest.raises(ValueError, match="resize"):
        EncoderSpec(arch="resnet18", embedding_dim=512, embed_size=32, resize="stretch")


def test_identity_depends_on_preprocessing_but_not_for_the_legacy_default():
    legacy = EncoderSpec(arch="resnet18", embedding_dim=512, embed_size=32, sha256="ab" * 32)
    assert legacy.identity == legacy.sha256  # indexes built before these options stay valid
    squash = EncoderSpec(arch="resnet18", embedding_dim=512, embed_size=32, sha256="ab" * 32, resize="squash")
    grey = EncoderSpec(
        arch="resnet18", embedding_dim=512, embed_size=32, sha256="ab" * 32, resize="squash", grayscale=True
    )
    assert len({legacy.identity, squash.identity, grey.identity}) == 3


def test_a_changed_trim_gives_indexes_built_with_the_old_one_another_identity():
    spec = EncoderSpec(
        arch="resnet18", embedding_dim=512, embed_size=32, sha256="ab" * 32, resize="squash", trim_borders=True
    )
    steps = {"resize": "squash", "grayscale": False, "standardize": False, "trim_borders": True}
    before = hashlib.sha256(f"{spec.sha256}:{json.dumps(steps, sort_keys=True)}".encode()).hexdigest()
    assert spec.identity != before  # an index of the first trim is refused (rebuild), never mixed with new vectors
