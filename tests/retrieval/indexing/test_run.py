"""index_folder end to end with a tiny random encoder: incremental rules, resume, encoder checks, bad files,
and vectors checked against the Embedder run directly (the oracle)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest

import retrieval.indexing.embed_stream as embed_stream
from moco.export import save_random_encoder
from plumbing.hashing import content_hash
from plumbing.images import load_image
from retrieval.embed import Embedder
from retrieval.errors import EncoderMismatchError, InputError
from retrieval.indexing.run import index_folder
from retrieval.searching.query import SearchConfig, search_images
from retrieval.searching.searcher import SearchIndex
from tests.retrieval.conftest import index_cfg, make_image

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def embedder(encoder) -> Embedder:
    return Embedder.load(encoder, device="cpu")


@pytest.fixture
def counter(monkeypatch) -> dict[str, int]:
    """Counts images run through the encoder and files decoded by the embed stream."""
    counts = {"encoded": 0, "decoded": 0}
    real_encode = Embedder.encode_tensors
    real_load = embed_stream.load_image

    def encode_tensors(self, x):
        counts["encoded"] += x.shape[0]
        return real_encode(self, x)

    def load(path, min_side=None):
        counts["decoded"] += 1
        return real_load(path, min_side=min_side)

    monkeypatch.setattr(Embedder, "encode_tensors", encode_tensors)
    monkeypatch.setattr(embed_stream, "load_image", load)
    return counts


def _oracle(embedder: Embedder, path: Path) -> np.ndarray:
    return embedder.encode([load_image(path, min_side=embedder.min_side)])[0]


def _vectors_by_path(index_dir: Path) -> dict[str, np.ndarray]:
    index = SearchIndex.open(index_dir)
    return {r.path: np.array(index.vectors[r.id]) for r in index.records}


def test_first_run_indexes_everything_and_records_bad_files(photos, encoder, embedder, tmp_path, counter):
    report = index_folder(index_cfg(photos, encoder, tmp_path))
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
    cfg = index_cfg(photos, encoder, tmp_path)
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
    cfg = index_cfg(photos, encoder, tmp_path)
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
    index_folder(index_cfg(photos, encoder, tmp_path))
    other = tmp_path / "runs" / "other"
    save_random_encoder(other, arch="resnet18", embed_size=32, dim=16, seed=1)
    with pytest.raises(EncoderMismatchError, match="--rebuild"):
        index_folder(index_cfg(photos, other, tmp_path))
    report = index_folder(index_cfg(photos, other, tmp_path, rebuild=True))
    assert (report.embedded, report.generation) == (8, "gen-0002")
    assert SearchIndex.open(tmp_path / "idx").manifest.encoder_path == str(other.resolve())
    with pytest.raises(EncoderMismatchError):  # searching with the first encoder now fails
        search_images(SearchConfig((photos / "a" / "0.png",), tmp_path / "idx", model=encoder, device="cpu"))


def test_interrupted_run_resumes(photos, encoder, embedder, tmp_path, monkeypatch, counter):
    cfg = index_cfg(photos, encoder, tmp_path)
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


def test_progress_reaches_the_caller_not_the_terminal(photos, encoder, tmp_path, capfd):
    """The library reports embedding progress to a callback (the CLI draws the bars) and prints nothing."""
    calls = []
    cfg = index_cfg(photos, encoder, tmp_path, progress=lambda *a: calls.append(a))
    index_folder(cfg)
    assert {c[0] for c in calls} == {"embedding"}
    done = [c[1] for c in calls]
    assert done == sorted(done) and done[-1] == 10  # 8 images and 2 bad files, each counted once
    assert all(c[2] == 10 for c in calls)
    out, err = capfd.readouterr()
    assert out == "" and "embedding" not in err
