"""Crash consistency loops: SIGKILL `retrieval index` and `retrieval dedup --apply` at random moments.

`index`: each round changes the folder (new files, a deleted one), starts `retrieval index`, kills it at a
random moment of its work (timed from the moment its resume cache `work/` appears, which is when the index
folder starts to change, over as long as `work/` lasted in an uninterrupted run: it is removed right after the
new generation goes live), then checks
that the index loads and holds exactly the old or the new folder (paths and content hashes), that catalog
ids and FAISS ids agree (every vector finds its own id first), that the next run completes with the new
folder, and that it leaves one generation and no resume cache behind.

`dedup`: each round kills `retrieval dedup --move-to DIR --apply` (every move slowed to 50 ms, so the kill
lands among the moves) at a random moment once its undo log exists, runs `undo` on every log, and checks
that the tree is byte for byte what it was (paths and sha256) and that nothing is left in DIR but logs.

The CI test (tests/reliability/test_crash_loops.py) runs a few rounds of each; this script runs many:

    python -m tests.reliability.crash_loops [--kills 30] [--seed 0] [--only index|dedup]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[2]
_ENV = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}


@dataclass
class Tally:
    """What a loop saw: how many kills, where each left things, and every broken promise."""

    kills: int = 0
    outcomes: Counter = field(default_factory=Counter)
    failures: list[str] = field(default_factory=list)
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)  # what a round saw that is odd but broke no promise
    window_s: float = 0.0  # index loop: how long work/ lasted in an uninterrupted run (the kills fall in it)


def _image(path: Path, seed: int) -> None:
    blocks = np.random.default_rng(seed).integers(0, 256, (4, 5, 3), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(blocks).resize((40, 32), Image.Resampling.NEAREST).save(path)


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _tree(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): _sha(p) for p in sorted(root.rglob("*")) if p.is_file()}


def _encoder(work: Path) -> Path:
    from moco.export import save_random_encoder

    out = work / "encoder"
    save_random_encoder(out, arch="resnet18", embed_size=32, dim=16, seed=0)
    return out


def _start(argv: list[str]) -> subprocess.Popen:
    return subprocess.Popen(argv, cwd=REPO, env=_ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _wait_for(path: Path, proc: subprocess.Popen, timeout: float = 120.0, gone: bool = False) -> bool:
    """Poll (1 ms) until `path` exists (or, with `gone`, no longer exists); False when the process ended or the
    timeout passed first."""
    deadline = time.monotonic() + timeout
    while path.exists() == gone:
        if proc.poll() is not None or time.monotonic() > deadline:
            return False
        time.sleep(0.001)
    return True


def _kill(proc: subprocess.Popen) -> bool:
    """SIGKILL; True when the process was still running (False: it had finished first)."""
    alive = proc.poll() is None
    if alive:
        proc.send_signal(signal.SIGKILL)
    proc.wait()
    return alive


# ------------------------------------------------------------------------------------------------ index


def _index_argv(root: Path, encoder: Path, idx: Path) -> list[str]:
    return [sys.executable, "-m", "cli", "index", str(root), "--model", str(encoder), "--index", str(idx),
            "--batch-size", "1", "--device", "cpu", "--workers", "0"]  # fmt: skip


def _index_state(idx: Path) -> dict[str, str]:
    """The live generation as {path: content hash}, after checking catalog, vectors and FAISS ids agree."""
    from retrieval.indexing.generations import load_generation

    gen = load_generation(idx)
    n = len(gen.records)
    assert gen.index.ntotal == n and gen.vectors.shape[0] == n, (gen.index.ntotal, gen.vectors.shape, n)
    _, ids = gen.index.search(np.ascontiguousarray(gen.vectors), 1)
    np.testing.assert_array_equal(ids[:, 0], np.arange(n))
    return {r.path: r.content_hash for r in gen.records}


def index_kill_loop(work: Path, kills: int, seed: int = 0) -> Tally:
    from retrieval.indexing.generations import WORK
    from retrieval.indexing.run import IndexConfig, index_folder

    t0 = time.perf_counter()
    rng = random.Random(seed)
    tally = Tally()
    encoder, root, idx = _encoder(work), work / "photos", work / "idx"
    names = list(range(12))
    for i in names:
        _image(root / f"p{i}.png", seed=i)
    cfg = IndexConfig(root, encoder, idx, batch_size=1, workers=0, device="cpu")
    index_folder(cfg)
    next_name = len(names)

    def change_folder() -> dict[str, str]:
        nonlocal next_name
        for _ in range(4):  # four new files and one gone: work to embed and a generation to write
            _image(root / f"p{next_name}.png", seed=next_name)
            names.append(next_name)
            next_name += 1
        (root / f"p{names.pop(0)}.png").unlink()
        return _tree(root)

    # one uninterrupted round, to know how long the index folder changes: from the resume cache's appearance
    # to its removal, which comes right after the new generation goes live (not the interpreter's exit)
    old = change_folder()
    proc = _start(_index_argv(root, encoder, idx))
    _wait_for(idx / WORK, proc)
    t_work = time.monotonic()
    _wait_for(idx / WORK, proc, gone=True)
    window = max(time.monotonic() - t_work, 0.05)
    proc.communicate()
    if proc.returncode != 0 or _index_state(idx) != old:
        tally.failures.append(f"the uninterrupted round failed (exit {proc.returncode})")
        return tally
    tally.window_s = window
    for k in range(kills):
        new = change_folder()
        proc = _start(_index_argv(root, encoder, idx))
        _wait_for(idx / WORK, proc)
        time.sleep(rng.uniform(0.0, window))
        killed = _kill(proc)
        tally.kills += killed
        try:
            state = _index_state(idx)
            where = "old" if state == old else "new" if state == new else None
            if where is None:
                tally.failures.append(f"round {k}: the index holds neither the old nor the new folder")
            tally.outcomes[f"{where} generation{'' if killed else ' (finished first)'}"] += 1
            index_folder(cfg)
            if _index_state(idx) != new:
                tally.failures.append(f"round {k}: the run after the kill did not index the folder")
            leftovers = [p.name for p in idx.iterdir() if p.name.startswith("gen-")][1:]
            if leftovers or (idx / WORK).exists():
                tally.failures.append(f"round {k}: leftovers after the next run: {leftovers or WORK}")
        except Exception as exc:  # noqa: BLE001  (each broken promise is reported, the loop goes on)
            tally.failures.append(f"round {k}: {type(exc).__name__}: {exc}")
        old = new
    tally.seconds = time.perf_counter() - t0
    return tally


# ------------------------------------------------------------------------------------------------ dedup

MOVE_SECONDS = 0.05
_SLOW_DEDUP = textwrap.dedent(
    f"""
    import sys, time
    import retrieval.dedup.moves as moves
    real = moves._move_file
    def slow(*args):
        time.sleep({MOVE_SECONDS})
        return real(*args)
    moves._move_file = slow
    from cli.main import main
    sys.argv = ["retrieval", *sys.argv[1:]]
    main()
    """
)


def dedup_kill_loop(work: Path, kills: int, seed: int = 0) -> Tally:
    from retrieval.dedup.run import undo
    from retrieval.indexing.run import IndexConfig, index_folder

    t0 = time.perf_counter()
    rng = random.Random(seed)
    tally = Tally()
    encoder, root, idx, move_to = _encoder(work), work / "photos", work / "idx", work / "duplicates"
    originals = 6
    for i in range(originals):  # each picture with two byte-identical copies: 12 moves
        _image(root / f"p{i}.png", seed=100 + i)
        for copy in ("a", "b"):
            (root / copy).mkdir(exist_ok=True)
            shutil.copyfile(root / f"p{i}.png", root / copy / f"p{i}.png")
    index_folder(IndexConfig(root, encoder, idx, batch_size=4, workers=0, device="cpu"))
    before = _tree(root)
    argv = [sys.executable, "-c", _SLOW_DEDUP, "dedup", "--index", str(idx), "--move-to", str(move_to), "--apply",
            "--format", "json"]  # fmt: skip
    for k in range(kills):
        proc = _start(argv)
        deadline = time.monotonic() + 120
        while not list(move_to.glob("undo-*.jsonl")) and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.005)
        time.sleep(rng.uniform(0.0, 2 * originals * MOVE_SECONDS * 1.2))
        killed = _kill(proc)
        tally.kills += killed
        try:
            in_move_to = sorted(p.relative_to(move_to).as_posix() for p in move_to.rglob("*.png"))
            moved = len(in_move_to)
            if moved > 2 * originals:
                tally.notes.append(f"round {k}: {moved} pictures in the move folder: {in_move_to}")
            tally.outcomes[f"{'killed' if killed else 'finished'} with {moved} of {2 * originals} moved"] += 1
            for log in sorted(move_to.glob("undo-*.jsonl")):
                report = undo(log)
                if not report.ok:
                    tally.failures.append(f"round {k}: undo {log.name} did not restore everything: {report}")
            if _tree(root) != before:
                tally.failures.append(f"round {k}: the tree differs from before the apply after undo")
            left = [p for p in move_to.rglob("*") if p.is_file() and not p.name.startswith("undo-")]
            if left:
                tally.failures.append(f"round {k}: files left in the move-to folder: {left}")
        except Exception as exc:  # noqa: BLE001
            tally.failures.append(f"round {k}: {type(exc).__name__}: {exc}")
        shutil.rmtree(move_to, ignore_errors=True)
    tally.seconds = time.perf_counter() - t0
    return tally


def _print(name: str, tally: Tally) -> None:
    print(f"{name}: {tally.kills} kills, {len(tally.failures)} failures, {tally.seconds:.0f} s")
    for outcome, n in sorted(tally.outcomes.items()):
        print(f"  {n:4d}  {outcome}")
    if tally.window_s:
        print(f"  (kills timed over the {tally.window_s:.2f} s work/ lasted in an uninterrupted run)")
    for note in tally.notes:
        print(f"  NOTE {note}")
    for failure in tally.failures:
        print(f"  FAIL {failure}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--kills", type=int, default=30)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--only", choices=("index", "dedup"))
    args = p.parse_args()
    failed = False
    for name, loop in (("index", index_kill_loop), ("dedup", dedup_kill_loop)):
        if args.only in (None, name):
            with tempfile.TemporaryDirectory() as work:
                tally = loop(Path(work), args.kills, args.seed)
            _print(f"retrieval {name}", tally)
            failed |= bool(tally.failures)
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
