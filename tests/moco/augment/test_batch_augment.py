"""moco.augment.batch / batch_params / batch_ops on the CPU: each step against torchvision's functional of the
same name or a hand-computed value, the random parameters against the recipe's ranges, and seeding."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
import torchvision.transforms.functional as TF

from moco.augment import batch_ops
from moco.augment.batch import BatchTwoCrops, as_float_chw, augment_view
from moco.augment.batch_params import BatchRecipe, batch_recipe, crop_boxes, draw_uniforms, view_params
from moco.augment.presets import IMAGENET_MEAN, IMAGENET_STD
from moco.config import TrainConfig, resolve_augment_on
from moco.data import sample_seed
from plumbing.errors import InputError

MEAN = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
STD = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
PLAIN = BatchRecipe(16, scale=(1.0, 1.0), ratio=(1.0, 1.0), jitter_p=0.0, grey_p=0.0, blur_p=0.0, flip_p=0.0)


def images(n: int, side: int = 24, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, 256, (n, side, side, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed))


def floats(n: int, side: int = 16, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, 3, side, side, generator=torch.Generator().manual_seed(seed))


def unnormalise(y: torch.Tensor) -> torch.Tensor:
    return y * STD + MEAN


def params(recipe: BatchRecipe, n: int, side: int, seed: int = 0):  # noqa: ANN201
    return view_params(draw_uniforms(range(seed, seed + n), 1)[:, 0], recipe, side, side)


# ------------------------------------------------------------------------------------------------- crop


@pytest.mark.parametrize("box", [(3, 5, 32, 24), (0, 0, 48, 48), (10, 2, 16, 40), (7, 9, 20, 33)])
def test_the_crop_lands_where_the_box_says(box):
    """Oracle: torchvision's resized_crop of the same box (bilinear, no antialias), for boxes at least as large
    as the output, where both sample the same coordinates inside the box."""
    x = torch.rand(1, 3, 48, 48, generator=torch.Generator().manual_seed(1))
    got = batch_ops.crop_resize(x, torch.tensor([box], dtype=torch.float64), 16)
    want = TF.resized_crop(x, *box, [16, 16], interpolation=TF.InterpolationMode.BILINEAR, antialias=False)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=0)


def test_each_sample_gets_its_own_box():
    x = torch.rand(3, 3, 40, 40, generator=torch.Generator().manual_seed(2))
    boxes = [(0, 0, 40, 40), (4, 8, 20, 30), (20, 20, 16, 16)]
    got = batch_ops.crop_resize(x, torch.tensor(boxes, dtype=torch.float64), 16)
    for i, box in enumerate(boxes):
        want = TF.resized_crop(x[i : i + 1], *box, [16, 16], antialias=False)
        torch.testing.assert_close(got[i : i + 1], want, atol=1e-5, rtol=0)


def test_crop_boxes_keep_the_recipe_area_and_aspect_and_stay_inside():
    recipe = BatchRecipe(32, scale=(0.2, 1.0))
    H = W = 40
    box = crop_boxes(draw_uniforms(range(3000), 1)[:, 0], recipe, H, W)
    top, left, h, w = box.unbind(1)
    assert bool(((top >= 0) & (left >= 0) & (top + h <= H) & (left + w <= W) & (h > 0) & (w > 0)).all())
    share = h * w / (H * W)
    slack = 2 * (H + W) / (H * W)  # rounding h and w to whole pixels
    assert float(share.min()) >= 0.2 - slack and float(share.max()) <= 1.0
    assert float(share.min()) < 0.25 and float(share.max()) > 0.9  # the whole range is used
    aspect = w / h
    assert float(aspect.min()) >= 3 / 4 * (1 - 2 / 8) and float(aspect.max()) <= 4 / 3 * (1 + 2 / 8)
    assert all(t == math.floor(t) for t in box.flatten().tolist())  # whole pixels, as torchvision


def test_a_box_no_attempt_fits_falls_back_to_the_centre_crop():
    recipe = BatchRecipe(8, scale=(1.0, 1.0), ratio=(2.0, 3.0))  # area 1 at aspect >= 2 never fits a square
    box = crop_boxes(draw_uniforms([5], 1)[:, 0], recipe, 30, 30)
    assert box.tolist() == [[7.0, 0.0, 15.0, 30.0]]  # torchvision: h = round(30 / 2), centred


# ------------------------------------------------------------------------------------- flip, grey, norm


def test_flip_is_exact():
    recipe = BatchRecipe(16)
    x = as_float_chw(images(6))
    p = params(recipe, 6, 24)
    off = augment_view(x, dataclasses.replace(p, flip=torch.zeros(6, dtype=torch.bool)), recipe)
    on = augment_view(x, dataclasses.replace(p, flip=torch.ones(6, dtype=torch.bool)), recipe)
    assert torch.equal(on, off.flip(-1))


def test_grey_views_have_equal_channels_with_the_luma_weights():
    recipe = dataclasses.replace(PLAIN, grey_p=1.0)
    x = as_float_chw(images(4, 16))
    y = unnormalise(augment_view(x, params(recipe, 4, 16), recipe))
    torch.testing.assert_close(y[:, 0], y[:, 1], atol=1e-5, rtol=0)
    torch.testing.assert_close(y[:, 1], y[:, 2], atol=1e-5, rtol=0)
    torch.testing.assert_close(y[:, :1], TF.rgb_to_grayscale(x), atol=1e-5, rtol=0)


def test_normalisation_uses_the_imagenet_constants_of_augment_py():
    value = (10, 128, 250)
    x = torch.tensor(value, dtype=torch.uint8).view(1, 1, 1, 3).expand(2, 16, 16, 3).contiguous()
    y = BatchTwoCrops(PLAIN)(x, [0, 1])[0]
    for c in range(3):
        want = (value[c] / 255 - IMAGENET_MEAN[c]) / IMAGENET_STD[c]
        torch.testing.assert_close(y[:, c], torch.full((2, 16, 16), want), atol=1e-5, rtol=0)


def test_both_layouts_give_the_same_views_and_other_dtypes_are_refused():
    hwc = images(3)
    crops = BatchTwoCrops(BatchRecipe(16))
    a = crops(hwc, [1, 2, 3])
    b = crops(hwc.permute(0, 3, 1, 2).contiguous(), [1, 2, 3])
    assert all(torch.equal(u, v) for u, v in zip(a, b, strict=True))
    with pytest.raises(InputError, match="uint8"):
        crops(hwc.float(), [1, 2, 3])


# ------------------------------------------------------------------------------------------ colour ops


@pytest.mark.parametrize(
    ("op", "reference"),
    [
        (batch_ops.brightness, TF.adjust_brightness),
        (batch_ops.contrast, TF.adjust_contrast),
        (batch_ops.saturation, TF.adjust_saturation),
        (batch_ops.hue, TF.adjust_hue),
    ],
)
def test_each_jitter_op_matches_torchvision_per_sample(op, reference):
    x = floats(4)
    f = torch.tensor([0.6, 1.0, 1.4, 0.83]) if op is not batch_ops.hue else torch.tensor([-0.1, 0.0, 0.07, 0.5])
    got = op(x, f)
    for i in range(4):
        torch.testing.assert_close(got[i], reference(x[i], float(f[i])), atol=2e-5, rtol=0)


def test_brightness_and_contrast_follow_the_analytic_formula():
    x = torch.tensor([0.2, 0.4, 0.6, 0.8]).view(1, 1, 2, 2).expand(1, 3, 2, 2).contiguous()  # grey pixels
    torch.testing.assert_close(batch_ops.brightness(x, torch.tensor([1.5])), (x * 1.5).clamp(0, 1))
    # contrast f blends with the mean luma m: m + f * (x - m); m = 0.5 * 0.9999 (the luma weights' sum)
    m = 0.5 * sum(batch_ops.GREY_WEIGHTS)
    torch.testing.assert_close(batch_ops.contrast(x, torch.tensor([0.5])), m + 0.5 * (x - m))
    torch.testing.assert_close(batch_ops.contrast(x, torch.tensor([0.0])), torch.full_like(x, m))
    torch.testing.assert_close(batch_ops.hue(x, torch.tensor([0.3])), x)  # grey has no hue to turn


def test_jitter_applies_the_four_ops_in_each_samples_order():
    recipe = dataclasses.replace(PLAIN, jitter=0.4, hue=0.1, jitter_p=1.0)
    x = as_float_chw(images(5, 16))
    p = params(recipe, 5, 16)
    y = unnormalise(augment_view(x, p, recipe))
    base = batch_ops.crop_resize(x, p.box, 16)
    for i in range(5):
        want = base[i : i + 1]
        for k in p.order[i].tolist():
            want = batch_ops.JITTER_OPS[k](want, p.factors[i : i + 1, k].float())
        torch.testing.assert_close(y[i : i + 1], want, atol=1e-5, rtol=0)


def test_gaussian_blur_matches_torchvision_inside_and_keeps_a_flat_image():
    x = floats(2, 20)
    sigma = torch.tensor([0.5, 1.2])
    got = batch_ops.gaussian_blur(x, sigma, radius=4)
    for i in range(2):  # torchvision reflects at the edges where this repeats them: compare away from them
        want = TF.gaussian_blur(x[i], [9, 9], [float(sigma[i])] * 2)
        torch.testing.assert_close(got[i, :, 4:-4, 4:-4], want[:, 4:-4, 4:-4], atol=1e-5, rtol=0)
    flat = torch.full((1, 3, 10, 10), 0.3)
    torch.testing.assert_close(batch_ops.gaussian_blur(flat, torch.tensor([2.0]), 6), flat)


# ------------------------------------------------------------------------------- parameters and seeds


def test_parameter_statistics_follow_the_moco_v2_recipe():
    n = 4000
    recipe = batch_recipe("moco-v2", 64)
    p = params(recipe, n, 80)
    bound = 4 * math.sqrt(0.25 / n)  # four standard errors of a rate
    for flag, rate in ((p.flip, 0.5), (p.jitter, 0.8), (p.grey, 0.2), (p.blur, 0.5)):
        assert abs(float(flag.double().mean()) - rate) < bound
    assert float(p.factors[:, :3].min()) >= 0.6 and float(p.factors[:, :3].max()) <= 1.4
    assert float(p.factors[:, 3].abs().max()) <= 0.1
    assert float(p.factors[:, :3].min()) < 0.62 and float(p.factors[:, :3].max()) > 1.38
    assert float(p.sigma.min()) >= 0.1 * 64 / 224 and float(p.sigma.max()) <= 2.0 * 64 / 224
    assert torch.equal(p.order.sort(1).values, torch.arange(4).expand(n, 4))  # permutations of the four ops
    share = p.box[:, 2] * p.box[:, 3] / 80**2
    assert float(share.min()) >= 0.2 - 2 * 160 / 6400 and float(share.max()) <= 1.0


def test_colour_strength_scales_the_batch_recipe_as_the_pil_one():
    half = batch_recipe("moco-v2", 32, colour=0.5)
    assert (half.jitter, half.hue, half.jitter_p, half.grey_p) == pytest.approx((0.2, 0.05, 0.8, 0.1))
    none = batch_recipe("moco-v2", 32, colour=0.0)
    assert none.jitter_p == none.grey_p == 0.0
    assert batch_recipe("moco-v2", 32, 0.5, max_scale=0.8).scale == (0.5, 0.8)


def test_same_seeds_give_identical_views_and_other_seeds_other_views():
    crops = BatchTwoCrops(batch_recipe("moco-v2", 16))
    x = images(4)
    seeds = [sample_seed(0, 3, i) for i in range(4)]
    a, b = crops(x, seeds), crops(x, seeds)
    assert all(torch.equal(u, v) for u, v in zip(a, b, strict=True))
    other = crops(x, [sample_seed(0, 4, i) for i in range(4)])
    for i in range(4):
        assert not torch.equal(a[0][i], other[0][i])
    assert not torch.equal(a[0], a[1])  # query and key: two draws


def test_a_samples_views_do_not_depend_on_its_batch():
    """The property resume and DDP need: image i's views are a function of its seed, whichever batch holds it."""
    crops = BatchTwoCrops(batch_recipe("moco-v2", 16), batch_recipe("moco-v2", 8, 0.05, max_scale=0.14), 2)
    x = images(5)
    seeds = [sample_seed(1, 0, i) for i in range(5)]
    whole = crops(x, seeds)
    part = crops(x[[3, 1]], [seeds[3], seeds[1]])
    for u, v in zip(whole, part, strict=True):
        assert torch.equal(u[[3, 1]], v)
    assert whole[2].shape == (5, 2, 3, 8, 8)


# ------------------------------------------------------------------------------------ presets, config


def test_the_copy_detection_preset_is_refused_and_auto_keeps_it_on_the_workers():
    with pytest.raises(InputError, match="--augment-on workers"):
        batch_recipe("copy-detection", 32)
    assert resolve_augment_on("auto", "cuda", "moco-v2") == "device"
    assert resolve_augment_on("auto", "cpu", "moco-v2") == "workers"
    assert resolve_augment_on("auto", "cuda", "copy-detection") == "workers"
    assert resolve_augment_on("device", "cpu", "moco-v2") == "device"
    with pytest.raises(ValueError, match="augment_on"):
        TrainConfig(images="x", out="y", augment_on="gpu")
