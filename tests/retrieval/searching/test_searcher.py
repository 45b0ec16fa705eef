"""SearchIndex against brute force: ids, scores, exclusion, lookups."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from retrieval.indexing.faiss_index import build_index
from retrieval.indexing.generations import write_generation
from retrieval.records import FileRecord
from retrieval.searching.searcher import Hit, SearchIndex, search

pytestmark = pytest.mark.usefixtures("one_faiss_thread")  # tests/retrieval/conftest.py


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def _brute_force(x: np.ndarray, q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    s = q @ x.T  # (q, n)
    i_ref = np.argsort(-s, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(s, i_ref, axis=1), i_ref


def _open(tmp_path: Path, x: np.ndarray, kind: str = "flat", hashes: list[str] | None = None) -> SearchIndex:
    records = [
        FileRecord(i, f"sub/{i:04d}.jpg", 10 + i, 1, hashes[i] if hashes else f"{i:064x}", 8, 8) for i in range(len(x))
    ]
    write_generation(
        tmp_path / "idx",
        root=tmp_path / "photos",
        encoder_sha256="e" * 64,
        encoder_path="/runs/r",
        records=records,
        bad=[],
        vectors=x,
        built=build_index(x, kind),
    )
    return SearchIndex.open(tmp_path / "idx")


@pytest.fixture
def vectors() -> np.ndarray:
    return _unit(np.random.default_rng(0).standard_normal((300, 16)))


def test_flat_search_equals_brute_force(tmp_path, vectors):
    index = _open(tmp_path, vectors)
    q = _unit(np.random.default_rng(1).standard_normal((7, 16)))
    hits = index.search_vectors(q, k=10)
    d_ref, i_ref = _brute_force(vectors, q, 10)
    i_new = np.array([[h.id for h in row] for row in hits])
    d_new = np.array([[h.cosine for h in row] for row in hits])
    np.testing.assert_array_equal(i_ref, i_new)
    np.testing.assert_allclose(d_ref, d_new, rtol=1e-5)
    assert [h.rank for h in hits[0]] == list(range(1, 11))
    top = hits[0][0]
    assert Hit(top.rank, top.id, top.path, top.cosine) == Hit(
        1, int(i_ref[0, 0]), f"sub/{i_ref[0, 0]:04d}.jpg", pytest.approx(d_ref[0, 0])
    )
    assert search(index, q, 10) == hits
    # one vector (d,) is one query
    assert index.search_vectors(q[0], k=3) == [hits[0][:3]]


def test_exclude_ids_still_returns_k(tmp_path, vectors):
    index = _open(tmp_path, vectors)
    q = vectors[[5, 9]]
    plain = index.search_vectors(q, k=4)
    assert plain[0][0].id == 5 and plain[1][0].id == 9  # a stored vector finds itself first
    excl = index.search_vectors(q, k=4, exclude_ids=[{5}, {9, plain[1][1].id}])
    _, i_ref = _brute_force(vectors, q, 6)
    assert [h.id for h in excl[0]] == [i for i in i_ref[0] if i != 5][:4]
    assert [h.id for h in excl[1]] == [i for i in i_ref[1] if i not in (9, plain[1][1].id)][:4]
    assert [h.rank for h in excl[1]] == [1, 2, 3, 4]


def test_padding_ids_are_dropped(tmp_path, vectors):
    index = _open(tmp_path, vectors)

    class Padded:  # what FAISS answers when it finds fewer than k: -1 ids (and -inf / -3.4e38 scores)
        def search(self, q, k):
            d = np.array([[0.9, 0.8, 0.7], [0.6, -np.inf, -np.inf]], dtype=np.float32)[:, :k]
            i = np.array([[4, 2, 7], [3, -1, -1]], dtype=np.int64)[:, :k]
            return d, i

    index.backgrounds(np.arange(len(index)))  # the hits' backgrounds from the real index, before the stand-in
    index._searcher = Padded()
    q = vectors[:2]
    assert [[(h.rank, h.id, h.path) for h in row] for row in index.search_vectors(q, k=3)] == [
        [(1, 4, "sub/0004.jpg"), (2, 2, "sub/0002.jpg"), (3, 7, "sub/0007.jpg")],
        [(1, 3, "sub/0003.jpg")],
    ]
    excluded = index.search_vectors(q, k=2, exclude_ids=[{2}, {3}])  # searches k + 1 = 3
    assert [[h.id for h in row] for row in excluded] == [[4, 7], []]
    assert [h.rank for h in excluded[0]] == [1, 2]


def test_k_larger_than_index(tmp_path, vectors):
    index = _open(tmp_path, vectors[:3])
    hits = index.search_vectors(vectors[:1], k=10)
    assert [h.id for h in hits[0]] == list(_brute_force(vectors[:3], vectors[:1], 3)[1][0])
    with pytest.raises(ValueError, match="Illegal k"):
        index.search_vectors(vectors[:1], k=0)
    with pytest.raises(ValueError, match="queries must be"):
        index.search_vectors(np.zeros((1, 5), np.float32), k=1)


def test_pq_index_returns_exact_cosines(tmp_path):
    rng = np.random.default_rng(2)
    centres = rng.standard_normal((20, 16))
    x = _unit(centres[rng.integers(0, 20, 2000)] + 0.3 * rng.standard_normal((2000, 16)))
    index = _open(tmp_path, x, kind="ivfpq")
    assert index.manifest.kind == "ivfpq"
    q = x[:50]
    hits = index.search_vectors(q, k=10)
    for qi, row in enumerate(hits):
        ids = [h.id for h in row]
        np.testing.assert_allclose([h.cosine for h in row], x[ids] @ q[qi], rtol=1e-5)  # exact, re-ranked
        assert [h.cosine for h in row] == sorted((h.cosine for h in row), reverse=True)
    _, i_ref = _brute_force(x, q, 10)
    recall = np.mean([len(set(r) & {h.id for h in row}) / 10 for r, row in zip(i_ref, hits, strict=True)])
    assert recall == pytest.approx(index.manifest.recall_at_10, abs=0.1)


def test_lookups(tmp_path, vectors):
    hashes = [f"{i % 100:064x}" for i in range(len(vectors))]  # three files share each content
    index = _open(tmp_path, vectors, hashes=hashes)
    assert index.root == tmp_path / "photos"
    assert index.id_for_path("sub/0007.jpg") == 7
    assert index.id_for_path(tmp_path / "photos" / "sub" / "0007.jpg") == 7
    assert index.id_for_path(tmp_path / "elsewhere.jpg") is None
    assert index.ids_for_hash(f"{7:064x}") == [7, 107, 207]
    assert index.abspath(index.records[7]) == tmp_path / "photos" / "sub" / "0007.jpg"
    assert len(index) == 300 and index.dim == 16
    np.testing.assert_array_equal(index.vectors, vectors)
