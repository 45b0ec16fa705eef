"""Probe 5 (issue 12): a zero given on the command line was read as "not given" (`x or default`), so
`--epochs 0` trained 200 epochs and `--batch-size 0` / `--image-size 0` became 64. Zero is refused like a
negative where it means nothing; where it means something, the help says what."""

from __future__ import annotations

import pytest

from moco.config import device_defaults
from tests.reliability.conftest import make_image, one_line_error, run_cli


@pytest.mark.parametrize(
    ("option", "value", "field"),
    [
        ("--epochs", "0", "epochs"),
        ("--epochs", "-1", "epochs"),
        ("--batch-size", "0", "batch_size"),
        ("--crop-size", "0", "crop_size"),
        ("--embed-size", "0", "embed_size"),
        ("--embed-size", "-1", "embed_size"),
        ("--embed-size", "8", "embed_size"),
        ("--arch", "", "arch"),
        ("--lr", "0", "lr"),
        ("--queue-size", "0", "queue_size"),
        ("--temperature", "0", "temperature"),
        ("--time-budget", "-1", "time budget"),
    ],
)
def test_train_refuses_zero_before_doing_anything(tmp_path, monkeypatch, capsys, option, value, field):
    for i in range(4):
        make_image(tmp_path / "photos" / f"{i}.png", seed=i)
    out = tmp_path / "run"
    code, _, err = run_cli(
        monkeypatch, capsys, "train", str(tmp_path / "photos"), "--out", str(out), "--device", "cpu", option, value
    )
    one_line_error(code, err, field, value)
    assert not out.exists()


def built_config(tmp_path, monkeypatch, **options):
    """The TrainConfig `retrieval train` builds for these options (fit is replaced: nothing trains)."""
    import moco.train
    from moco.config import TrainConfig

    seen: list[TrainConfig] = []

    def fake_fit(cfg: TrainConfig, progress=None):
        seen.append(cfg)
        raise SystemExit(0)

    monkeypatch.setattr(moco.train, "fit", fake_fit)
    from cli.commands.train import train

    with pytest.raises(SystemExit):
        train(tmp_path, out=tmp_path / "r", device="cpu", **options)
    return seen[0]


def test_options_left_out_still_take_the_device_defaults(tmp_path, monkeypatch):
    """The other half of the fix: None (not given) -> the default; the config the command builds shows it."""
    from moco.config import MoCoConfig

    want = device_defaults("cpu")
    cfg = built_config(tmp_path, monkeypatch)
    assert (cfg.model.arch, cfg.crop_size, cfg.batch_size, cfg.epochs, cfg.model.temperature) == (
        want["arch"],
        want["crop_size"],
        want["batch_size"],
        want["epochs"],
        want["temperature"],
    )
    assert cfg.embed_size == want["embed_size"]
    assert cfg.model.temperature != MoCoConfig().temperature  # the CPU recipe's own T, not the config's


def test_a_crop_size_given_alone_is_also_the_embedding_size(tmp_path, monkeypatch):
    assert built_config(tmp_path, monkeypatch, embed_size=96).embed_size == 96
    # a crop size given alone is also the embedding size, whatever the device's default embed size
    assert built_config(tmp_path, monkeypatch, crop_size=48).embed_size == 48
    assert built_config(tmp_path, monkeypatch, crop_size=48, embed_size=96).embed_size == 96


def test_a_warm_start_or_the_copy_detection_preset_crops_at_the_embed_size(tmp_path, monkeypatch):
    """The device's small training crops were measured from scratch with moco-v2 only; a warm start (--init) or
    the copy-detection preset crops at the size it embeds at (the device default's embed size), unless told."""
    from tests.moco.init.official_layout import tiny_official_checkpoint

    ckpt = tmp_path / "moco.pth.tar"
    tiny_official_checkpoint(ckpt)
    embed = device_defaults("cpu")["embed_size"]
    cfg = built_config(tmp_path, monkeypatch, init=str(ckpt))
    assert cfg.crop_size == cfg.embed_size == embed
    assert built_config(tmp_path, monkeypatch, init=str(ckpt), crop_size=40).embed_size == 40
    cfg = built_config(tmp_path, monkeypatch, preset="copy-detection")
    assert cfg.crop_size == cfg.embed_size == embed
    assert built_config(tmp_path, monkeypatch, preset="moco-v2").crop_size == device_defaults("cpu")["crop_size"]
