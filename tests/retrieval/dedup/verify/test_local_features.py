"""Local-feature geometry on planted cases: a rotated, cropped, captioned copy matches its original; two
different textures and two different plain drawings do not; a soft picture's crop matches it through the
low-threshold keypoints, and unrelated soft pictures do not match through them."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFilter

from retrieval.dedup.verify import keypoints as local_features
from retrieval.dedup.verify.keypoints import FEW_KEYPOINTS, Features, geometry, picture_features
from retrieval.dedup.verify.rule import MIN_CONTAINED, MIN_INLIERS


def texture(seed: int, size: tuple[int, int] = (320, 240)) -> Image.Image:
    """A photo-like picture: many overlapping shapes of random colours (corners and edges everywhere)."""
    rng = np.random.default_rng(seed)
    im = Image.new("RGB", size, tuple(int(c) for c in rng.integers(0, 256, 3)))
    d = ImageDraw.Draw(im)
    for _ in range(160):
        x, y = rng.uniform(0, size[0]), rng.uniform(0, size[1])
        r = rng.uniform(3, 18)
        fill = tuple(int(c) for c in rng.integers(0, 256, 3))
        if rng.random() < 0.5:
            d.rectangle([x - r, y - r * 0.7, x + r, y + r * 0.7], fill=fill)
        else:
            d.polygon([(x, y - r), (x + r, y + r), (x - r, y + r * 0.5)], fill=fill)
    return im


def features(im: Image.Image) -> Features:
    return picture_features(np.asarray(im.convert("L")))


def matches(a: Image.Image, b: Image.Image) -> bool:
    g = geometry(features(a), features(b))
    return g.inliers >= MIN_INLIERS and g.contained >= MIN_CONTAINED


def rotated_cropped_captioned(im: Image.Image) -> Image.Image:
    w, h = im.size
    out = im.rotate(10, resample=Image.BICUBIC, fillcolor=(0, 0, 0))  # in the frame: corners filled black
    cw, ch = int(w * 0.5**0.5), int(h * 0.5**0.5)  # half the area, off-centre (towards the top left)
    out = out.crop((int(w * 0.08), int(h * 0.1), int(w * 0.08) + cw, int(h * 0.1) + ch))
    d = ImageDraw.Draw(out)
    d.rectangle([0, out.height * 0.8, out.width, out.height], fill=(250, 30, 30))
    d.text((8, out.height * 0.84), "best day ever", fill=(255, 255, 255))
    return out.resize((int(out.width * 1.3), int(out.height * 1.3)), Image.BICUBIC)


def test_a_rotated_cropped_captioned_copy_matches():
    original = texture(1)
    copy = rotated_cropped_captioned(original)
    g = geometry(features(original), features(copy))
    assert g.inliers >= MIN_INLIERS and g.contained >= MIN_CONTAINED, g
    assert matches(copy, original)  # either way round


def test_two_different_textures_do_not_match():
    for seed in range(2, 5):
        assert not matches(texture(1), texture(seed))


def drawing(
    shape: str, fg: tuple[int, int, int], bg: tuple[int, int, int], box: tuple[int, int, int, int]
) -> Image.Image:
    im = Image.new("RGB", (200, 200), bg)
    d = ImageDraw.Draw(im)
    (d.ellipse if shape == "circle" else d.rectangle)(box, fill=fg)
    return im


def test_two_distinct_plain_drawings_do_not_match():
    blue_on_yellow = drawing("circle", (20, 40, 220), (240, 230, 30), (40, 50, 150, 160))
    magenta_on_green = drawing("circle", (220, 30, 200), (30, 200, 60), (70, 60, 170, 160))
    square = drawing("square", (0, 0, 0), (255, 255, 255), (30, 30, 120, 120))
    assert not matches(blue_on_yellow, magenta_on_green)
    assert not matches(blue_on_yellow, square)


def test_a_flat_picture_has_no_geometry():
    flat = features(Image.new("RGB", (200, 150), (250, 250, 250)))
    assert len(flat.xy) == 0
    assert geometry(flat, features(texture(1))).inliers == 0


def test_features_round_trip_through_bytes():
    for im in (texture(3), soft(0)):
        f = features(im)
        g = Features.from_bytes(f.to_bytes())
        assert np.array_equal(f.xy, g.xy) and np.array_equal(f.descriptors, g.descriptors)
        assert (g.width, g.height, g.soft) == (f.width, f.height, f.soft)
    assert not features(texture(3)).soft and features(soft(0)).soft
    with pytest.raises(ValueError, match="does not hold"):
        Features.from_bytes(features(texture(3)).to_bytes()[:-1])


def soft(seed: int, size: tuple[int, int] = (320, 200)) -> Image.Image:
    """A wallpaper-like picture: a few large overlapping triangles a little lighter or darker than the ground,
    blurred, so its corners are faint."""
    rng = np.random.default_rng(seed)
    ground = rng.integers(60, 200, 3)
    im = Image.new("RGB", size, tuple(int(c) for c in ground))
    d = ImageDraw.Draw(im)
    for _ in range(12):
        corners = [(float(rng.uniform(-40, size[0] + 40)), float(rng.uniform(-40, size[1] + 40))) for _ in range(3)]
        d.polygon(corners, fill=tuple(int(c) for c in np.clip(ground + rng.integers(-40, 41, 3), 0, 255)))
    return im.filter(ImageFilter.GaussianBlur(1.5))


def smooth_noise(seed: int) -> Image.Image:
    """Blurred colour noise (9 x 12 cells upsampled): soft structure everywhere, nothing two of them share."""
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (9, 12, 3), dtype=np.uint8)).resize((160, 120), Image.BICUBIC)


def crop_of(im: Image.Image) -> Image.Image:
    w, h = im.size
    return im.crop((int(w * 0.1), int(h * 0.12), int(w * 0.9), int(h * 0.9))).resize((400, 260), Image.BICUBIC)


def test_a_soft_pictures_crop_matches_through_the_low_threshold_keypoints(monkeypatch):
    pictures = [soft(seed) for seed in range(6)]
    assert all(features(p).soft for p in pictures)  # under FEW_KEYPOINTS corners at the usual threshold
    assert all(matches(p, crop_of(p)) for p in pictures)
    monkeypatch.setattr(local_features, "FEW_KEYPOINTS", 0)  # the usual threshold only, as before
    assert all(len(features(p).xy) < FEW_KEYPOINTS for p in pictures)
    assert not all(matches(p, crop_of(p)) for p in pictures)  # seed 1: no geometry at all


def test_unrelated_soft_pictures_do_not_match_on_chance_consensus(monkeypatch):
    """Faint corners of different pictures pair up by chance and a few such matches always fit one similarity;
    a soft picture's match must be mostly inliers (SOFT_SHARE), as its real copy's are."""
    pictures = [features(smooth_noise(seed)) for seed in range(12)] + [features(soft(seed)) for seed in range(6)]

    def matching_pairs() -> int:
        found = [geometry(a, b) for a, b in itertools.combinations(pictures, 2)]
        return sum(g.inliers >= MIN_INLIERS and g.contained >= MIN_CONTAINED for g in found)

    assert matching_pairs() == 0
    monkeypatch.setattr(local_features, "SOFT_SHARE", 0.0)
    assert matching_pairs() > 0  # without the share, chance consensus passes: the check is what holds them apart
