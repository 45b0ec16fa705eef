"""One size vocabulary: `crop_size` (training crops) and `embed_size` (index and query input), with files written
under the earlier names (`image_size`, `embed_size` 0 for "the crop size") still read the same."""

from __future__ import annotations

import json
from dataclasses import asdict

import pytest

from moco.config import TrainConfig
from moco.export import ENCODER_VERSION, read_spec, save_random_encoder


def test_a_built_config_holds_both_sizes():
    assert (TrainConfig(images="a", out="b", crop_size=48).embed_size) == 48
    assert (TrainConfig(images="a", out="b", crop_size=32, embed_size=64).embed_size) == 64
    with pytest.raises(ValueError, match="embed_size 0"):
        TrainConfig(images="a", out="b", embed_size=0)


@pytest.mark.parametrize(("old", "crop", "embed"), [({"image_size": 40, "embed_size": 0}, 40, 40),
                                                     ({"image_size": 32, "embed_size": 64}, 32, 64),
                                                     ({"image_size": 48}, 48, 48)])  # fmt: skip
def test_a_checkpoint_config_under_the_old_names_reads_the_same(old, crop, embed):
    d = asdict(TrainConfig(images="a", out="b"))
    d.pop("crop_size"), d.pop("embed_size")
    cfg = TrainConfig.from_dict({**d, **old})
    assert (cfg.crop_size, cfg.embed_size) == (crop, embed)
    assert TrainConfig.from_dict(asdict(cfg)) == cfg  # and the new names round-trip


def test_an_encoder_json_of_format_1_reads_its_image_size_as_the_embed_size(tmp_path):
    spec = save_random_encoder(tmp_path, embed_size=48, dim=16)
    raw = json.loads((tmp_path / "encoder.json").read_text())
    assert raw["format_version"] == ENCODER_VERSION == 2 and raw["embed_size"] == 48 and "image_size" not in raw
    raw["image_size"] = raw.pop("embed_size")
    raw["format_version"] = 1
    (tmp_path / "encoder.json").write_text(json.dumps(raw))
    old = read_spec(tmp_path)
    assert old.embed_size == 48 and old.preprocess_args == spec.preprocess_args and old.identity == spec.identity
