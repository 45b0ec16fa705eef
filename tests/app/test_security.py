"""Gradio's file routes on the live app refuse every file of the system, the photo folder, the index and the
run, however the path is spelled (../, %2e%2e, absolute, case variants): no file bytes come back."""

from __future__ import annotations

import dataclasses
import http.client
import itertools
from pathlib import Path
from urllib.parse import quote

import pytest

from app.main import start
from tests.app.server import free_port

UPLOAD_CAP = 200_000  # bytes
ROUTES = [
    "/file=",
    "/gradio_api/file=",
    "/gradio_api/file/",
    "/file/",
    "/gradio_api/proxy=",
    "/static/",
    "/assets/",
    "/svelte/",
    "/FILE=",
    "/Gradio_Api/File=",
    "/gradio_api/FILE=",
]


@pytest.fixture(scope="module")
def server(engine):
    cfg = dataclasses.replace(engine.cfg, port=free_port(), max_file_size=UPLOAD_CAP)
    srv = start(dataclasses.replace(engine, cfg=cfg))
    yield srv
    srv.close()


def spellings(target: Path) -> list[str]:
    """Ways to name `target` in a URL path: absolute, relative to cwd by ../, dot-dot encoded, case-changed."""
    a = str(target.resolve())
    up = "../" * 12 + a.lstrip("/")
    return [
        a,
        a.lstrip("/"),
        up,
        up.replace("..", "%2e%2e"),
        up.replace("..", "%2E%2E").replace("/", "%2f"),
        quote(a, safe=""),
        "/" + a,  # double slash
        a.upper(),
        "./" + a,
        "C:" + a,
        "/tmp/gradio/" + up,
        "file://" + a,
    ]


def get(url: str, path: str) -> tuple[int, bytes]:
    host, port = url.removeprefix("http://").rstrip("/").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    try:
        conn.request("GET", path)  # sent as written: no client-side normalisation of ../
        r = conn.getresponse()
        return r.status, r.read()
    finally:
        conn.close()


def targets(tiny) -> list[Path]:
    gen = next(p for p in tiny.index.iterdir() if p.name.startswith("gen-"))
    return [
        Path("/etc/passwd"),
        tiny.photos / "a/p00.png",
        tiny.photos / "b/copy-of-p03.png",
        gen / "manifest.json",
        gen / "catalog.sqlite",
        gen / "vectors.npy",
        tiny.index / "CURRENT",
        tiny.run / "checkpoint.pt",
        tiny.run / "encoder.safetensors",
        tiny.run / "encoder.json",
        tiny.run / "metrics.jsonl",
        Path("pyproject.toml").resolve(),  # the working directory's own files
    ]


def test_file_routes_return_no_file_bytes(server, tiny):
    checked = 0
    for target in targets(tiny):
        content = target.read_bytes()
        probe = content[:256] if len(content) > 16 else content
        assert probe, target
        for route, spelled in itertools.product(ROUTES, spellings(target)):
            status, body = get(server.url, route + spelled)
            assert probe not in body, f"{route}{spelled} returned bytes of {target} (HTTP {status})"
            assert status in (400, 403, 404), f"{route}{spelled}: HTTP {status} with {len(body)} bytes"
            checked += 1
    assert checked == len(targets(tiny)) * len(ROUTES) * len(spellings(Path("/etc/passwd")))


def test_the_route_does_serve_its_own_cache(server, tiny):
    """The positive control: an upload lands in gradio's cache and the same route serves it back, so the
    refusals above are the path checks at work, not a route that serves nothing."""
    import httpx

    content = (tiny.photos / "a/p00.png").read_bytes()
    r = httpx.post(server.url + "gradio_api/upload", files={"files": ("query.png", content)}, timeout=30)
    cached = r.json()[0]
    assert Path(cached).name == "query.png" and not Path(cached).is_relative_to(tiny.photos)
    status, body = get(server.url, "/gradio_api/file=" + cached)
    assert status == 200 and body == content
    status, _ = get(server.url, "/gradio_api/file=" + cached + "/../../../../etc/passwd")
    assert status in (400, 403, 404)


def test_uploads_are_swept_from_the_cache(server, engine):
    """Uploads are in the set the app's periodic sweep (delete_cache) deletes once they are cache_age_s old."""
    import httpx
    from gradio.route_utils import delete_files_created_by_app

    assert server.blocks.delete_cache == (engine.cfg.cache_sweep_s, engine.cfg.cache_age_s)
    r = httpx.post(server.url + "gradio_api/upload", files={"files": ("sweep.png", b"\0" * 100)}, timeout=30)
    cached = Path(r.json()[0])
    assert cached.exists()
    delete_files_created_by_app(server.blocks, age=3600)
    assert cached.exists()  # younger than the age: kept
    delete_files_created_by_app(server.blocks, age=0)
    assert not cached.exists()


def test_uploads_over_the_cap_are_refused(server):
    import httpx

    r = httpx.post(server.url + "gradio_api/upload", files={"files": ("big.png", b"\0" * (UPLOAD_CAP + 1))}, timeout=30)
    assert r.status_code == 413
    ok = httpx.post(server.url + "gradio_api/upload", files={"files": ("small.png", b"\0" * 1000)}, timeout=30)
    assert ok.status_code == 200


def test_the_app_itself_still_answers(server):
    assert server.blocks.share is False and server.url.startswith("http://127.0.0.1:")
    status, body = get(server.url, "/")
    assert status == 200 and b"<html" in body[:500].lower()
