"""moco.export and retrieval.embed: the exported encoder is the trained one, and is refused when damaged,
replaced or written by a newer version."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from moco.augment.presets import eval_transform
from moco.checkpoint import load_checkpoint
from moco.config import MoCoConfig
from moco.export import ENCODER_VERSION, load_encoder, read_spec
from moco.model import MoCo
from plumbing.errors import FormatVersionError, InputError
from retrieval.embed import Embedder


def trained_model(run_dir: Path) -> MoCo:
    """The training model as it was at the end of the run, rebuilt from checkpoint.pt."""
    state = load_checkpoint(run_dir / "checkpoint.pt")
    model = MoCo(MoCoConfig(**state["model_config"]))
    model.load_state_dict(state["model"])
    return model.eval()


def sample_images(n: int = 4) -> list[Image.Image]:
    rng = np.random.default_rng(5)
    return [Image.fromarray(rng.integers(0, 256, (50, 70, 3), dtype=np.uint8)) for _ in range(n)]


@pytest.fixture(scope="module")
def encoder_dir(budget_run, tmp_path_factory) -> Iterator[Path]:
    """A private copy of the run folder."""
    dst = tmp_path_factory.mktemp("export") / "run"
    shutil.copytree(budget_run.result.out_dir, dst, ignore=shutil.ignore_patterns("cache"))
    yield dst
    shutil.rmtree(dst, ignore_errors=True)


def copy_encoder(src: Path, dst: Path) -> Path:
    dst.mkdir()
    for name in ("encoder.json", "encoder.safetensors"):
        shutil.copy2(src / name, dst / name)
    return dst


def test_round_trip_gives_the_training_encoders_embedding(budget_run, encoder_dir):
    model = trained_model(encoder_dir)
    assert model.cfg.bn_splits > 1  # ghost BN in training; the export is a plain BatchNorm network
    module, spec = load_encoder(encoder_dir)
    assert spec.embed_size == budget_run.cfg.embed_size
    assert spec.embedding_dim == 512 and spec.layer == "backbone" and spec.gem_p == model.cfg.gem_p
    x = torch.stack([eval_transform(spec.embed_size, spec.mean, spec.std)(im) for im in sample_images()])
    with torch.no_grad():
        exported = F.normalize(module(x), dim=1)
    torch.testing.assert_close(exported, model.encode(x), rtol=1e-5, atol=1e-6)
    # and it is the query encoder's backbone, not the key encoder's
    q_state = model.encoder_q.backbone.state_dict()
    for name, t in module.encoder.backbone.state_dict().items():
        assert torch.equal(t, q_state[name]), name


def test_embedder_returns_unit_vectors_of_the_spec_dim(encoder_dir):
    emb = Embedder.load(encoder_dir, "cpu")
    images = sample_images(3)
    z = emb.encode(images)
    assert z.shape == (3, emb.spec.embedding_dim) and z.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(z, axis=1), 1.0, rtol=1e-5)
    # oracle: flip averaging of the training model's encode on the same preprocessed input
    model = trained_model(encoder_dir)
    x = torch.stack([emb.preprocess(im) for im in images])
    ref = F.normalize(model.encode(x) + model.encode(torch.flip(x, dims=[3])), dim=1)
    np.testing.assert_allclose(z, ref.numpy(), rtol=1e-4, atol=1e-5)
    assert emb.sha256 == read_spec(encoder_dir).identity  # weights + preprocessing


def test_a_damaged_weights_file_is_refused(encoder_dir, tmp_path):
    bad = copy_encoder(encoder_dir, tmp_path / "bad")
    load_encoder(bad)  # the copy itself is fine
    weights = bad / "encoder.safetensors"
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 0x01  # one bit in the middle of the tensors
    weights.write_bytes(bytes(data))
    with pytest.raises(InputError, match="checksum"):
        load_encoder(bad)
    with pytest.raises(InputError, match="checksum"):
        Embedder.load(bad, "cpu")


def test_a_newer_format_version_is_refused(encoder_dir, tmp_path):
    newer = copy_encoder(encoder_dir, tmp_path / "newer")
    spec = json.loads((newer / "encoder.json").read_text())
    spec["format_version"] = ENCODER_VERSION + 1
    (newer / "encoder.json").write_text(json.dumps(spec))
    with pytest.raises(FormatVersionError, match="newer"):
        load_encoder(newer)


def test_a_missing_encoder_is_an_input_error(tmp_path):
    with pytest.raises(InputError, match="no encoder"):
        load_encoder(tmp_path)
