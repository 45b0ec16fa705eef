"""A live app on a free loopback port for the HTTP-level tests (security, browser), and a bare client of its
queue: what a browser (or anyone else) posts to `/gradio_api/queue/join`, and the answer read back."""

from __future__ import annotations

import json
import socket
import uuid
from typing import Any

import httpx


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def new_session() -> str:
    return uuid.uuid4().hex[:11]


def queue_call(
    url: str,
    fn_index: int,
    data: list[Any],
    session: str,
    trigger_id: int | None = None,
    event_data: Any = None,
    client: httpx.Client | None = None,
) -> dict[str, Any]:
    """Run event `fn_index` with `data` as the browser would, in `session`: {"success": bool, "output": {...}}
    (output["data"] on success, output["error"] otherwise), or {"success": False, "rejected": HTTP status} when
    the queue refuses the request itself. `client`: one to reuse (its base_url the app's)."""
    body = {"data": data, "fn_index": fn_index, "session_hash": session, "event_data": event_data}
    if trigger_id is not None:
        body["trigger_id"] = trigger_id
    if client is None:
        with httpx.Client(base_url=url, timeout=120) as client:
            return queue_call(url, fn_index, data, session, trigger_id, event_data, client)
    joined = client.post("gradio_api/queue/join", json=body)
    if joined.status_code != 200:
        return {"success": False, "rejected": joined.status_code}
    event_id = joined.json()["event_id"]
    with client.stream("GET", "gradio_api/queue/data", params={"session_hash": session}) as stream:
        for line in stream.iter_lines():
            if not line.startswith("data:"):
                continue
            msg = json.loads(line[5:])
            if msg.get("event_id") == event_id and msg.get("msg") == "process_completed":
                return {"success": msg["success"], "output": msg["output"]}
            if msg.get("msg") == "unexpected_error":
                return {"success": False, "output": {"error": msg.get("message")}}
    raise AssertionError(f"no answer to event {fn_index}")


def upload(url: str, name: str, content: bytes) -> dict[str, Any]:
    """Upload a file as the browser does; the FileData an input component then sends."""
    r = httpx.post(url.rstrip("/") + "/gradio_api/upload", files={"files": (name, content)}, timeout=30)
    r.raise_for_status()
    return file_data(r.json()[0], name)


def file_data(path: str, name: str = "image.png", url: str | None = None) -> dict[str, Any]:
    return {"path": path, "url": url, "orig_name": name, "meta": {"_type": "gradio.FileData"}}


def files_in(value: Any) -> list[dict[str, Any]]:
    """Every file object (a dict with a FileData meta, or a path and url) anywhere in an answer."""
    if isinstance(value, dict):
        meta = value.get("meta")
        if (isinstance(meta, dict) and meta.get("_type") == "gradio.FileData") or ("path" in value and "url" in value):
            return [value]
        return [f for v in value.values() for f in files_in(v)]
    if isinstance(value, (list, tuple)):
        return [f for v in value for f in files_in(v)]
    return []
