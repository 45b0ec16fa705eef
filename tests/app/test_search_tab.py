"""Search tab handlers on the tiny index: the query itself is the top hit; bad uploads get a readable error."""

from __future__ import annotations

import zlib
from pathlib import Path

import gradio as gr
import pytest
from PIL import Image

from app import engine as engine_module
from app import search_tab
from app.binding import bind
from app.ui import build_app
from plumbing.errors import InputError
from tests.app.conftest import COPY


def _search(engine, path, k):
    results, trail, caption, gallery, *closed = search_tab.search(engine, str(path), k)
    return results, trail, gallery


def test_query_is_its_own_top_hit(engine, tiny):
    for rel in ("a/p00.png", "b/p12.png"):
        results, trail, gallery = _search(engine, tiny.photos / rel, 5)
        assert results[0]["file"] == rel
        assert [engine.record(s.id).path for s in trail[-1].shown] == [r["file"] for r in results]  # the session's
        assert results[0]["score"] == pytest.approx(1.0, abs=1e-4)
        assert len(results) == 5 and len(trail) == 1  # a new query starts a new trail
        assert all(set(r) == {"file", "score", "band", "cosine"} for r in results)  # no "path": a client would fetch it
        assert results[0]["band"] == "same picture"
        assert [r["cosine"] for r in results] == sorted((r["cosine"] for r in results), reverse=True)  # ranked by it


def test_the_gallery_shows_the_score_and_band_not_the_cosine(engine, tiny):
    results, _, gallery = _search(engine, tiny.photos / "a/p01.png", 4)
    for (_, caption), r in zip(gallery, results, strict=True):
        assert caption == f"{r['score']:.2f} {r['band']} · {r['file']}"
    assert gallery[0][1] == "1.00 same picture · a/p01.png"


def test_thumbnails_are_encoded_once_into_gradios_cache(engine, tiny, monkeypatch):
    from gradio.utils import get_upload_folder

    _, _, first = _search(engine, tiny.photos / "b/p09.png", 6)
    for path, _ in first:
        assert Path(path).is_relative_to(Path(get_upload_folder()).resolve()) and path.endswith(".webp")
        with Image.open(path) as im:
            assert max(im.size) <= engine.cfg.thumb_size and im.format == "WEBP"
    decoded = []
    real = engine_module._downsized
    monkeypatch.setattr(engine_module, "_downsized", lambda p, size: decoded.append(p) or real(p, size))
    _, _, again = _search(engine, tiny.photos / "b/p09.png", 6)
    assert [p for p, _ in again] == [p for p, _ in first] and decoded == []  # served as they are
    Path(first[0][0]).unlink()  # the cache sweep took one: it is made again
    _, _, swept = _search(engine, tiny.photos / "b/p09.png", 6)
    assert Path(swept[0][0]).is_file() and len(decoded) == 1


def test_k_is_clamped_to_the_slider_range(engine, tiny):
    assert len(search_tab.search(engine, str(tiny.photos / "a/p00.png"), 0)[0]) == 1
    assert len(search_tab.search(engine, str(tiny.photos / "a/p00.png"), 3.0)[0]) == 3


def _click(i):
    return gr.SelectData(None, {"index": i, "value": None})


def test_a_result_opens_large_with_its_details(engine, tiny):
    results, trail, _ = _search(engine, tiny.photos / "a/p03.png", 4)
    i = [r["file"] for r in results].index(COPY)
    opened, large, details, panel = search_tab.open_result(engine, trail, _click(i))
    rec = engine.record(opened)
    assert rec.path == COPY and panel["visible"] is True
    assert COPY in details and "64 × 48 pixels" in details and f"{rec.size:,} bytes" in details
    assert "UTC" in details and COPY in large["alt_text"] and "same picture" in large["alt_text"]
    with Image.open(large["value"]) as im:
        assert im.size == (64, 48)  # smaller than LARGE: its own size


def test_more_like_this_and_back(engine, tiny):
    results, trail, _ = _search(engine, tiny.photos / "a/p03.png", 4)
    opened = search_tab.open_result(engine, trail, _click([r["file"] for r in results].index("a/p03.png")))[0]
    more, trail2, caption, gallery, query, *closed = search_tab.more_like_this(engine, trail, opened, 4)
    assert "a/p03.png" not in [r["file"] for r in more]  # the clicked file itself is left out
    assert more[0]["file"] == COPY and more[0]["score"] == pytest.approx(1.0, abs=1e-4)  # its exact copy
    assert [engine.record(s.id).path for s in trail2[-1].shown] == [r["file"] for r in more]
    assert "a/p03.png" in caption and len(trail2) == 2 and closed[0] is None and closed[3]["visible"] is False
    assert isinstance(query, str)  # a plain value: a gr.update would swap the hardened query panel for a stock one
    with Image.open(query) as im:  # the query panel shows the new query, named as it (its alt text)
        assert im.size == (64, 48) and Path(query).name == "p03.webp"
    back, trail3, caption3, gallery3, _, *_ = search_tab.show_results(engine, trail2)
    assert [r["file"] for r in back] == [r["file"] for r in results] and trail3 == trail
    assert [p for p, _ in gallery3] == [engine.indexed_file(s.id) for s in trail[-1].shown]
    assert search_tab.show_results(engine, trail3)[1] == trail  # the first page stays
    assert search_tab.show_results(engine, ())[3] == []


@pytest.mark.parametrize("index", [-1, 4, 99, "0", None, 1.0, True, [0]])
def test_a_click_outside_the_sessions_results_is_refused(engine, tiny, index):
    trail = _search(engine, tiny.photos / "a/p03.png", 4)[1]
    with pytest.raises(InputError, match="gone"):
        search_tab.open_result(engine, trail, _click(index))
    with pytest.raises(InputError, match="gone"):
        search_tab.open_result(engine, (), _click(0))


def test_more_like_this_only_from_a_result_on_screen(engine, tiny):
    trail = _search(engine, tiny.photos / "a/p03.png", 2)[1]
    elsewhere = next(r.id for r in engine.index.records if r.id not in {s.id for s in trail[-1].shown})
    for opened in (None, elsewhere, -1):
        with pytest.raises(InputError, match="gone"):
            search_tab.more_like_this(engine, trail, opened, 4)
    with pytest.raises(InputError, match="gone"):
        search_tab.more_like_this(engine, (), trail[-1].shown[0].id, 4)


def test_one_event_per_search_and_a_refused_query_clears_the_results(engine):
    blocks = build_app(engine)
    fns = blocks.fns
    search = next(i for i, f in fns.items() if f.api_name == "search_page")
    after = [f for f in fns.values() if f.trigger_after == search]
    assert [f.name for f in after] == ["cleared"] and after[0].trigger_only_on_failure  # nothing chained on success
    by_name = {f.name: f for f in fns.values()}
    query = fns[search].inputs[0]
    for name, n in (("search", 8), ("cleared", 8), ("open_result", 4), ("more_like_this", 9), ("show_results", 9)):
        assert len(by_name[name].outputs) == n, name
    assert [f.name for f in fns.values() if query in f.outputs] == ["more_like_this", "show_results"]
    results, trail, caption, gallery, opened, large, details, panel = search_tab.cleared()
    assert (results, trail, caption, gallery, opened, panel["visible"]) == ([], (), "", [], None, False)


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


def test_the_search_api_answers_the_json_alone(engine, tiny):
    """`/search` (gradio_client's api_name) returns one output, the hits as JSON, the same as the page's search."""
    fns = build_app(engine).fns
    api = next(f for f in fns.values() if f.api_name == "search")
    assert len(api.outputs) == 1 and api.name == "search_json"
    query = str(tiny.photos / "a/p00.png")
    got = search_tab.search_json(engine, query, 3)
    assert got == search_tab.search(engine, query, 3)[0] and got[0]["file"] == "a/p00.png"
    assert set(got[0]) == {"file", "score", "band", "cosine"}
