"""Load on the web app: 50 concurrent `gradio_client` searches against the running app.

1. Starts `retrieval app --index INDEX --port P` as its own process (or uses `--url` of one already running).
2. Sequential, interleaved with the peer query by query (which goes first alternates): each query once
   through `gradio_client` (`/search`, k = 10), and the peer: in this process, the library call the
   `search` handler makes (decode the upload with plumbing.images.load_image, embed, search:
   `Engine.search_image`), same file.
3. Concurrent: `--clients` threads (default 50), each with its own `gradio_client.Client`, all released at
   once by a barrier, each sending one search; latency is measured per call from the barrier.

Reports errors (goal: none), p50/p95/max latency and the ratios app-sequential / library and
app-concurrent p50 / app-sequential p50. Writes bench/results/app_load.{md,json}.

    python -m bench.search.app_load [--index indexes/samples] [--clients 50] [--url http://127.0.0.1:7860/]
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from bench.kit.machine import machine_info

HERE = Path(__file__).resolve().parents[1]


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


def queries(index: str, n: int) -> list[Path]:
    from retrieval.searching.searcher import SearchIndex

    idx = SearchIndex.open(Path(index))
    step = max(1, len(idx.records) // n)
    return [idx.root / r.path for r in idx.records[::step][:n]]


def one_search(client: object, path: Path) -> float:
    from gradio_client import handle_file

    t0 = time.perf_counter()
    out = client.predict(handle_file(str(path)), 10, api_name="/search")  # type: ignore[attr-defined]
    dt = time.perf_counter() - t0
    if not (isinstance(out, list) and out and {"file", "score"} <= set(out[0])):
        raise RuntimeError(f"unexpected answer {str(out)[:80]}")
    return dt


def concurrent(url: str, files: list[Path]) -> tuple[list[float], list[str], float]:
    from gradio_client import Client

    clients = [Client(url, verbose=False) for _ in files]
    barrier = threading.Barrier(len(files))
    errors: list[str] = []

    def run(i: int) -> float | None:
        barrier.wait()
        try:
            return one_search(clients[i], files[i])
        except Exception as e:  # every failure counts, whatever its type
            errors.append(f"{type(e).__name__}: {e}")
            return None

    t0 = time.perf_counter()
    with ThreadPoolExecutor(max_workers=len(files)) as pool:
        lat = [x for x in pool.map(run, range(len(files))) if x is not None]
    return lat, errors, time.perf_counter() - t0


def library_search(engine: object, path: Path) -> float:
    t0 = time.perf_counter()
    engine.search_image(engine.decode_upload(path), 10)  # type: ignore[attr-defined]
    return time.perf_counter() - t0


def sequential(url: str, engine: object, files: list[Path]) -> tuple[list[float], list[str], list[float]]:
    """App and library latency per query, alternating which goes first."""
    from gradio_client import Client

    client = Client(url, verbose=False)
    one_search(client, files[0])  # warm-up, both sides
    library_search(engine, files[0])
    app, errors, lib = [], [], []
    for i, f in enumerate(files):
        for side in ("app", "lib") if i % 2 == 0 else ("lib", "app"):
            if side == "lib":
                lib.append(library_search(engine, f))
                continue
            try:
                app.append(one_search(client, f))
            except Exception as e:  # every failure counts, whatever its type
                errors.append(f"{type(e).__name__}: {e}")
    return app, errors, lib


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--index", default="indexes/samples")
    ap.add_argument("--clients", type=int, default=50)
    ap.add_argument("--url", default=None, help="an app already running (default: start one)")
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
    try:
        seq, seq_errors, lib = sequential(url, engine, files)
        con, con_errors, wall = concurrent(url, files)
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(timeout=60)
    res = {
        "machine": info,
        "index": a.index,
        "clients": a.clients,
        "sequential": {"n": len(seq), "errors": seq_errors, "p50_ms": pct(seq, 50), "p95_ms": pct(seq, 95)},
        "concurrent": {
            "n": len(con),
            "errors": con_errors,
            "p50_ms": pct(con, 50),
            "p95_ms": pct(con, 95),
            "max_ms": pct(con, 100),
            "wall_s": wall,
            "searches_per_s": len(con) / wall if wall else float("nan"),
        },
        "library": {"n": len(lib), "p50_ms": pct(lib, 50), "p95_ms": pct(lib, 95)},
        "load_avg_at_end": os.getloadavg(),
    }
    res["ratio_sequential_over_library_p50"] = res["sequential"]["p50_ms"] / res["library"]["p50_ms"]
    res["ratio_concurrent_over_sequential_p50"] = res["concurrent"]["p50_ms"] / res["sequential"]["p50_ms"]
    (HERE / "results").mkdir(exist_ok=True)
    (HERE / "results/app_load.json").write_text(json.dumps(res, indent=2) + "\n")
    (HERE / "results/app_load.md").write_text(report(res))
    print(report(res))


def report(r: dict) -> str:
    m, s, c, lib = r["machine"], r["sequential"], r["concurrent"], r["library"]
    load = ", ".join(f"{x:.1f}" for x in m["load_avg_at_start"])
    return f"""# app_load: {r["clients"]} concurrent gradio_client searches against `retrieval app`

Command: `python -m bench.search.app_load --index {r["index"]} --clients {r["clients"]}`

Machine: {m["cpus"]} CPUs ({m["processor"]}), torch {m["torch"]} ({m["torch_threads"]} threads), Python \
{m["python"]}, load average at start {load} (shared machine). The app ran as its own process
(`retrieval app`, concurrency limit 2 on the heavy handlers, the rest queued, 1 torch thread per handler on
2 cores; the library call below ran with the same thread count); each search uploads a JPEG or
PNG of the index and asks for k = 10 (`/search`, JSON back).

| run | searches | errors | p50 ms | p95 ms | max ms |
|---|---|---|---|---|---|
| library call in-process (decode, embed, search), one at a time, interleaved with the next row | \
{lib["n"]} | 0 | {lib["p50_ms"]:.0f} | {lib["p95_ms"]:.0f} | |
| app via gradio_client, one at a time | {s["n"]} | {len(s["errors"])} | {s["p50_ms"]:.0f} | {s["p95_ms"]:.0f} | |
| app via gradio_client, {r["clients"]} at once | {c["n"]} | {len(c["errors"])} | {c["p50_ms"]:.0f} | \
{c["p95_ms"]:.0f} | {c["max_ms"]:.0f} |

{r["clients"]} concurrent searches finished in {c["wall_s"]:.1f} s ({c["searches_per_s"]:.1f} searches/s).
App one at a time / library: {r["ratio_sequential_over_library_p50"]:.2f}x at p50 (upload, queue and
HTTP round trips); {r["clients"]} at once / one at a time: {r["ratio_concurrent_over_sequential_p50"]:.1f}x
at p50 (the queue serialises the encoder: two run at once, the rest wait their turn).
Errors: {"none" if not (s["errors"] or c["errors"]) else "; ".join((s["errors"] + c["errors"])[:5])}.
"""


if __name__ == "__main__":
    main()
