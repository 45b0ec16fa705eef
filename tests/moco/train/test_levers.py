"""Training levers of issue 29: the LR decayed linearly to zero instead of the cosine, and averaged keys (key_views
views of each image, their keys averaged into one target) through the whole training loop."""

from __future__ import annotations

import math

import pytest
import torch

from moco.checkpoint import load_checkpoint
from moco.config import MoCoConfig, TrainConfig
from moco.train import PROGRESSIVE_END, fit, learning_rate, view_side
from tests.moco.tiny import make_images, tiny_config


@pytest.mark.parametrize("progress", [0.0, 0.25, 0.5, 0.9, 1.0, 1.5])
def test_the_linear_schedule_falls_in_a_straight_line_to_zero(tmp_path, progress):
    cos = tiny_config(tmp_path, tmp_path / "run", lr=0.256, batch_size=8, warmup_steps=10)
    lin = tiny_config(tmp_path, tmp_path / "run", lr=0.256, batch_size=8, warmup_steps=10, lr_schedule="linear")
    peak = 0.256 * 8 / 256  # lr per 256, scaled to batch 8
    after_warmup = 10**6
    assert learning_rate(lin, after_warmup, progress, 1) == pytest.approx(peak * (1 - min(1.0, progress)))
    want_cos = peak * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
    assert learning_rate(cos, after_warmup, progress, 1) == pytest.approx(want_cos)
    # warm-up multiplies either: step 4 of 10
    assert learning_rate(lin, 4, progress, 1) == pytest.approx(0.5 * peak * (1 - min(1.0, progress)))


def test_bad_lever_settings_are_refused(tmp_path):
    with pytest.raises(ValueError, match="lr_schedule"):
        tiny_config(tmp_path, tmp_path / "run", lr_schedule="step")
    with pytest.raises(ValueError, match="key_views"):
        MoCoConfig(key_views=0)
    with pytest.raises(ValueError, match="key_views"):
        MoCoConfig(key_views=2, symmetric=True)
    with pytest.raises(ValueError, match="averaged keys"):
        tiny_config(tmp_path, tmp_path / "run", model={"key_views": 2}, augment_on="device")


def test_a_run_with_averaged_keys_trains_and_says_so_in_its_checkpoint(tmp_path):
    make_images(tmp_path / "photos", 16, seed=3)
    cfg = tiny_config(
        tmp_path / "photos",
        tmp_path / "run",
        model={"key_views": 3, "bn_splits": 1},
        stop_after_steps=2,
        epochs=10,
        lr_schedule="linear",
    )
    r = fit(cfg)
    assert r.steps == 2 and math.isfinite(r.loss)
    state = load_checkpoint(r.out_dir / "checkpoint.pt")
    assert state["model_config"]["key_views"] == 3
    assert TrainConfig.from_dict(state["config"]).lr_schedule == "linear"
    # the queue (cut to the folder minus one batch: 8) holds the last batch's keys, one per image, unit length
    assert sorted(state["model"]["queue_ids"].tolist()) == sorted(set(state["model"]["queue_ids"].tolist()))
    assert (state["model"]["queue_ids"] >= 0).all()
    assert torch.allclose(state["model"]["queue"].norm(dim=1), torch.ones(8), atol=1e-5)
    # the model unit test (tests/moco/test_averaged_keys.py) checks what those keys are


@pytest.mark.parametrize(
    ("progress", "side"),
    [(0.0, 16), (0.2, 16), (0.375, 24), (0.6, 24), (0.74, 24), (0.75, 32), (1.0, 32), (1.5, 32)],
)
def test_progressive_resolution_grows_the_views_by_steps_of_8_to_the_crop_size(tmp_path, progress, side):
    """From 16 px to 32 over the first 3/4 of the run: 16 until a step of 8 is earned (at half the ramp), then 24,
    then 32 from PROGRESSIVE_END on; off, every step is at the crop size."""
    cfg = tiny_config(tmp_path, tmp_path / "run", crop_size=32, progressive_from=16)
    assert PROGRESSIVE_END == 0.75 and view_side(cfg, progress) == side
    assert view_side(tiny_config(tmp_path, tmp_path / "run", crop_size=32), progress) == 32


def test_progressive_resolution_is_refused_out_of_range(tmp_path):
    for bad in (4, 32, 40):
        with pytest.raises(ValueError, match="progressive_from"):
            tiny_config(tmp_path, tmp_path / "run", crop_size=32, progressive_from=bad)


def test_a_run_with_progressive_resolution_trains_on_smaller_views_first(tmp_path, monkeypatch):
    """The encoder sees 16 px views at the start of the run and 32 px ones at its end (the sides it was called on,
    recorded), and the run says so in its checkpoint."""
    import moco.train as train

    make_images(tmp_path / "photos", 16, seed=4)
    seen: list[int] = []
    real = train._resized

    def spy(x: torch.Tensor, side: int) -> torch.Tensor:
        seen.append(side)
        return real(x, side)

    monkeypatch.setattr(train, "_resized", spy)
    cfg = tiny_config(
        tmp_path / "photos", tmp_path / "run", crop_size=32, progressive_from=16, epochs=4, model={"bn_splits": 1}
    )
    r = fit(cfg)
    assert math.isfinite(r.loss) and r.steps == 8  # 16 pictures, batch 8, 4 epochs
    assert seen and seen[0] == 16 and set(seen) <= {16, 24}  # resized while under the crop size, never above
    assert len(seen) // 2 < r.steps  # the last quarter of the run is at the crop size: not resized
    state = load_checkpoint(r.out_dir / "checkpoint.pt")
    assert TrainConfig.from_dict(state["config"]).progressive_from == 16
