"""`index_folder` under torchrun with 2 CPU processes (gloo): files split by rank, rank 0 writes one
index, and the vectors equal a single-process run's."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from moco.export import save_random_encoder
from retrieval.indexing.run import IndexConfig, index_folder
from retrieval.searching.searcher import SearchIndex

REPO = Path(__file__).resolve().parents[3]


def _pythonpath() -> str:
    """This checkout first, then whatever the caller's environment already adds."""
    return os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p)


_RANK_SCRIPT = textwrap.dedent(
    """
    import json, os, sys
    from pathlib import Path
    import torch
    torch.set_num_threads(1)
    from retrieval.indexing.run import IndexConfig, index_folder

    photos, model, index, out = map(Path, sys.argv[1:5])
    report = index_folder(IndexConfig(photos, model, index, batch_size=3, workers=1, device="cpu",
                                      progress=None))
    rank = os.environ["RANK"]
    (out / f"rank{rank}.json").write_text(json.dumps(
        {"embedded": report.embedded, "world": int(os.environ["WORLD_SIZE"]), "generation": report.generation}
    ))
    """
)


@pytest.mark.slow
def test_two_cpu_processes_give_the_same_index_as_one(tmp_path):
    import torch

    photos = tmp_path / "photos"
    for i in range(11):
        blocks = np.random.default_rng(i).integers(0, 256, (4, 5, 3), dtype=np.uint8)
        (photos / f"d{i % 3}").mkdir(parents=True, exist_ok=True)
        Image.fromarray(blocks).resize((40, 32), Image.Resampling.NEAREST).save(photos / f"d{i % 3}" / f"{i}.png")
    (photos / "broken.png").write_bytes(b"nope")
    model = tmp_path / "runs" / "tiny"
    save_random_encoder(model, embed_size=32, dim=16, seed=0)
    script = tmp_path / "rank.py"
    script.write_text(_RANK_SCRIPT)

    # What torchrun does for --nproc_per_node=2, minus its agent process (one torch import less).
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    procs = []
    for rank in (0, 1):
        env = {
            **os.environ,
            "PYTHONPATH": _pythonpath(),
            "OMP_NUM_THREADS": "1",
            "RANK": str(rank),
            "LOCAL_RANK": str(rank),
            "WORLD_SIZE": "2",
            "MASTER_ADDR": "127.0.0.1",
            "MASTER_PORT": str(port),
        }
        cmd = [sys.executable, str(script), str(photos), str(model), str(tmp_path / "idx2"), str(tmp_path)]
        procs.append(subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    for proc in procs:
        out, _ = proc.communicate(timeout=180)
        assert proc.returncode == 0, out[-3000:]

    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [r["world"] for r in ranks] == [2, 2]
    assert ranks[0]["generation"] == "gen-0001" and ranks[1]["generation"] == ""  # rank 0 writes
    # 12 files split 6/6 by rank (broken.png sorts first, into rank 0's share); rank 0 reports the total
    assert (ranks[0]["embedded"], ranks[1]["embedded"]) == (11, 6)

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        index_folder(IndexConfig(photos, model, tmp_path / "idx1", batch_size=4, workers=1, device="cpu"))
    finally:
        torch.set_num_threads(before)

    one, two = SearchIndex.open(tmp_path / "idx1"), SearchIndex.open(tmp_path / "idx2")
    assert two.records == one.records  # same ids, paths, sizes, hashes
    assert (
        [(b.path, b.error) for b in two.bad]
        == [(b.path, b.error) for b in one.bad]
        == [("broken.png", "not an image, or an unsupported format")]
    )
    np.testing.assert_allclose(two.vectors, one.vectors, atol=1e-5)
    assert two.index.ntotal == 11
    assert not (tmp_path / "idx2" / "work").exists()
