"""POST /api/search: the query image's bytes in, the `search` event's JSON out, in one request; bad requests get
one line naming the file and the reason; with log-in the endpoint is not there."""

from __future__ import annotations

import dataclasses
import io
import logging

import httpx
import numpy as np
import pytest
from PIL import Image

from app import search_tab
from app.main import start
from app.rest import PATH
from tests.app.server import free_port

CAP = 200_000


@pytest.fixture(scope="module")
def server(engine):
    srv = start(dataclasses.replace(engine, cfg=dataclasses.replace(engine.cfg, port=free_port(), max_file_size=CAP)))
    yield srv
    srv.close()


def post(url: str, body: bytes, **params: str) -> httpx.Response:
    return httpx.post(url.rstrip("/") + PATH, content=body, params=params, timeout=60)


def test_answers_what_the_search_event_answers(server, engine, tiny):
    query = tiny.photos / "a/p05.png"
    r = post(server.url, query.read_bytes(), k="4", name="p05.png")
    assert r.status_code == 200, r.text
    assert r.json() == search_tab.search_json(engine, str(query), 4)  # the oracle: the Gradio endpoint's handler
    assert len(r.json()) == 4 and r.json()[0]["file"] == "a/p05.png" and r.json()[0]["band"] == "same picture"


def test_concurrent_requests_each_get_their_own_answer(server, engine, tiny):
    from concurrent.futures import ThreadPoolExecutor

    files = sorted(tiny.photos.glob("*/p*.png"))[:8]
    with ThreadPoolExecutor(8) as pool:
        got = list(pool.map(lambda f: post(server.url, f.read_bytes(), k="3").json(), files))
    for f, answer in zip(files, got, strict=True):
        assert answer == search_tab.search_json(engine, str(f), 3), f.name
        np.testing.assert_allclose(answer[0]["cosine"], 1.0, atol=1e-4)


@pytest.mark.parametrize(
    ("body", "params", "status", "message"),
    [
        (b"not a picture\n", {"name": "notes.jpg"}, 400, "notes.jpg: "),
        (b"", {"name": "empty.png"}, 400, "empty.png: empty request body"),
        (b"x" * (CAP + 1), {"name": "big.jpg"}, 413, "big.jpg: larger than the app's limit of 200,000 bytes"),
        (b"GIF89a", {"name": "../../etc/passwd"}, 400, "_.._etc_passwd: "),  # a name is never a path
        (None, {"k": "many"}, 400, "k: a number of results"),
    ],
)
def test_bad_requests_get_one_line(server, tiny, caplog, body, params, status, message):
    body = (tiny.photos / "a/p01.png").read_bytes() if body is None else body
    with caplog.at_level(logging.WARNING, logger="app.rest"):
        r = post(server.url, body, **params)
    assert r.status_code == status
    error = r.json()["error"]
    assert error.startswith(message) and "\n" not in error, error
    assert "Traceback" not in caplog.text


def test_a_picture_in_a_format_uploads_refuse_is_refused(server):
    buf = io.BytesIO()
    Image.new("RGB", (40, 40), "red").save(buf, "ICO")
    r = post(server.url, buf.getvalue(), name="icon.ico")
    assert r.status_code == 400 and r.json()["error"].startswith("icon.ico: ")


def test_not_mounted_with_log_in(engine):
    cfg = dataclasses.replace(engine.cfg, port=free_port(), auth=("user", "secret"))
    srv = start(dataclasses.replace(engine, cfg=cfg))
    try:
        r = httpx.post(srv.url.rstrip("/") + PATH, content=b"x", timeout=30)
        assert r.status_code in (401, 403, 404, 405), r.status_code
        assert "error" not in r.text
    finally:
        srv.close()
