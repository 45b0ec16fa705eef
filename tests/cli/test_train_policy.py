"""One training policy: the run `retrieval train` builds equals `TrainConfig.for_device` on the same inputs, and
the policy itself (device defaults, given options win, the crop/embed rule) against hand-written expectations."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

import moco.train
from cli.commands import train as train_cmd
from moco.config import CPU_MAX_EPOCHS, CPU_RECIPE, TrainConfig, device_defaults
from tests import cli_runner


def cli_config(tmp_path, monkeypatch, capsys, *options: str) -> TrainConfig:
    """The TrainConfig the CLI hands to fit (fit itself replaced: nothing trains)."""
    seen: list[TrainConfig] = []

    def fake_fit(cfg: TrainConfig, progress=None):
        seen.append(cfg)
        return SimpleNamespace(encoder=None, verdict=None)

    monkeypatch.setattr(moco.train, "fit", fake_fit)
    images, out = tmp_path / "photos", tmp_path / "run"
    images.mkdir(exist_ok=True)
    args = ("train", str(images), "--out", str(out), "--device", "cpu", *options)
    code, _, err = cli_runner.run_cli(monkeypatch, capsys, train_cmd.register, *args)
    assert code == 0, err
    return seen[0]


CASES = {  # CLI options -> the same inputs as a `given` mapping
    "defaults": ((), {}),
    "crop size given": (("--crop-size", "48"), {"crop_size": 48}),
    "crop and embed given": (("--image-size", "48", "--embed-size", "96"), {"crop_size": 48, "embed_size": 96}),
    "copy-detection preset": (("--preset", "copy-detection"), {"preset": "copy-detection"}),
    "model options": (
        ("--temperature", "0.3", "--queue-size", "64", "--symmetric", "--batch-size", "8"),
        {"temperature": 0.3, "queue_size": 64, "symmetric": True, "batch_size": 8},
    ),
    "budget and epochs": (("--time-budget", "5", "--epochs", "7"), {"time_budget_min": 5.0, "epochs": 7}),
}


@pytest.mark.parametrize("name", CASES)
def test_the_cli_builds_the_run_for_device_builds(name, tmp_path, monkeypatch, capsys):
    options, given = CASES[name]
    cfg = cli_config(tmp_path, monkeypatch, capsys, *options)
    expected = TrainConfig.for_device("cpu", cfg.images, cfg.out, {**given, "device": "cpu"})
    assert cfg == expected


def test_cpu_defaults_are_the_cpu_recipe():
    cfg = TrainConfig.for_device("cpu", "photos", "runs/photos")
    assert (cfg.crop_size, cfg.embed_size) == (CPU_RECIPE["crop_size"], CPU_RECIPE["embed_size"]) == (32, 64)
    assert (cfg.batch_size, cfg.model.temperature) == (64, 0.1)
    assert (cfg.epochs, cfg.time_budget_min, cfg.augment_on) == (CPU_MAX_EPOCHS, 60.0, "auto") == (500, 60.0, "auto")
    assert cfg.lr_schedule == CPU_RECIPE["lr_schedule"] == "linear"  # issue 29's two-seed lever runs
    assert TrainConfig.for_device("cuda", "p", "o").lr_schedule == "cosine"  # the GPU recipe was not measured so
    assert TrainConfig.for_device("cpu", "p", "o", {"lr_schedule": "cosine"}).lr_schedule == "cosine"


def test_gpu_defaults_and_given_values_win():
    cfg = TrainConfig.for_device("cuda", "p", "o")
    assert (cfg.crop_size, cfg.embed_size, cfg.batch_size) == (112, 112, 256)
    given = TrainConfig.for_device("cuda", "p", "o", {"batch_size": 32, "temperature": 0.5, "arch": None})
    assert (given.batch_size, given.model.temperature, given.model.arch) == (32, 0.5, device_defaults("cuda")["arch"])


def test_the_crop_and_embed_rule():
    assert TrainConfig.for_device("cpu", "p", "o", {"crop_size": 48}).embed_size == 48  # crop given: embed there
    # not from scratch with moco-v2 (another preset, or --init): crops at the device's embed size
    for given in ({"preset": "copy-detection"}, {"init": "weights.pt"}):
        cfg = TrainConfig.for_device("cpu", "p", "o", given)
        assert cfg.crop_size == cfg.embed_size == CPU_RECIPE["embed_size"]


def test_init_network_fixes_the_network_unless_given():
    cfg = TrainConfig.for_device("cpu", "p", "o", {"init": "w.pt"}, init_net=("resnet50", "cifar", 32))
    assert (cfg.model.arch, cfg.model.stem, cfg.model.width) == ("resnet50", "cifar", 32)
    cfg = TrainConfig.for_device("cpu", "p", "o", {"init": "w.pt", "width": 16}, init_net=("resnet18", "cifar", 32))
    assert cfg.model.width == 16


def test_unknown_and_illegal_options_raise():
    with pytest.raises(ValueError, match="unknown training option"):
        TrainConfig.for_device("cpu", "p", "o", {"image_sise": 32})
    with pytest.raises(ValueError, match="temperature"):
        TrainConfig.for_device("cpu", "p", "o", {"temperature": -1.0})
