"""index_folder / search_images end to end with a tiny random encoder: incremental rules, resume,
encoder checks, bad files, and vectors checked against the Embedder run directly (the oracle)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import retrieval.pipeline as pipeline
from moco.export import save_random_encoder
from moco.images import load_image
from retrieval.embed import Embedder
from retrieval.errors import EncoderMismatchError, InputError
from retrieval.hashing import content_hash
from retrieval.pipeline import IndexConfig, SearchConfig, index_folder, search_images
from retrieval.search import SearchIndex


def make_image(path: Path, seed: int, size: tuple[int, int] = (40, 32)) -> Path:
    """A distinct blocky colour pattern per seed."""
    blocks = np.random.default_rng(seed).integers(0, 256, (4, 5, 3), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(blocks).resize(size, Image.Resampling.NEAREST).save(path)
    return path


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny models run fastest on one thread, and do not fight the decode threads or other jobs."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def encoder(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("runs") / "tiny"
    save_random_encoder(out, arch="resnet18", image_size=32, dim=16, seed=0)
    return out


@pytest.fixture(scope="module")
def embedder(encoder) -> Embedder:
    return Embedder.load(encoder, device="cpu")


@pytest.fixture
def photos(tmp_path) -> Path:
    root = tmp_path / "photos"
    for i in range(8):
        make_image(root / ("a" if i < 4 else "b") / f"{i}.png", seed=i)
    (root / "broken.jpg").write_bytes(b"plain text, not an image")
    (root / "empty.png").write_bytes(b"")
    return root


@pytest.fixture
def counter(monkeypatch) -> dict[str, int]:
    """Counts images run through the encoder and files decoded by the pipeline."""
    counts = {"encoded": 0, "decoded": 0}
    real_encode = Embedder.encode_tensors
    real_load = pipeline.load_image

    def encode_tensors(self, x):
        counts["encoded"] += x.shape[0]
        return real_encode(self, x)

    def load(path, min_side=None):
        counts["decoded"] += 1
        return real_load(path, min_side=min_side)

    monkeypatch.setattr(Embedder, "encode_tensors", encode_tensors)
    monkeypatch.setattr(pipeline, "load_image", load)
    return counts


def _cfg(photos: Path, encoder: Path, tmp_path: Path, **kw) -> IndexConfig:
    return IndexConfig(photos, encoder, tmp_path / "idx", batch_size=4, workers=2, device="cpu",
                       progress=False, **kw)


def _oracle(embedder: Embedder, path: Path) -> np.ndarray:
    return embedder.encode([load_image(path, min_side=embedder.min_side)])[0]


def _vectors_by_path(index_dir: Path) -> dict[str, np.ndarray]:
    index = SearchIndex.open(index_dir)
    return {r.path: np.array(index.vectors[r.id]) for r in index.records}


def test_first_run_indexes_everything_and_records_bad_files(photos, encoder, embedder, tmp_path, counter):
    report = index_folder(_cfg(photos, encoder, tmp_path))
    assert (report.ok, report.bad, report.embedded, report.written) == (8, 2, 8, True)
    assert counter["encoded"] == 8
    index = SearchIndex.open(tmp_path / "idx")
    assert index.root == photos.resolve()
    assert [r.path for r in index.records] == [f"a/{i}.png" for i in range(4)] + [f"b/{i}.png" for i in range(4, 8)]
    assert {b.path: b.error for b in index.bad} == {
        "broken.jpg": "not an image, or an unsupported format",
        "empty.png": "empty file",
    }
    for r in index.records:
        assert (r.width, r.height, r.size) == (40, 32, (photos / r.path).stat().st_size)
        assert r.content_hash == content_hash(photos / r.path)
        np.testing.assert_allclose(index.vectors[r.id], _oracle(embedder, photos / r.path), atol=1e-5)
    # every stored vector finds itself first
    hits = index.search_vectors(np.asarray(index.vectors), k=1)
    assert [h[0].id for h in hits] == list(range(8))
    m = index.manifest
    assert (m.kind, m.recall_at_10, m.encoder_sha256, m.n_ok, m.n_bad) == ("flat", 1.0, embedder.sha256, 8, 2)
    assert not (tmp_path / "idx" / "work").exists()


def test_incremental_reruns(photos, encoder, embedder, tmp_path, counter):
    cfg = _cfg(photos, encoder, tmp_path)
    index_folder(cfg)
    before = _vectors_by_path(cfg.index)
    counter.update(encoded=0, decoded=0)

    # nothing changed: nothing decoded (not even the bad files), no new generation
    report = index_folder(cfg)
    assert (report.embedded, report.written, report.generation) == (0, False, "gen-0001")
    assert counter == {"encoded": 0, "decoded": 0}

    # one file's content changed: exactly that one is re-embedded
    make_image(photos / "a" / "1.png", seed=100)
    report = index_folder(cfg)
    assert (report.embedded, report.written) == (1, True)
    assert counter["encoded"] == 1
    after = _vectors_by_path(cfg.index)
    np.testing.assert_allclose(after["a/1.png"], _oracle(embedder, photos / "a" / "1.png"), atol=1e-5)
    assert not np.allclose(after["a/1.png"], before["a/1.png"])
    for p in before:
        if p != "a/1.png":
            np.testing.assert_array_equal(after[p], before[p])

    # renamed / moved: recognised by content hash, vector kept, nothing embedded
    (photos / "c").mkdir()
    os.replace(photos / "a" / "2.png", photos / "c" / "two.png")
    counter["encoded"] = 0
    report = index_folder(cfg)
    assert (report.embedded, report.rehashed, report.removed) == (0, 1, 1)
    assert counter["encoded"] == 0
    after = _vectors_by_path(cfg.index)
    assert "a/2.png" not in after
    np.testing.assert_array_equal(after["c/two.png"], before["a/2.png"])

    # deleted: gone from catalog, vectors and FAISS
    (photos / "b" / "5.png").unlink()
    report = index_folder(cfg)
    assert (report.embedded, report.removed, report.ok) == (0, 1, 7)
    index = SearchIndex.open(cfg.index)
    assert "b/5.png" not in {r.path for r in index.records}
    assert index.index.ntotal == len(index.records) == len(index.vectors) == 7

    # touched (mtime only) and copied: hashed, not embedded
    st = (photos / "b" / "6.png").stat()
    os.utime(photos / "b" / "6.png", ns=(st.st_atime_ns, st.st_mtime_ns + 5_000_000_000))
    shutil.copy(photos / "b" / "7.png", photos / "b" / "7-copy.png")
    report = index_folder(cfg)
    assert (report.embedded, report.rehashed, report.ok) == (0, 1, 8)
    assert counter["encoded"] == 0
    after = _vectors_by_path(cfg.index)
    np.testing.assert_array_equal(after["b/7-copy.png"], before["b/7.png"])
    assert index_folder(cfg).written is False  # the new mtime was recorded


def test_missing_or_empty_root_deletes_nothing(photos, encoder, tmp_path):
    cfg = _cfg(photos, encoder, tmp_path)
    index_folder(cfg)
    files = {p: content_hash(p) for p in cfg.index.rglob("*") if p.is_file()}
    shutil.rmtree(photos)
    with pytest.raises(InputError, match="does not exist"):
        index_folder(cfg)
    photos.mkdir()
    (photos / "notes.txt").write_text("no images here")
    with pytest.raises(InputError, match="no images found"):
        index_folder(cfg)
    assert {p: content_hash(p) for p in cfg.index.rglob("*") if p.is_file()} == files
    assert len(SearchIndex.open(cfg.index).records) == 8


def test_other_encoder_is_refused_unless_rebuild(photos, encoder, tmp_path):
    index_folder(_cfg(photos, encoder, tmp_path))
    other = tmp_path / "runs" / "other"
    save_random_encoder(other, arch="resnet18", image_size=32, dim=16, seed=1)
    with pytest.raises(EncoderMismatchError, match="--rebuild"):
        index_folder(_cfg(photos, other, tmp_path))
    report = index_folder(_cfg(photos, other, tmp_path, rebuild=True))
    assert (report.embedded, report.generation) == (8, "gen-0002")
    assert SearchIndex.open(tmp_path / "idx").manifest.encoder_path == str(other.resolve())
    with pytest.raises(EncoderMismatchError):  # searching with the first encoder now fails
        search_images(SearchConfig((photos / "a" / "0.png",), tmp_path / "idx", model=encoder, device="cpu"))


def test_interrupted_run_resumes(photos, encoder, embedder, tmp_path, monkeypatch, counter):
    cfg = _cfg(photos, encoder, tmp_path)
    real = Embedder.encode_tensors  # the counting one
    calls = {"n": 0}

    def dies_on_second_batch(self, x):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return real(self, x)

    monkeypatch.setattr(Embedder, "encode_tensors", dies_on_second_batch)
    with pytest.raises(KeyboardInterrupt):
        index_folder(cfg)
    assert not (cfg.index / "CURRENT").exists() and list((cfg.index / "work").glob("*.npz"))
    monkeypatch.setattr(Embedder, "encode_tensors", real)
    counter["encoded"] = 0
    report = index_folder(cfg)
    assert (report.resumed, report.embedded, report.ok, report.bad) == (4, 4, 8, 2)  # batch 1 was saved
    assert counter["encoded"] == 4
    vectors = _vectors_by_path(cfg.index)
    for p, v in vectors.items():
        np.testing.assert_allclose(v, _oracle(embedder, photos / p), atol=1e-5)
    assert not (cfg.index / "work").exists()


def test_search_images(photos, encoder, tmp_path):
    index_folder(_cfg(photos, encoder, tmp_path))
    q = photos / "a" / "3.png"
    outside = tmp_path / "query-copy.png"
    shutil.copy(q, outside)
    cfg = SearchConfig((q, outside), tmp_path / "idx", k=3, device="cpu")
    results = search_images(cfg)
    assert [r.query for r in results] == [str(q), str(outside)]
    for r in results:
        assert [h.rank for h in r.hits] == [1, 2, 3]
        assert r.hits[0].path == str(photos.resolve() / "a" / "3.png")
        assert r.hits[0].score == pytest.approx(1.0, abs=1e-5)
    excluded = search_images(SearchConfig((q, outside), tmp_path / "idx", k=3, exclude_self=True, device="cpu"))
    for plain, ex in zip(results, excluded, strict=True):
        assert len(ex.hits) == 3
        assert [h.id for h in ex.hits] == [h.id for h in plain.hits[1:]] + [ex.hits[2].id]
        assert all(h.path != plain.hits[0].path for h in ex.hits)
    # a folder is expanded into its images
    assert [r.query for r in search_images(SearchConfig((photos / "a",), tmp_path / "idx", k=1))] == [
        str(photos / "a" / f"{i}.png") for i in range(4)
    ]


@pytest.mark.parametrize("name,reason", [("broken.jpg", "not an image"), ("nope.png", "no such file")])
def test_bad_query_names_the_file(photos, encoder, tmp_path, name, reason):
    index_folder(_cfg(photos, encoder, tmp_path))
    with pytest.raises(InputError, match=reason) as exc:
        search_images(SearchConfig((photos / name,), tmp_path / "idx", device="cpu"))
    assert str(photos / name) in str(exc.value)
