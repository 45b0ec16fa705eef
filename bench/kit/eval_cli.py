"""The `retrieval` command as the benchmarks run it: a subprocess of this checkout (`run`), and the quality
figures straight from `retrieval eval ... --format json` (`eval_dedup`, `eval_knn`), so that a published
figure is the one a user gets from the command shown beside it.

Each eval function returns the parsed JSON document (README.md, "retrieval eval") with one key added,
`command`: the command line a user runs for the same figures (`retrieval eval ...`, the paths as given).
`method(doc, name)` picks one entry of its `methods` ("index", "random-init", "phash").
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
# the subprocess imports `retrieval` from this checkout, whatever the working folder or the installed copy
_ENV = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)}


class RetrievalCommandError(RuntimeError):
    """`retrieval ARGS` exited non-zero; the message holds the end of its stderr."""


def run(*args: str) -> str:
    """`python -m cli ARGS` (this checkout): its stdout; the time it took goes to stderr."""
    t = time.time()
    out = subprocess.run([sys.executable, "-m", "cli", *args], capture_output=True, text=True, env=_ENV)
    print(f"retrieval {' '.join(args)}: {time.time() - t:.0f} s", file=sys.stderr, flush=True)
    if out.returncode != 0:
        raise RetrievalCommandError(f"retrieval {' '.join(args)}: exit {out.returncode}\n{out.stderr[-3000:]}")
    return out.stdout


def command(args: list[str]) -> str:
    """The command line a user types for `run(*args)`."""
    return shlex.join(["retrieval", *args])


def _eval(args: list[str], mode: str) -> dict[str, Any]:
    doc = json.loads(run(*args))
    if doc.get("mode") != mode or doc.get("format_version") != 1:
        raise RetrievalCommandError(f"{command(args)}: unexpected JSON (mode {doc.get('mode')!r})")
    return {**doc, "command": command(args)}


def eval_dedup(
    index: Path, truth: Path, verify: bool = True, compare: bool = False, threshold: str | None = None
) -> dict[str, Any]:
    """`retrieval eval dedup --index INDEX --truth TRUTH --format json` (`--no-verify` unless `verify`,
    `--threshold` when given, else the default; `--compare` for the random-init and PHash rows): the parsed
    document plus `command`."""
    args = ["eval", "dedup", "--index", str(index), "--truth", str(truth), "--format", "json"]
    args += [] if verify else ["--no-verify"]
    args += [] if threshold is None else ["--threshold", threshold]
    args += ["--compare"] if compare else []
    return _eval(args, "dedup")


def eval_knn(index: Path, compare: bool = False) -> dict[str, Any]:
    """`retrieval eval knn --index INDEX --format json` (leave one out over the index; `--compare` adds a
    random-init row): the parsed document plus `command`."""
    args = ["eval", "knn", "--index", str(index), "--format", "json"] + (["--compare"] if compare else [])
    return _eval(args, "knn")


def method(doc: dict[str, Any], name: str) -> dict[str, Any]:
    """The `methods` entry of `doc` named `name` ("index", "random-init" or "phash")."""
    for m in doc["methods"]:
        if m["method"] == name:
            return m
    raise KeyError(f"{doc['command']}: no method {name!r} (has {[m['method'] for m in doc['methods']]})")
