"""moco.train.fit with augment_on="device" (batch augmentation, here on the CPU): the loss falls as on the
worker path, a stopped run resumes bit for bit (multi-crop on), the settings a resume must keep, the
refused preset, and the CLI option reaching the config."""

from __future__ import annotations

import dataclasses
import math
import shutil

import numpy as np
import pytest
import torch

import moco.train
from moco.augment.batch_params import BatchRecipe
from moco.checkpoint import load_checkpoint
from moco.config import TrainConfig
from moco.measure.metrics_log import read_metrics, step_records
from moco.train import fit
from plumbing.errors import InputError
from tests.moco.tiny import make_images, tiny_config


def light_recipe(preset: str, size: int, *_: object, **__: object) -> BatchRecipe:
    """The batch path's light views (tests/moco/tiny.py light_views): the whole square resized, nothing else."""
    return BatchRecipe(size, scale=(1.0, 1.0), ratio=(1.0, 1.0), jitter_p=0.0, grey_p=0.0, blur_p=0.0, flip_p=0.0)


def no_worker_views(*_: object, **__: object) -> None:
    raise AssertionError("augment_on='device' must not build the PIL preset")


def losses(run_dir) -> list[float]:  # noqa: ANN001
    return [r["loss"] for r in step_records(read_metrics(run_dir))]


@pytest.fixture(scope="module")
def light_device_run(tmp_path_factory):
    """tests/moco/conftest.py light_run's schedule (16 images, batch 8, 30 steps, lr 0.32) on the batch path."""
    base = tmp_path_factory.mktemp("device-light")
    make_images(base / "photos", 16, seed=0)
    cfg = tiny_config(
        base / "photos",
        base / "run",
        model={"queue_size": 32, "bn_splits": 1},
        batch_size=8,
        epochs=15,
        lr=0.32,
        log_every=1,
        augment_on="device",
    )
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(moco.train, "batch_recipe", light_recipe)
        mp.setattr(moco.train, "make_preset", no_worker_views)
        result = fit(cfg)
    yield cfg, result
    shutil.rmtree(base, ignore_errors=True)  # checkpoints are 140 MB each


def test_loss_falls_over_thirty_steps_with_device_augmentation(light_device_run):
    cfg, r = light_device_run
    assert (r.stopped, r.steps) == ("done", 30)
    loss = losses(r.out_dir)
    warm = math.ceil(r.model_config.queue_size / cfg.batch_size)  # the first steps score a random queue
    first, last = np.mean(loss[warm : warm + 5]), np.mean(loss[-5:])
    assert last < 0.75 * first, f"loss did not fall: first 5 {first:.3f}, last 5 {last:.3f}"
    assert last < math.log(1 + r.model_config.queue_size) - 0.5  # well below chance
    state = load_checkpoint(r.out_dir / "checkpoint.pt")
    assert state["config"]["augment_on"] == "device"


@pytest.fixture(scope="module")
def resumed(tmp_path_factory):
    """The real moco-v2 batch recipe with 2 local views: A runs 6 steps; B stops after 3, then finishes."""
    base = tmp_path_factory.mktemp("device-resume")
    make_images(base / "photos", 16, seed=3)

    def cfg(out: str, **kw: object) -> TrainConfig:
        return tiny_config(base / "photos", base / out, epochs=3, augment_on="device", local_crops=2, **kw)

    a = fit(cfg("A"))
    stopped = fit(cfg("B", stop_after_steps=3))
    shutil.copy2(base / "B" / "checkpoint.pt", base / "stopped.pt")
    b = fit(cfg("B"))
    yield {"base": base, "cfg": cfg, "A": a, "B": b, "stopped": stopped}
    shutil.rmtree(base, ignore_errors=True)


def test_a_stopped_device_augmented_run_resumes_bit_for_bit(resumed):
    a, b = resumed["A"], resumed["B"]
    assert resumed["stopped"].steps == 3 and (a.steps, b.steps) == (6, 6)
    sa, sb = load_checkpoint(a.out_dir / "checkpoint.pt"), load_checkpoint(b.out_dir / "checkpoint.pt")
    for name, t in sa["model"].items():
        assert torch.equal(t, sb["model"][name]), f"{name} differs after resume"
    assert sa["loss_history"] == sb["loss_history"]
    assert a.encoder.sha256 == b.encoder.sha256


def test_a_resume_on_the_other_augmentation_path_is_refused(resumed):
    base = resumed["base"]
    (base / "C").mkdir()
    shutil.copy2(base / "stopped.pt", base / "C" / "checkpoint.pt")
    with pytest.raises(InputError, match="augment_on"):
        fit(dataclasses.replace(resumed["cfg"]("C"), augment_on="workers"))


def test_a_checkpoint_from_before_the_choice_counts_as_the_worker_path():
    old = {k: v for k, v in TrainConfig(images="x", out="y").to_dict().items() if k != "augment_on"}
    assert TrainConfig.from_dict({"augment_on": "workers", **old}).augment_on == "workers"


def test_the_copy_detection_preset_on_the_device_is_refused_before_training(tmp_path):
    make_images(tmp_path / "photos", 8)
    cfg = tiny_config(tmp_path / "photos", tmp_path / "run", preset="copy-detection", augment_on="device")
    with pytest.raises(InputError, match="copy-detection"):
        fit(cfg)
    assert not (tmp_path / "run" / "checkpoint.pt").exists()


def test_the_cli_option_reaches_the_config_and_its_absence_leaves_auto(tmp_path, monkeypatch):
    from cli.commands.train import train

    seen: list[TrainConfig] = []

    def fake_fit(cfg: TrainConfig, progress: object = None) -> None:
        seen.append(cfg)
        raise SystemExit(0)

    monkeypatch.setattr(moco.train, "fit", fake_fit)
    for given in ("device", None):
        with pytest.raises(SystemExit):
            train(tmp_path, out=tmp_path / "r", device="cpu", augment_on=given)
    assert [c.augment_on for c in seen] == ["device", "auto"]
