"""Shared by test_indexing.py and test_querying.py: a folder of tiny photos with two bad files, a tiny
random encoder, and the index config both build their index with."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from moco.export import save_random_encoder
from retrieval.indexing.run import IndexConfig


def make_image(path: Path, seed: int, size: tuple[int, int] = (40, 32)) -> Path:
    """A distinct blocky colour pattern per seed."""
    blocks = np.random.default_rng(seed).integers(0, 256, (4, 5, 3), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(blocks).resize(size, Image.Resampling.NEAREST).save(path)
    return path


def index_cfg(photos: Path, encoder: Path, tmp_path: Path, **kw) -> IndexConfig:
    return IndexConfig(photos, encoder, tmp_path / "idx", batch_size=4, workers=2, device="cpu", **kw)


@pytest.fixture(scope="module")
def one_thread():
    """Tiny models run fastest on one thread, and do not fight the decode threads or other jobs.
    Not autouse: a module opts in with `pytestmark = pytest.mark.usefixtures("one_thread")`."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def one_faiss_thread():
    """FAISS's OpenMP threads spin against each other on a small, busy machine; tiny data needs one."""
    import faiss

    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    yield
    faiss.omp_set_num_threads(before)


@pytest.fixture(scope="module")
def encoder(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("runs") / "tiny"
    save_random_encoder(out, arch="resnet18", embed_size=32, dim=16, seed=0)
    return out


@pytest.fixture
def photos(tmp_path) -> Path:
    root = tmp_path / "photos"
    for i in range(8):
        make_image(root / ("a" if i < 4 else "b") / f"{i}.png", seed=i)
    (root / "broken.jpg").write_bytes(b"plain text, not an image")
    (root / "empty.png").write_bytes(b"")
    return root


def scene(seed: int, size: tuple[int, int] = (160, 120)) -> Image.Image:
    """A smooth random colour picture (blurred noise, upsampled): structure at every position."""
    rng = np.random.default_rng(seed)
    small = Image.fromarray(rng.integers(0, 256, (9, 12, 3), dtype=np.uint8))
    return small.resize(size, Image.Resampling.BICUBIC)


def crop(im: Image.Image, box: tuple[float, float, float, float]) -> Image.Image:
    w, h = im.size
    return im.crop((round(box[0] * w), round(box[1] * h), round(box[2] * w), round(box[3] * h)))


@pytest.fixture
def planted_index(tmp_path, encoder, monkeypatch) -> tuple[Path, Path]:
    """(index folder, photo folder): an original with a 20%-cropped and a mirrored copy among unrelated
    pictures, indexed with the tiny encoder; the verification band (and the alignment's reach) widened to every
    candidate pair, so what groups depends on the pictures lining up, not on the random encoder's scores."""
    from PIL import ImageOps

    from retrieval.dedup.verify import rule as dedup
    from retrieval.indexing.run import index_folder

    photos = tmp_path / "photos"
    photos.mkdir()
    original = scene(1)
    original.save(photos / "a.png")
    crop(original, (0.12, 0.1, 0.92, 0.88)).resize((130, 130)).save(photos / "a-crop.png")
    ImageOps.mirror(original).save(photos / "a-mirror.png")
    for seed in range(2, 7):
        scene(seed).save(photos / f"other{seed}.png")
    index_folder(index_cfg(photos, encoder, tmp_path))
    monkeypatch.setattr(dedup, "VERIFY_BELOW", 10.0)
    monkeypatch.setattr(dedup, "ALIGN_BELOW", 10.0)
    return tmp_path / "idx", photos
