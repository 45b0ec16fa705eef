"""The small-image stem and narrow widths: feature-map sizes, torchvision's names, the export round trip."""

from __future__ import annotations

import json

import pytest
import torch
import torchvision

from moco.backbone import build_backbone, feature_dim, last_map_side
from moco.config import MoCoConfig
from moco.export import load_encoder, read_spec, save_random_encoder
from moco.model import MoCo
from plumbing.errors import EncoderSpecError


@pytest.mark.parametrize(
    ("stem", "width", "size", "side"),
    [
        ("imagenet", 64, 64, 2),
        ("imagenet", 64, 32, 1),
        ("cifar", 64, 32, 4),
        ("cifar", 16, 32, 4),
        ("cifar", 16, 48, 6),
        ("imagenet", 16, 48, 2),  # odd sides round up at each stride-2 layer
        ("cifar", 16, 20, 3),
    ],
)
def test_feature_map_size_follows_the_stem(stem, width, size, side):
    # imagenet: /2 conv, /2 max-pool, then /2 x3 = /32; cifar: stride-1 conv, no pool = /8
    net = build_backbone("resnet18", stem=stem, width=width)
    out = net(torch.randn(2, 3, size, size))
    assert tuple(out.shape) == (2, feature_dim("resnet18", width), side, side)
    assert last_map_side(stem, size) == side
    assert feature_dim("resnet18", width) == 8 * width


def test_standard_width_keeps_torchvision_names_and_shapes_and_narrow_halves_them():
    ref = {
        k: v.shape for k, v in torchvision.models.resnet18(weights=None).state_dict().items() if not k.startswith("fc.")
    }
    std = {k.removeprefix("net."): v.shape for k, v in build_backbone("resnet18").state_dict().items()}
    assert std == ref
    half = {k.removeprefix("net."): v.shape for k, v in build_backbone("resnet18", width=32).state_dict().items()}
    assert half.keys() == ref.keys()
    assert half["layer4.1.conv2.weight"] == (256, 256, 3, 3)
    small = {k.removeprefix("net."): v.shape for k, v in build_backbone("resnet18", stem="cifar").state_dict().items()}
    assert small["conv1.weight"] == (64, 3, 3, 3)
    assert {k for k in small if k != "conv1.weight" and small[k] != ref[k]} == set()


def test_unknown_stem_and_bad_width_are_refused():
    with pytest.raises(ValueError, match="stem"):
        MoCoConfig(stem="tiny")
    with pytest.raises(ValueError, match="width"):
        MoCoConfig(width=12)
    with pytest.raises(ValueError, match="stem"):
        build_backbone("resnet18", stem="tiny")


def test_moco_with_a_small_stem_trains_a_step_and_encodes_at_the_narrow_width():
    torch.manual_seed(0)
    model = MoCo(MoCoConfig(stem="cifar", width=8, dim=16, queue_size=32))
    x = torch.randn(8, 3, 16, 16)
    logits, labels = model(x, x.flip(3))
    assert tuple(logits.shape) == (8, 33)
    torch.nn.functional.cross_entropy(logits, labels).backward()
    assert model.encoder_q.backbone.net.conv1.weight.grad is not None
    assert tuple(model.encode(x).shape) == (8, 64)


def test_exported_small_stem_encoder_round_trips_and_old_specs_read_as_the_standard_network(tmp_path):
    spec = save_random_encoder(tmp_path / "enc", embed_size=32, dim=0, stem="cifar", width=16)
    module, read = load_encoder(tmp_path / "enc")
    assert (read.stem, read.width, read.embedding_dim) == ("cifar", 16, 128)
    assert read.sha256 == spec.sha256
    assert tuple(module(torch.randn(1, 3, 32, 32)).shape) == (1, 128)
    save_random_encoder(tmp_path / "standard", embed_size=32, dim=0)
    raw = json.loads((tmp_path / "standard" / "encoder.json").read_text())
    del raw["stem"], raw["width"]  # an encoder.json written before the stem existed
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "encoder.json").write_text(json.dumps(raw))
    assert (read_spec(tmp_path / "old").stem, read_spec(tmp_path / "old").width) == ("imagenet", 64)
    raw = json.loads((tmp_path / "enc" / "encoder.json").read_text())
    del raw["stem"], raw["width"]  # a narrow encoder's vectors read as the standard network's: refused
    (tmp_path / "old" / "encoder.json").write_text(json.dumps(raw))
    with pytest.raises(EncoderSpecError, match="embedding_dim"):
        read_spec(tmp_path / "old")
