"""Issue 18: concurrency. Two `retrieval index` runs on one index at once: the second exits at once with one
line naming the lock, the first completes, nothing is damaged. Eight threads searching while generations are
swapped under them: no crash, and every answer comes whole from one generation (its paths, and its scores
equal to a brute-force search of that generation's vectors)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import numpy as np

from retrieval.indexing.faiss_index import build_index
from retrieval.indexing.generations import WORK, load_generation, write_generation
from retrieval.records import FileRecord
from retrieval.searching.searcher import SearchIndex, search
from tests.reliability.conftest import REPO, cli_subprocess, make_image, one_line_error

# `retrieval index` whose batches wait until the file named by $RETRIEVAL_TEST_GO exists (at most 120 s), so a
# second run certainly finds the first one writing, however slowly the second one starts on a loaded machine
_SLOW_INDEX = textwrap.dedent(
    """
    import os, sys, time
    from retrieval.embed import Embedder
    real = Embedder.encode_tensors
    go = os.environ["RETRIEVAL_TEST_GO"]
    def slow(self, x):
        deadline = time.monotonic() + 120
        while not os.path.exists(go) and time.monotonic() < deadline:
            time.sleep(0.02)
        return real(self, x)
    Embedder.encode_tensors = slow
    from cli.main import main
    sys.argv = ["retrieval", *sys.argv[1:]]
    main()
    """
)


def test_a_second_index_run_exits_with_one_line_and_the_first_completes(tmp_path, encoder):
    photos = tmp_path / "photos"
    for i in range(24):
        make_image(photos / f"{i}.png", seed=i)
    idx = tmp_path / "idx"
    args = ["index", str(photos), "--model", str(encoder), "--index", str(idx), "--batch-size", "2", "--device", "cpu"]
    go = tmp_path / "go"
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "RETRIEVAL_TEST_GO": str(go)}
    first = subprocess.Popen(
        [sys.executable, "-c", _SLOW_INDEX, *args], cwd=REPO, env=env, stderr=subprocess.PIPE, text=True
    )
    try:
        deadline = time.monotonic() + 120
        while not (idx / WORK).exists():  # the resume cache appears once the lock is held and embedding began
            assert first.poll() is None, first.stderr.read()
            assert time.monotonic() < deadline, "the first run never started embedding"
            time.sleep(0.02)
        code, out, err, _ = cli_subprocess(*args)
        one_line_error(code, err, str(idx), "another `retrieval index` run is writing this index")
        assert first.poll() is None, "the first run ended before the second was tried"
        go.touch()  # now let the first run finish
        _, first_err = first.communicate(timeout=300)
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()
    assert first.returncode == 0, first_err
    gen = load_generation(idx)
    assert sorted(r.path for r in gen.records) == sorted(f"{i}.png" for i in range(24))
    assert gen.index.ntotal == 24
    # with the lock released, the next run goes through and finds nothing to do
    code, _, err, _ = cli_subprocess(*args)
    assert code == 0, err


DIM = 16


def _vectors(g: int, n: int) -> np.ndarray:
    v = np.random.default_rng(g).standard_normal((n, DIM)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def _write(idx: Path, g: int) -> None:
    n = 40 + 7 * (g % 5)
    v = _vectors(g, n)
    records = [FileRecord(i, f"g{g}/{i:03d}.png", i, g, f"{g:032x}{i:032x}", 1, 1) for i in range(n)]
    write_generation(
        idx,
        root=Path("/photos"),
        encoder_sha256="e" * 64,
        encoder_path="/runs/r",
        records=records,
        bad=[],
        vectors=v,
        built=build_index(v, ("flat", "hnsw")[g % 2]),
    )


def test_searches_during_generation_swaps_each_answer_from_one_generation(tmp_path):
    idx = tmp_path / "idx"
    _write(idx, 0)
    stop = threading.Event()
    errors: list[BaseException] = []
    answers = [0] * 8
    generations_seen: list[set[int]] = [set() for _ in range(8)]
    queries = _vectors(10_000, 3)

    def reader(t: int) -> None:
        try:
            while not stop.is_set():
                index = SearchIndex.open(idx)
                for _ in range(3):  # a held index keeps answering after it stops being current
                    for q, hits in zip(queries, search(index, queries, k=5), strict=True):
                        g = {int(h.path.split("/")[0][1:]) for h in hits}
                        assert len(g) == 1, [h.path for h in hits]
                        (gen,) = g
                        v = _vectors(gen, 40 + 7 * (gen % 5))
                        assert len(index) == len(v)
                        truth = np.sort(v @ q)[::-1][:5]
                        np.testing.assert_allclose([h.cosine for h in hits], truth, atol=1e-5)
                        assert all(h.path == f"g{gen}/{h.id:03d}.png" for h in hits)
                        generations_seen[t].add(gen)
                        answers[t] += 1
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)
            stop.set()

    threads = [threading.Thread(target=reader, args=(t,)) for t in range(8)]
    for th in threads:
        th.start()
    try:
        for g in range(1, 16):
            if stop.is_set():
                break
            _write(idx, g)
            time.sleep(0.03)
    finally:
        stop.set()
        for th in threads:
            th.join(timeout=60)
    assert not errors, repr(errors[0])
    assert all(answers), answers
    assert len(set().union(*generations_seen)) >= 3, generations_seen  # the swaps really happened under them
    assert [p.name for p in idx.iterdir() if p.name.startswith("gen-")] == ["gen-0016"]
