"""search_images end to end over an index built by index_folder with a tiny random encoder: top-k, self
exclusion, folder queries, and bad query files named in the error."""

from __future__ import annotations

import shutil

import pytest

from retrieval.errors import InputError
from retrieval.indexing.run import index_folder
from retrieval.searching.query import SearchConfig, search_images
from tests.retrieval.conftest import index_cfg

pytestmark = pytest.mark.usefixtures("one_thread")


def test_search_images(photos, encoder, tmp_path):
    index_folder(index_cfg(photos, encoder, tmp_path))
    q = photos / "a" / "3.png"
    outside = tmp_path / "query-copy.png"
    shutil.copy(q, outside)
    cfg = SearchConfig((q, outside), tmp_path / "idx", k=3, device="cpu")
    results = search_images(cfg)
    assert [r.query for r in results] == [str(q), str(outside)]
    for r in results:
        assert [h.rank for h in r.hits] == [1, 2, 3]
        assert r.hits[0].path == str(photos.resolve() / "a" / "3.png")
        assert r.hits[0].cosine == pytest.approx(1.0, abs=1e-5)
        assert r.hits[0].score == pytest.approx(1.0, abs=1e-4)  # an identical picture scores 1
        assert r.hits[0].band == "same picture"
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
    index_folder(index_cfg(photos, encoder, tmp_path))
    with pytest.raises(InputError, match=reason) as exc:
        search_images(SearchConfig((photos / name,), tmp_path / "idx", device="cpu"))
    assert str(photos / name) in str(exc.value)
