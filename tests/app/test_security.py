"""The live app's boundary. Gradio's file routes refuse every file of the system, the photo folder, the index
and the run, however the path is spelled (../, %2e%2e, absolute, case variants): no file bytes come back. Every
event of the app (enumerated from the built gr.Blocks), called through the queue as any client can, with paths
outside the indexed folder, symlinks in it that lead out, and ../ spellings, returns no picture of them and
the same answer whether or not the target exists. A rejected upload is one log line, not a traceback."""

from __future__ import annotations

import dataclasses
import http.client
import io
import itertools
import json
import logging
import os
import tempfile
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import quote

import gradio as gr
import httpx
import numpy as np
import pytest
from PIL import Image

from app.main import start
from tests.app.server import file_data, files_in, free_port, new_session, queue_call, upload

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
def server(engine, tiny):
    move_to = tiny.base / "moved-aside"  # with --move-to: the move and undo events exist too
    cfg = dataclasses.replace(engine.cfg, port=free_port(), max_file_size=UPLOAD_CAP, move_to=move_to)
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


# ------------------------------------------------------------------------------------ every event, via the queue

SECRET_COLOUR = (255, 0, 255)  # the outside picture: no indexed picture is mostly this colour
PRIMED_EVERY = 3  # every third (target, spelling) is tried again in a session that holds real results


@pytest.fixture(scope="module")
def planted(tiny) -> Iterator[list[tuple[Path, Path]]]:
    """(a target that exists, its twin that does not), each outside the indexed folder or leading out of it:
    a picture beside the folder, a symlink inside it to that picture (and a dangling one), a text file."""
    out = tiny.base / "outside"
    out.mkdir(exist_ok=True)
    Image.new("RGB", (64, 48), SECRET_COLOUR).save(out / "secret.png")
    (out / "secret.txt").write_text("a secret\n")
    link, dangling = tiny.photos / "a/link-out.png", tiny.photos / "a/link-gone.png"
    link.symlink_to(out / "secret.png")
    dangling.symlink_to(out / "absent.png")
    try:
        yield [
            (out / "secret.png", out / "absent.png"),
            (link, dangling),
            (out / "secret.txt", out / "absent.txt"),
        ]
    finally:
        link.unlink()
        dangling.unlink()


def event_spellings(target: Path, twin: Path, root: Path) -> list[tuple[str, str]]:
    """Ways a client could name `target` and its missing `twin` alike (not resolved: a symlink stays one):
    absolute, relative to the indexed root, up and out of it with ../ (through one of its folders), up from
    gradio's upload folder, as a file URL."""
    uploads = Path(tempfile.gettempdir()) / "gradio"

    def spelled(p: Path) -> list[str]:
        a = os.path.abspath(p)
        rel = os.path.relpath(a, root)
        return [a, rel, f"a/../{rel}", f"{root}/a/../{rel}", f"{uploads}/{'../' * 8}{a.lstrip('/')}", "file://" + a]

    return list(zip(spelled(target), spelled(twin), strict=True))


def pairs(planted: list[tuple[Path, Path]], root: Path) -> list[tuple[Path, str, Path, str]]:
    """(target, spelled, twin, spelled) tried on every event: each spelling once, across the targets."""
    out = []
    for n, (target, twin) in enumerate(planted):
        for m, (a, b) in enumerate(event_spellings(target, twin, root)):
            if m % len(planted) == n or (target.is_symlink() and m < 2):
                out.append((target, a, twin, b))
    return out


def benign(block: Any) -> Any:
    """What the browser sends for an input nobody tampered with: a stateful one is never read from the client."""
    if getattr(block, "stateful", False) or isinstance(block, gr.Image):
        return None
    return getattr(block, "value", None)


def attacks(fn: Any, spelled: str) -> list[tuple[list[Any], dict[str, Any]]]:
    """(data, event_data) for event `fn` with `spelled` in each input a client fills in, and in the event data
    (a gallery click carries the clicked item). An event with inputs runs only with one of them tampered with."""
    event_data = {"index": 0, "value": {"image": file_data(spelled, "x.png"), "caption": spelled}, "selected": True}
    base = [benign(b) for b in fn.inputs]
    filled = [b for b in fn.inputs if not getattr(b, "stateful", False)]
    clicked = any(name == "select" for _, name in fn.targets)
    out = [(base, event_data)] if clicked or not filled else []  # else event data is never read: no plain call
    for i, b in enumerate(fn.inputs):
        if getattr(b, "stateful", False):
            continue
        data = list(base)
        if isinstance(b, gr.Image):
            data[i] = file_data(spelled, "x.png")
        elif isinstance(b, gr.JSON):  # a result list as the search answers it
            data[i] = [{"file": spelled, "score": 1.0}]
        else:
            data[i] = spelled
        out.append((data, event_data))
    return out


def told(answer: dict[str, Any], spelled: str, target: Path) -> str:
    """What an answer tells the client (its outcome, data or error), with the name asked for replaced: equal
    for a file that exists and its missing twin exactly when the app told them apart by nothing but the name."""
    said = {k: answer.get("output", {}).get(k) for k in ("data", "error")}
    text = json.dumps([answer["success"], answer.get("rejected"), said], sort_keys=True)
    for name in (spelled, os.path.abspath(target), target.name, target.stem):
        text = text.replace(json.dumps(name)[1:-1], "<NAME>")
    return text


def leaks(url: str, file: dict[str, Any]) -> bool:
    """Fetch a file an answer points to. A picture leaks when it is mostly the outside picture's colour; any
    other file (an export) when it holds the outside files' bytes or names."""
    import httpx

    r = httpx.get(url.rstrip("/") + "/gradio_api/file=" + file["path"], timeout=30)
    assert r.status_code == 200, file
    if not r.headers["content-type"].startswith("image/"):
        return any(s in r.content for s in (b"a secret", b"SQLite format 3", b"secret.", b"link-out", b"catalog."))
    px = np.asarray(Image.open(io.BytesIO(r.content)).convert("RGB")).reshape(-1, 3).astype(int)
    return bool((np.abs(px - SECRET_COLOUR).sum(axis=1) < 60).mean() > 0.5)


def test_every_event_refuses_outside_paths_alike_whether_or_not_they_exist(server, tiny, planted):
    fns = server.blocks.fns
    assert len(fns) >= 20  # search 8, duplicates 9 (with --move-to), dictionary 4
    cases = []
    for fn_index, fn in fns.items():
        for existing, spelled_e, missing, spelled_m in pairs(planted, tiny.photos):
            for shape_e, shape_m in zip(attacks(fn, spelled_e), attacks(fn, spelled_m), strict=True):
                cases.append((fn_index, (existing, spelled_e, *shape_e), (missing, spelled_m, *shape_m)))
    clients = threading.local()

    def both(case: tuple) -> tuple[dict[str, Any], dict[str, Any]]:
        fn_index, *asks = case
        trigger = fns[fn_index].targets[0][0] if fns[fn_index].targets else None
        if not hasattr(clients, "http"):
            clients.http = httpx.Client(base_url=server.url, timeout=120)
        a, b = (queue_call(server.url, fn_index, d, new_session(), trigger, ev, clients.http) for _, _, d, ev in asks)
        return a, b

    with ThreadPoolExecutor(max_workers=8) as pool:
        answers = list(pool.map(both, cases))
    fetched: dict[str, bool] = {}
    for (fn_index, (existing, spelled_e, *_), (missing, spelled_m, *_)), (a, b) in zip(cases, answers, strict=True):
        where = f"event {fn_index} ({fns[fn_index].name}) with {spelled_e!r}"
        for f in files_in(a) + files_in(b):  # the app's own pictures only (e.g. its placeholders)
            if f["path"] not in fetched:
                fetched[f["path"]] = leaks(server.url, f)
            assert not fetched[f["path"]], f"{where}: {existing} came back"
        assert told(a, spelled_e, existing) == told(b, spelled_m, missing), (
            f"{where}: told an existing file from a missing one:\n{a}\n{b}"
        )
    assert {case[0] for case in cases} == set(fns)  # every event of the app was called
    print(f"\n{len(fns)} events, {2 * len(cases)} calls through the queue: no file came back")


def test_a_session_with_real_results_still_shows_only_indexed_pictures(server, tiny, planted):
    """The same attacks in a session whose state holds a real search: any picture that comes back is one of the
    app's own, never the outside one (the positive control: the search's own pictures are seen and pass)."""
    fns = server.blocks.fns
    search = next(i for i, f in fns.items() if f.api_name == "search_page")  # the page's search: it keeps a trail
    session = new_session()
    query = upload(server.url, "query.png", (tiny.photos / "a/p00.png").read_bytes())
    done = queue_call(server.url, search, [query, 5], session, fns[search].targets[0][0])
    assert done["success"] and done["output"]["data"][0][0]["file"] == "a/p00.png"
    pictures = files_in(done)  # the results' pictures, in the search's answer or the gallery step after it
    for i in [i for i, f in fns.items() if f.name == "show_results"][: 0 if pictures else 1]:
        pictures = files_in(queue_call(server.url, i, [None], session, fns[i].targets[0][0]))
    assert len(pictures) >= 5 and not any(leaks(server.url, p) for p in pictures)
    before = sorted(p.relative_to(tiny.photos) for p in tiny.photos.rglob("*"))
    fetched: dict[str, bool] = {}
    with httpx.Client(base_url=server.url, timeout=120) as http:
        for fn_index, fn in fns.items():
            if fn.name in ("confirm_move", "undo_last"):
                continue  # they would move this session's groups for real; they read nothing else (test above)
            trigger = fn.targets[0][0] if fn.targets else None
            for existing, spelled, _, _ in pairs(planted, tiny.photos)[::PRIMED_EVERY]:
                for data, ev in attacks(fn, spelled):
                    answer = queue_call(server.url, fn_index, data, session, trigger, ev, http)
                    for p in files_in(answer):
                        if p["path"] not in fetched:
                            fetched[p["path"]] = leaks(server.url, p)
                        assert not fetched[p["path"]], f"event {fn_index} ({fn.name}) showed {existing}"
    assert sorted(p.relative_to(tiny.photos) for p in tiny.photos.rglob("*")) == before  # nothing moved


def test_a_rejected_upload_is_one_log_line_not_a_traceback(server, caplog, capfd):
    fns = server.blocks.fns
    search = next(i for i, f in fns.items() if f.api_name == "search")
    capfd.readouterr()
    with caplog.at_level(logging.INFO, logger="app"):
        bad = upload(server.url, "notes.jpg", b"plain text, not a picture")
        answer = queue_call(server.url, search, [bad, 5], new_session(), fns[search].targets[0][0])
    assert not answer["success"] and "notes.jpg: not an image" in answer["output"]["error"]
    logged = [r.getMessage() for r in caplog.records if r.name == "app"]
    assert len(logged) == 1 and "notes.jpg: not an image" in logged[0] and "\n" not in logged[0]
    assert "Traceback" not in capfd.readouterr().err
