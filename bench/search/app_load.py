"""Load on the web app: 50 concurrent API searches against the running app, with a load generator lean enough
that it measures the server.

1. Starts `retrieval app --index INDEX --port P` as its own process (or uses `--url` of one already running;
   give its `--pid` for the server's CPU time).
2. Sequential, interleaved with the peer query by query (which goes first alternates): each query once
   through the lean client (`/search`, k = 10), and the peer: in this process, the library call the `search`
   handler makes (decode the upload with plumbing.images.load_image, embed, search: `Engine.search_image`),
   same file.
3. Concurrent: `--clients` threads (default 50), each with its own lean client, connected beforehand, all
   released at once by a barrier, each sending one search; latency is measured per call from the barrier.
4. The same through the app's plain HTTP endpoint (`POST /api/search`, app/rest.py: the picture's bytes in, the
   JSON out, one request per search), one at a time and all at once, each client on its own keep-alive
   connection (`RestClient`).
5. The same with `gradio_client` (one `Client` per thread, as before), for comparison (`--no-gradio-client`
   leaves it out).

The lean client (`LeanClient`) speaks Gradio's HTTP API directly over one keep-alive HTTP/1.1 connection:
POST /gradio_api/upload (the picture), POST /gradio_api/call/search (joins the queue, returns an event id),
GET /gradio_api/call/search/EVENT (the event stream, read to its `complete` event). `gradio_client` instead
builds three HTTP clients with a fresh SSL context for each call, about 70 ms of client CPU per search on
loopback, on the same cores as the server: its latencies mostly measured the load generator.

Recorded apart: the client's CPU per search (this process, `time.process_time`, over the concurrent phase),
the server's own CPU per search (utime + stime of the app process from /proc/PID/stat over each phase), and the
library call's CPU per search in-process (what the handler's work costs without HTTP and the queue).

Goals (issue 28): 50 concurrent lean-client searches p95 <= 1.0 s with no errors; server CPU <= 25 ms per search
(judged on each API; searches waiting at once share one forward pass, app/batching.py).
Writes bench/results/app_load.{md,json}.

    python -m bench.search.app_load [--index indexes/samples] [--clients 50] [--url URL --pid PID]
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.parse
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from bench.kit.machine import machine_info
from bench.kit.results import publish

K = 10
TICK = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pct(xs: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(xs) * 1000.0, q)) if xs else float("nan")


def start_app(index: str) -> tuple[subprocess.Popen, str]:
    port = free_port()
    cmd = [sys.executable, "-m", "cli", "app", "--index", index, "--port", str(port), "--device", "cpu"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    line = proc.stdout.readline() if proc.stdout else ""
    if f":{port}/" not in line:
        proc.kill()
        raise SystemExit(f"the app did not start: {line!r}")
    return proc, f"http://127.0.0.1:{port}/"


def cpu_seconds(pid: int | None) -> float:
    """utime + stime of process `pid` (all its threads) from /proc; NaN without one."""
    if pid is None:
        return float("nan")
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK  # fields 14 and 15 of stat(5), after "pid (comm)"


def idle_rate(pid: int | None, seconds: float = 5.0) -> float:
    """CPU seconds per second the server spends with nothing to do (Gradio's queue loop polls while free)."""
    s0 = cpu_seconds(pid)
    time.sleep(seconds)
    return (cpu_seconds(pid) - s0) / seconds


def queries(index: str, n: int) -> list[Path]:
    from retrieval.searching.searcher import SearchIndex

    idx = SearchIndex.open(Path(index))
    step = max(1, len(idx.records) // n)
    return [idx.root / r.path for r in idx.records[::step][:n]]


class _Connection(http.client.HTTPConnection):
    """An HTTP/1.1 connection that counts how often it had to (re)connect."""

    opened = 0

    def connect(self) -> None:
        super().connect()
        self.opened += 1


class LeanClient:
    """Gradio's HTTP API over one reused keep-alive connection: upload, join the queue, read the event stream."""

    def __init__(self, url: str, timeout: float = 300.0) -> None:
        u = urllib.parse.urlsplit(url)
        self.prefix = u.path.rstrip("/") + "/gradio_api"
        self.conn = _Connection(u.hostname or "127.0.0.1", u.port or 80, timeout=timeout)

    def connect(self) -> None:
        self.conn.connect()

    @property
    def connections(self) -> int:
        return self.conn.opened

    def _request(self, method: str, path: str, body: bytes | None = None, ctype: str | None = None) -> bytes:
        headers = {"Content-Type": ctype} if ctype else {}
        self.conn.request(method, self.prefix + path, body=body, headers=headers)
        r = self.conn.getresponse()
        data = r.read()  # read to the end, so the connection can carry the next request
        if r.status != 200:
            raise RuntimeError(f"{method} {path}: HTTP {r.status} {data[:120]!r}")
        return data

    def search(self, path: Path, k: int = K) -> list[dict]:
        boundary = uuid.uuid4().hex
        body = (
            (
                f'--{boundary}\r\nContent-Disposition: form-data; name="files"; filename="{path.name}"\r\n'
                "Content-Type: application/octet-stream\r\n\r\n"
            ).encode()
            + path.read_bytes()
            + f"\r\n--{boundary}--\r\n".encode()
        )
        (server_path,) = json.loads(self._request("POST", "/upload", body, f"multipart/form-data; boundary={boundary}"))
        payload = {"data": [{"path": server_path, "meta": {"_type": "gradio.FileData"}}, k]}
        event = json.loads(self._request("POST", "/call/search", json.dumps(payload).encode(), "application/json"))
        stream = self._request("GET", f"/call/search/{event['event_id']}").decode()
        return _complete(stream)

    def close(self) -> None:
        self.conn.close()


class RestClient(LeanClient):
    """The app's plain endpoint over one reused keep-alive connection: POST /api/search with the picture's bytes."""

    def __init__(self, url: str, timeout: float = 300.0) -> None:
        super().__init__(url, timeout)
        self.prefix = urllib.parse.urlsplit(url).path.rstrip("/") + "/api"

    def search(self, path: Path, k: int = K) -> list[dict]:
        query = urllib.parse.urlencode({"k": k, "name": path.name})
        return json.loads(self._request("POST", f"/search?{query}", path.read_bytes(), "application/octet-stream"))


def one_at_a_time(client: LeanClient, files: list[Path], pid: int | None) -> dict[str, object]:
    """Each query once through `client`, one after another: latency and the server's CPU per search."""
    check(client.search(files[0]))  # warm-up
    lat, errors, s0 = [], [], cpu_seconds(pid)
    for f in files:
        t0 = time.perf_counter()
        try:
            check(client.search(f))
            lat.append(time.perf_counter() - t0)
        except Exception as e:  # every failure counts, whatever its type
            errors.append(f"{type(e).__name__}: {e}")
    n = len(files)
    cpu = (cpu_seconds(pid) - s0) * 1000 / n
    return {
        "n": len(lat),
        "errors": errors,
        "p50_ms": pct(lat, 50),
        "p95_ms": pct(lat, 95),
        "server_cpu_ms_per_search": cpu,
    }


def _complete(stream: str) -> list[dict]:
    """The first output of the `complete` event of a Gradio event stream; RuntimeError for an `error` event."""
    name = None
    for line in stream.splitlines():
        if line.startswith("event:"):
            name = line[6:].strip()
        elif line.startswith("data:") and name in ("complete", "error"):
            data = json.loads(line[5:])
            if name == "error":
                raise RuntimeError(f"the app answered an error: {str(data)[:120]}")
            return data[0]
    raise RuntimeError(f"no complete event in {stream[:120]!r}")


def check(out: object) -> None:
    if not (isinstance(out, list) and out and {"file", "score"} <= set(out[0])):
        raise RuntimeError(f"unexpected answer {str(out)[:80]}")


def gradio_search(client: object, path: Path) -> None:
    from gradio_client import handle_file

    check(client.predict(handle_file(str(path)), K, api_name="/search"))  # type: ignore[attr-defined]


def concurrent(
    clients: list, files: list[Path], search: Callable[[object, Path], None], pid: int | None
) -> dict[str, object]:
    """All clients released at once, one search each: latencies from the barrier, errors, wall time, and the
    CPU seconds the client (this process) and the server spent meanwhile."""
    barrier = threading.Barrier(len(files) + 1)
    errors: list[str] = []

    def run(i: int) -> float | None:
        barrier.wait()
        t0 = time.perf_counter()
        try:
            search(clients[i], files[i])
        except Exception as e:  # every failure counts, whatever its type
            errors.append(f"{type(e).__name__}: {e}")
            return None
        return time.perf_counter() - t0

    with ThreadPoolExecutor(max_workers=len(files)) as pool:
        futures = [pool.submit(run, i) for i in range(len(files))]
        c0, s0 = time.process_time(), cpu_seconds(pid)
        barrier.wait()
        t0 = time.perf_counter()
        lat = [x for f in futures if (x := f.result()) is not None]
        wall = time.perf_counter() - t0
        c1, s1 = time.process_time(), cpu_seconds(pid)
    n = len(files)
    return {
        "n": len(lat),
        "errors": errors,
        "p50_ms": pct(lat, 50),
        "p95_ms": pct(lat, 95),
        "max_ms": pct(lat, 100),
        "wall_s": wall,
        "searches_per_s": len(lat) / wall if wall else float("nan"),
        "client_cpu_ms_per_search": (c1 - c0) * 1000 / n,
        "server_cpu_ms_per_search": (s1 - s0) * 1000 / n,
    }


def library_search(engine: object, path: Path) -> tuple[float, float]:
    t0, c0 = time.perf_counter(), time.process_time()
    engine.search_image(engine.decode_upload(path), K)  # type: ignore[attr-defined]
    return time.perf_counter() - t0, time.process_time() - c0


def sequential(url: str, engine: object, files: list[Path], pid: int | None) -> tuple[dict, dict]:
    """App (lean client) and library latency per query, alternating which goes first; server CPU per app search
    (the library's turns run in this process, not the server's)."""
    client = LeanClient(url)
    check(client.search(files[0]))  # warm-up, both sides
    library_search(engine, files[0])
    app, errors, lib, lib_cpu, server_cpu = [], [], [], [], 0.0
    for i, f in enumerate(files):
        for side in ("app", "lib") if i % 2 == 0 else ("lib", "app"):
            if side == "lib":
                dt, cpu = library_search(engine, f)
                lib.append(dt)
                lib_cpu.append(cpu)
                continue
            s0, t0 = cpu_seconds(pid), time.perf_counter()
            try:
                check(client.search(f))
                app.append(time.perf_counter() - t0)
            except Exception as e:  # every failure counts, whatever its type
                errors.append(f"{type(e).__name__}: {e}")
            server_cpu += cpu_seconds(pid) - s0
    seq = {
        "n": len(app),
        "errors": errors,
        "p50_ms": pct(app, 50),
        "p95_ms": pct(app, 95),
        "server_cpu_ms_per_search": server_cpu * 1000 / len(files),
        "connections": client.connections,
    }
    client.close()
    library = {"n": len(lib), "p50_ms": pct(lib, 50), "p95_ms": pct(lib, 95), "cpu_ms_per_search": pct(lib_cpu, 50)}
    return seq, library


def lean_clients(url: str, n: int, kind: type[LeanClient] = LeanClient) -> list[LeanClient]:
    clients = [kind(url) for _ in range(n)]
    for c in clients:
        c.connect()
    return clients


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--index", default="indexes/samples")
    ap.add_argument("--clients", type=int, default=50)
    ap.add_argument("--url", default=None, help="an app already running (default: start one)")
    ap.add_argument("--pid", type=int, default=None, help="the process id of the app at --url (its CPU time)")
    ap.add_argument("--no-gradio-client", action="store_true", help="leave out the gradio_client comparison")
    a = ap.parse_args()
    from app.config import AppConfig
    from app.engine import Engine

    files = queries(a.index, a.clients)
    import torch

    cfg = AppConfig(index=Path(a.index), device="cpu")
    torch.set_num_threads(cfg.torch_threads)  # as `retrieval app` runs its handlers
    info = machine_info()
    engine = Engine.load(cfg)
    proc, url = (None, a.url) if a.url else start_app(a.index)
    pid = proc.pid if proc is not None else a.pid
    try:
        LeanClient(url).search(files[0])  # the app's first search loads what it loads lazily
        idle = idle_rate(pid)
        seq, lib = sequential(url, engine, files, pid)
        clients = lean_clients(url, len(files))
        con = concurrent(clients, files, lambda c, f: check(c.search(f)), pid)
        con["connections"] = sum(c.connections for c in clients)
        for c in clients:
            c.close()
        rest_seq = one_at_a_time(RestClient(url), files, pid)
        clients = lean_clients(url, len(files), RestClient)
        rest = concurrent(clients, files, lambda c, f: check(c.search(f)), pid)
        for c in clients:
            c.close()
        grc = None
        if not a.no_gradio_client:
            from gradio_client import Client

            grc = concurrent([Client(url, verbose=False) for _ in files], files, gradio_search, pid)
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(timeout=60)
    res = {
        "machine": info,
        "index": a.index,
        "clients": a.clients,
        "sequential": seq,
        "concurrent": con,
        "concurrent_gradio_client": grc,
        "rest_sequential": rest_seq,
        "rest_concurrent": rest,
        "library": lib,
        "server_idle_cpu_ms_per_s": idle * 1000,
        "load_avg_at_end": os.getloadavg(),
        "nice": os.nice(0),  # below 0: the bench (and the app it started) ran ahead of the machine's other jobs
        "goals": {"p95_ms": 1000.0, "errors": 0, "server_cpu_ms_per_search": 25.0},
    }
    for phase in (con, rest, grc):
        if phase is not None:  # the same phase without the idle baseline: the searches' own cost
            phase["server_cpu_ms_per_search_less_idle"] = phase["server_cpu_ms_per_search"] - idle * 1000 * phase[
                "wall_s"
            ] / len(files)
    res["goals_met"] = {
        "p95": con["p95_ms"] <= 1000.0,
        "errors": not (seq["errors"] or con["errors"]),
        "server_cpu": con["server_cpu_ms_per_search"] <= 25.0,
        "rest_p95": rest["p95_ms"] <= 1000.0,
        "rest_errors": not (rest_seq["errors"] or rest["errors"]),
        "rest_server_cpu": rest["server_cpu_ms_per_search"] <= 25.0,
    }
    publish("app_load", res, report(res), indent=2, newline=True)


def report(r: dict) -> str:
    m, s, c, g, lib = r["machine"], r["sequential"], r["concurrent"], r["concurrent_gradio_client"], r["library"]
    load = ", ".join(f"{x:.1f}" for x in m["load_avg_at_start"])
    nice = f"; bench and app at nice {r['nice']}, ahead of the other jobs" if r.get("nice", 0) < 0 else ""
    n = r["clients"]
    rows = [
        f"| library call in-process (decode, embed, search), one at a time, interleaved with the next row | {lib['n']}"
        f" | 0 | {lib['p50_ms']:.0f} | {lib['p95_ms']:.0f} | | {lib['cpu_ms_per_search']:.0f} (in-process) | |",
        f"| app, lean client, one at a time | {s['n']} | {len(s['errors'])} | {s['p50_ms']:.0f} | {s['p95_ms']:.0f} |"
        f" | {s['server_cpu_ms_per_search']:.0f} | |",
        f"| app, lean client, {n} at once | {c['n']} | {len(c['errors'])} | {c['p50_ms']:.0f} | {c['p95_ms']:.0f} |"
        f" {c['max_ms']:.0f} | {c['server_cpu_ms_per_search']:.0f} | {c['client_cpu_ms_per_search']:.1f} |",
    ]
    rs, rc = r["rest_sequential"], r["rest_concurrent"]
    rows += [
        f"| app, `POST /api/search`, one at a time | {rs['n']} | {len(rs['errors'])} | {rs['p50_ms']:.0f} |"
        f" {rs['p95_ms']:.0f} | | {rs['server_cpu_ms_per_search']:.0f} | |",
        f"| app, `POST /api/search`, {n} at once | {rc['n']} | {len(rc['errors'])} | {rc['p50_ms']:.0f} |"
        f" {rc['p95_ms']:.0f} | {rc['max_ms']:.0f} | {rc['server_cpu_ms_per_search']:.0f} |"
        f" {rc['client_cpu_ms_per_search']:.1f} |",
    ]
    if g is not None:
        rows.append(
            f"| app, gradio_client, {n} at once (for comparison) | {g['n']} | {len(g['errors'])} | {g['p50_ms']:.0f} |"
            f" {g['p95_ms']:.0f} | {g['max_ms']:.0f} | {g['server_cpu_ms_per_search']:.0f} |"
            f" {g['client_cpu_ms_per_search']:.1f} |"
        )
    met = r["goals_met"]
    goals = (
        f"Gradio's API: p95 of {n} at once <= 1000 ms: {'met' if met['p95'] else 'not met'} ({c['p95_ms']:.0f} ms);"
        f" errors: {'none' if met['errors'] else 'some'}; server CPU <= 25 ms per search: "
        f"{'met' if met['server_cpu'] else 'not met'} ({c['server_cpu_ms_per_search']:.0f} ms). `POST /api/search`:"
        f" p95 {'met' if met['rest_p95'] else 'not met'} ({rc['p95_ms']:.0f} ms); errors:"
        f" {'none' if met['rest_errors'] else 'some'}; server CPU {'met' if met['rest_server_cpu'] else 'not met'}"
        f" ({rc['server_cpu_ms_per_search']:.0f} ms)."
    )
    idle_ms = r["server_idle_cpu_ms_per_s"] * s["p50_ms"] / 1000  # idle polling while one search waits
    rest = s["server_cpu_ms_per_search"] - lib["cpu_ms_per_search"] - idle_ms
    split = (
        f"One at a time, the server's {s['server_cpu_ms_per_search']:.0f} ms per search are about"
        f" {lib['cpu_ms_per_search']:.0f} ms of library work (decode, embed: two forwards with the flip average,"
        f" search), {idle_ms:.0f} ms of idle polling while it waits, and {rest:.0f} ms of Gradio (upload, queue,"
        " event stream, JSON).\nAn API search makes no gallery thumbnails: the page's own search event builds them,"
        " `/gradio_api/call/search` answers the JSON alone."
    )
    errors = s["errors"] + c["errors"] + rs["errors"] + rc["errors"]
    gradio_errors = f" gradio_client: {'; '.join(g['errors'][:3]) or 'none'}." if g else ""
    gradio_line = (
        f" gradio_client, {n} at once: {g['wall_s']:.1f} s ({g['searches_per_s']:.1f} searches/s), with"
        f" {g['client_cpu_ms_per_search']:.0f} ms of client CPU per search on the same cores."
        if g
        else ""
    )
    return f"""# app_load: {n} concurrent API searches against `retrieval app`

Command: `python -m bench.search.app_load --index {r["index"]} --clients {n}`

Machine: {m["cpus"]} CPUs ({m.get("cpu_model") or m["processor"]}), torch {m["torch"]} ({m["torch_threads"]} threads), \
Python {m["python"]}, load average at start {load} (shared machine{nice}). The app ran as its own process
(`retrieval app`; searches run up to 16 at once and the query images waiting at once are embedded in one forward
pass by one worker, app/batching.py; 1 torch thread per handler on 2 cores; the library call below ran with the
same thread count); each search uploads a JPEG or PNG of the
index and asks for k = {K} (`/search`, JSON back). The lean client speaks Gradio's HTTP API over one
keep-alive connection per client ({c["connections"]} connections for {n} clients): upload, join the queue
(`/gradio_api/call/search`), read the event stream. Server CPU: the app process's utime + stime (/proc) over
the phase, per search; client CPU: this process over the phase, per search. Idle, the server spends
{r["server_idle_cpu_ms_per_s"]:.0f} ms of CPU per second (Gradio's queue loop polls while free); less that
baseline, {n} lean searches at once cost the server {c["server_cpu_ms_per_search_less_idle"]:.0f} ms each.

| run | searches | errors | p50 ms | p95 ms | max ms | server CPU ms / search | client CPU ms / search |
|---|---|---|---|---|---|---|---|
{chr(10).join(rows)}

Lean client, {n} at once: {c["wall_s"]:.1f} s ({c["searches_per_s"]:.1f} searches/s); `POST /api/search`, {n} at once:\
 {rc["wall_s"]:.1f} s ({rc["searches_per_s"]:.1f} searches/s).{gradio_line}
{split}
Goals (issue 28): {goals}
Errors, lean client: {"none" if not errors else "; ".join(errors[:5])}.{gradio_errors}
"""


if __name__ == "__main__":
    main()
