"""A plain HTTP search endpoint beside Gradio's event API: one request per search.

    curl --data-binary @query.jpg 'http://127.0.0.1:7860/api/search?k=10&name=query.jpg'

The body is the query image's bytes; `k` (1..MAX_K, default SearchConfig.k) and `name` (what error messages call the
file, default "query") are query parameters. The answer is the JSON of the `search` event
([{"file", "score", "band", "cosine"}]); a bad request gets {"error": "NAME: reason"} with status 400 (413 for a body
over the app's max_file_size). Gradio's API (`/gradio_api/call/search`, what gradio_client speaks) takes three
requests for the same search (upload, join the queue, read its event stream) and about 25 ms of server CPU besides
the search itself; this one costs the search and one HTTP exchange (bench/search/app_load.py).

The body goes through the same hardened loader as an upload (photo formats only, size and pixel limits), from a
private temporary file; nothing a client sends is used as a path. With `--auth` the endpoint is not mounted (Gradio's
log-in covers its own routes only): the Gradio API remains.
"""

from __future__ import annotations

import logging
import re
import tempfile
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from app.engine import Engine
from app.search_tab import search_json
from plumbing.errors import InputError
from plumbing.filenames import printable
from retrieval.searching.query import SearchConfig

logger = logging.getLogger(__name__)

PATH = "/api/search"
_NAME = re.compile(r"[^A-Za-z0-9._-]+")


def mount(app: FastAPI, engine: Engine) -> bool:
    """Add POST PATH to the app's routes; False (nothing mounted) when the app has log-in."""
    if engine.cfg.auth is not None:
        logger.info("the %s endpoint is off: the app has log-in (the Gradio API remains)", PATH)
        return False
    limit = engine.cfg.max_file_size

    async def search(request: Request) -> JSONResponse:
        name = _file_name(request.query_params.get("name", "query"))
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > limit:
                return _refused(f"{name}: larger than the app's limit of {limit:,} bytes", 413)
        try:
            k = request.query_params.get("k", str(SearchConfig.k))
            hits = await run_in_threadpool(_search, engine, bytes(body), name, k)
        except InputError as e:
            return _refused(str(e), 400)
        return JSONResponse(hits)

    app.add_api_route(PATH, search, methods=["POST"], include_in_schema=False)
    return True


def _search(engine: Engine, data: bytes, name: str, k: str) -> list[dict[str, Any]]:
    if not data:
        raise InputError(f"{name}: empty request body (send the query image's bytes)")
    try:
        k_value = float(k)
    except ValueError:
        raise InputError(f"k: a number of results, got {printable(k)[:40]}") from None
    with tempfile.TemporaryDirectory(prefix="retrieval-query-") as tmp:
        path = Path(tmp) / name
        path.write_bytes(data)
        return search_json(engine, str(path), k_value)


def _file_name(raw: str) -> str:
    """A safe file name for the query (what messages call it): letters, digits, dot, dash and underscore."""
    return _NAME.sub("_", raw)[-80:].lstrip(".") or "query"


def _refused(message: str, status: int) -> JSONResponse:
    logger.warning("%s refused: %s", PATH, message)
    return JSONResponse({"error": message}, status_code=status)
