"""Descriptor levers of the exported encoder: layer3+layer4 pooling and test-time averaging over rescalings and
crops (moco.augment.tta), each against a hand-built oracle from the same weights."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from moco.augment.tta import CROP_SIDE, tta_views
from moco.backbone import gem, pooled_dim
from moco.export import export_descriptor_variant, load_encoder, read_spec, save_random_encoder
from plumbing.errors import EncoderSpecError
from retrieval.embed import Embedder


@pytest.fixture(scope="module")
def plain(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("enc") / "plain"
    save_random_encoder(out, embed_size=32, dim=0, width=16)  # backbone descriptor, 128 wide
    return out


def batch() -> torch.Tensor:
    return torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(0))


def test_tta_views_are_the_rescalings_then_the_corner_and_centre_crops():
    x = torch.arange(2 * 3 * 8 * 8, dtype=torch.float32).view(2, 3, 8, 8)
    assert tta_views(x)[0] is x and len(tta_views(x)) == 1
    views = tta_views(x, (1.0, 0.5), 5)
    assert [tuple(v.shape[-2:]) for v in views] == [(8, 8), (4, 4)] + [(8, 8)] * 5
    c = round(8 * CROP_SIDE)  # 6: corners start at 0 and 2, the centre at 1
    for view, (top, left) in zip(views[2:], [(0, 0), (0, 2), (2, 0), (2, 2), (1, 1)], strict=True):
        crop = x[..., top : top + c, left : left + c]
        torch.testing.assert_close(view, F.interpolate(crop, size=(8, 8), mode="bilinear", antialias=True))
    with pytest.raises(ValueError, match="crops"):
        tta_views(x, (1.0,), 3)
    with pytest.raises(ValueError, match="scales"):
        tta_views(x, (), 0)


def test_test_time_averaging_sums_each_views_unit_descriptor(plain, tmp_path):
    base, _ = load_encoder(plain)
    spec = export_descriptor_variant(plain, tmp_path / "tta", test_time_scales=(1.0, 0.75), test_time_crops=5)
    assert spec.sha256 == read_spec(plain).sha256 and spec.identity != read_spec(plain).identity
    tta, _ = load_encoder(tmp_path / "tta")
    x = batch()
    with torch.no_grad():
        want = sum(F.normalize(base(v), dim=1) for v in tta_views(x, (1.0, 0.75), 5))  # 7 views
        torch.testing.assert_close(tta(x), want, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(base(x), base.encoder(x))  # the default spec: one view, as before
    # the embedder normalises the sum (and flip-averages it): unit vectors of the averaged descriptor
    z = Embedder.load(tmp_path / "tta", "cpu").encode_tensors(x)
    assert z.shape == (3, 128)
    torch.testing.assert_close(torch.from_numpy(z).norm(dim=1), torch.ones(3))


def test_layer3_plus_layer4_is_each_layers_unit_gem_side_by_side(plain, tmp_path):
    spec = export_descriptor_variant(plain, tmp_path / "l34", pooled="layer3+layer4", embedding_dim=128 + 64)
    assert spec.embedding_dim == pooled_dim("resnet18", 16, "layer3+layer4") == 192
    enc, _ = load_encoder(tmp_path / "l34")
    base, _ = load_encoder(plain)
    x = batch()
    with torch.no_grad():
        n = base.encoder.backbone.net  # the torchvision ResNet, stage by stage
        f3 = n.layer3(n.layer2(n.layer1(n.maxpool(n.relu(n.bn1(n.conv1(x)))))))  # (3, 64, 2, 2)
        f4 = n.layer4(f3)  # (3, 128, 1, 1)
        want = torch.cat([F.normalize(gem(f3, 3.0), dim=1), F.normalize(gem(f4, 3.0), dim=1)], dim=1)
        torch.testing.assert_close(enc(x), want, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(enc(x)[:, 64:] * base(x).norm(dim=1, keepdim=True), base(x), atol=1e-5, rtol=1e-4)
    assert Embedder.load(tmp_path / "l34", "cpu").dim == 192


@pytest.mark.parametrize(
    ("field", "value"),
    [("pooled", "layer2"), ("test_time_crops", 4), ("test_time_scales", [0.1]), ("test_time_scales", [])],
)
def test_a_bad_descriptor_field_is_refused_by_name(plain, tmp_path, field, value):
    out = tmp_path / "bad"
    out.mkdir()
    (out / "encoder.safetensors").write_bytes((plain / "encoder.safetensors").read_bytes())
    doc = json.loads((plain / "encoder.json").read_text())
    (out / "encoder.json").write_text(json.dumps({**doc, field: value}))
    with pytest.raises(EncoderSpecError, match=field):
        read_spec(out)


def test_an_older_encoder_json_reads_with_the_default_descriptor(plain, tmp_path):
    out = tmp_path / "old"
    out.mkdir()
    doc = json.loads((plain / "encoder.json").read_text())
    for name in ("pooled", "test_time_scales", "test_time_crops"):
        doc.pop(name)
    (out / "encoder.json").write_text(json.dumps(doc))
    spec = read_spec(out)
    assert (spec.pooled, spec.test_time_scales, spec.test_time_crops) == ("layer4", (1.0,), 0)
    assert spec.identity == read_spec(plain).identity
