"""Search tab handlers on the tiny index: the query itself is the top hit; bad uploads get a readable error."""

from __future__ import annotations

import zlib
from pathlib import Path

import gradio as gr
import pytest

from app import search_tab
from app.binding import bind
from plumbing.errors import InputError
from tests.app.conftest import COPY


def test_query_is_its_own_top_hit(engine, tiny):
    for rel in ("a/p00.png", "b/p12.png"):
        results, shown = search_tab.search(engine, str(tiny.photos / rel), 5)
        assert results[0]["file"] == rel
        assert [engine.record(i).path for i, _ in shown] == [r["file"] for r in results]  # the session's copy
        assert results[0]["score"] == pytest.approx(1.0, abs=1e-4)
        assert len(results) == 5
        assert all(set(r) == {"file", "score", "band", "cosine"} for r in results)  # no "path": a client would fetch it
        assert results[0]["band"] == "same picture"
        assert [r["cosine"] for r in results] == sorted((r["cosine"] for r in results), reverse=True)  # ranked by it


def test_k_is_clamped_to_the_slider_range(engine, tiny):
    assert len(search_tab.search(engine, str(tiny.photos / "a/p00.png"), 0)[0]) == 1
    assert len(search_tab.search(engine, str(tiny.photos / "a/p00.png"), 3.0)[0]) == 3


def test_more_like_this_searches_from_the_clicked_result(engine, tiny):
    results, shown = search_tab.search(engine, str(tiny.photos / "a/p03.png"), 4)
    clicked = [r["file"] for r in results].index("a/p03.png")
    clicked_event = gr.SelectData(None, {"index": clicked, "value": None})
    more, more_shown, caption = search_tab.more_like_this(engine, shown, 4, clicked_event)
    assert "a/p03.png" not in [r["file"] for r in more]  # the clicked file itself is left out
    assert more[0]["file"] == COPY  # its exact copy is the nearest other file
    assert more[0]["score"] == pytest.approx(1.0, abs=1e-4)
    assert [engine.record(i).path for i, _ in more_shown] == [r["file"] for r in more]
    assert "a/p03.png" in caption


@pytest.mark.parametrize("index", [-1, 4, 99, "0", None, 1.0, True, [0]])
def test_a_click_outside_the_sessions_results_is_refused(engine, tiny, index):
    shown = search_tab.search(engine, str(tiny.photos / "a/p03.png"), 4)[1]
    with pytest.raises(InputError, match="gone"):
        search_tab.more_like_this(engine, shown, 4, gr.SelectData(None, {"index": index, "value": None}))
    with pytest.raises(InputError, match="gone"):
        search_tab.more_like_this(engine, (), 4, gr.SelectData(None, {"index": 0, "value": None}))


def test_gallery_shows_thumbnails_with_score_and_path(engine, tiny):
    results, shown = search_tab.search(engine, str(tiny.photos / "a/p01.png"), 3)
    items = search_tab.show_results(engine, shown)
    assert [caption.split()[-1] for _, caption in items] == [r["file"] for r in results]
    assert all(max(im.size) <= engine.cfg.thumb_size for im, _ in items)


def _bomb_png(path: Path) -> Path:
    """A valid PNG header claiming 20000 x 20000 pixels (400 M > the loader's limit), no real data."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return len(data).to_bytes(4, "big") + kind + data + zlib.crc32(kind + data).to_bytes(4, "big")

    ihdr = (20000).to_bytes(4, "big") * 2 + bytes([8, 2, 0, 0, 0])
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)))
    return path


@pytest.mark.parametrize(
    ("name", "content", "reason"),
    [
        ("notes.jpg", b"plain text, not a picture", "not an image"),
        ("drawing.png", b'<svg xmlns="http://www.w3.org/2000/svg"><script>alert(1)</script></svg>', "not an image"),
        ("page.jpg", b"<!doctype html><html><body><img src=x onerror=alert(1)></body></html>", "not an image"),
        ("empty.png", b"", "empty file"),
        ("bomb.png", None, "too many pixels"),
    ],
)
def test_bad_uploads_get_a_readable_error(engine, tmp_path, name, content, reason):
    path = tmp_path / name
    _bomb_png(path) if content is None else path.write_bytes(content)
    with pytest.raises(gr.Error) as err:
        bind(search_tab.search, engine)(str(path), 5)
    assert name in str(err.value.message) and reason in str(err.value.message)
    assert str(tmp_path) not in str(err.value.message)  # the person's file name, not the server's path
    assert search_tab.search(engine, str(engine.root / "a/p00.png"), 1)[0][0]["file"] == "a/p00.png"  # still serving


def test_no_image_asks_for_one(engine):
    with pytest.raises(InputError, match="query image"):
        search_tab.search(engine, None, 5)
