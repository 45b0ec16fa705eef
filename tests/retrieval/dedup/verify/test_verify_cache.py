"""The verification thumbnail cache beside an index: a rerun of dedup reads no file it has seen, a
thumbnail made another way is never used, and a damaged cache is skipped, never fatal."""

from __future__ import annotations

import numpy as np
import pytest

from retrieval.dedup.run import DedupConfig, find_duplicates
from retrieval.dedup.threshold import Threshold
from retrieval.dedup.verify import cache as verify_cache
from retrieval.dedup.verify.align import THUMB_SIDE
from retrieval.dedup.verify.cache import CACHE_NAME, ThumbnailCache

pytestmark = pytest.mark.usefixtures("one_thread")


def thumb(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (THUMB_SIDE, THUMB_SIDE), dtype=np.uint8)


def test_round_trip_and_what_is_not_a_thumbnail(tmp_path):
    cache = ThumbnailCache(tmp_path / CACHE_NAME)
    cache.put_many({"h1": thumb(1), "h2": thumb(2)})
    cache.close()
    cache = ThumbnailCache(tmp_path / CACHE_NAME)  # reopened: it was written to disk
    got = cache.get_many(["h2", "h1", "missing", "h1"])
    assert set(got) == {"h1", "h2"} and np.array_equal(got["h1"], thumb(1)) and np.array_equal(got["h2"], thumb(2))
    with cache._db:  # a row of the wrong size (written by a broken build) is ignored
        cache._db.execute("INSERT INTO thumbs VALUES ('short', ?, ?)", (verify_cache.VERSION, b"\x00" * 10))
    assert cache.get_many(["short"]) == {}
    cache.close()


def test_a_thumbnail_made_another_way_is_not_used(tmp_path, monkeypatch):
    cache = ThumbnailCache(tmp_path / CACHE_NAME)
    cache.put_many({"h1": thumb(1)})
    monkeypatch.setattr(verify_cache, "VERSION", "side 64, trim 9, straighten 9")
    assert cache.get_many(["h1"]) == {}
    cache.close()


def groups_of(index_dir) -> list[tuple[str, tuple[tuple[str, float | None], ...]]]:
    result = find_duplicates(DedupConfig(index=index_dir, threshold=Threshold(0.3), k=8))
    return [(g.keep.path, tuple((d.record.path, d.alignment) for d in g.duplicates)) for g in result.groups]


def test_a_rerun_reads_no_file_again(planted_index, caplog):
    index_dir, photos = planted_index
    first = groups_of(index_dir)
    assert (index_dir / CACHE_NAME).is_file()
    assert any(a is not None for _, dups in first for _, a in dups)
    for p in photos.iterdir():  # the files are gone: only the cache can verify now
        p.unlink()
    with caplog.at_level("WARNING"):
        assert groups_of(index_dir) == first  # the same pairs, verified with the same alignments
    assert not any("not verified" in r.getMessage() for r in caplog.records)


def test_a_damaged_cache_is_skipped_with_a_warning(planted_index, caplog):
    index_dir, _ = planted_index
    first = groups_of(index_dir)
    (index_dir / CACHE_NAME).write_bytes(b"this is not an SQLite database" * 100)
    with caplog.at_level("WARNING", logger="retrieval.dedup.verify.cache"):
        assert groups_of(index_dir) == first  # the files are read instead
    assert any(CACHE_NAME in r.getMessage() for r in caplog.records)
