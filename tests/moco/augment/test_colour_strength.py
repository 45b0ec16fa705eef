"""colour_strength: 1 is MoCo v2's colour jitter and grey, 0 leaves colour alone, in between scales both."""

from __future__ import annotations

import pytest
import torch
from PIL import Image
from torchvision import transforms as T

from moco.augment.presets import colour_steps, make_preset
from moco.config import TrainConfig


def _jitter_and_grey(steps: list) -> tuple[T.ColorJitter, float, float]:
    apply, grey = steps
    (jitter,) = apply.transforms
    return jitter, apply.p, grey.p


def test_strength_one_is_the_moco_v2_recipe():
    jitter, p_jitter, p_grey = _jitter_and_grey(colour_steps(1.0))
    assert jitter.brightness == pytest.approx((0.6, 1.4)) and jitter.saturation == pytest.approx((0.6, 1.4))
    assert jitter.hue == pytest.approx((-0.1, 0.1))
    assert (p_jitter, p_grey) == (0.8, 0.2)


def test_a_quarter_scales_magnitudes_and_the_grey_probability():
    jitter, p_jitter, p_grey = _jitter_and_grey(colour_steps(0.25))
    assert jitter.contrast == pytest.approx((0.9, 1.1))
    assert (p_jitter, p_grey) == (0.8, pytest.approx(0.05))


def test_strength_zero_keeps_every_colour():
    torch.manual_seed(0)
    img = Image.new("RGB", (40, 40), (200, 30, 30))
    tf = make_preset("moco-v2", 32, min_scale=0.9, colour=0.0)
    x = tf(img)  # a flat red picture: crop, blur and flip change nothing, so colour is all that could change
    ref = T.Compose([T.ToTensor(), T.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))])(img)[:, :32, :32]
    torch.testing.assert_close(x, ref, atol=1e-5, rtol=0)


def test_negative_strength_is_refused():
    with pytest.raises(ValueError, match="colour_strength"):
        TrainConfig(images="a", out="b", colour_strength=-1)
