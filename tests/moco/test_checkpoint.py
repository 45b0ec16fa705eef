"""moco.checkpoint and resume: bit-identical continuation, versioned and safe loading, SIGKILL at any moment,
and a checkpoint made with other settings is refused."""

from __future__ import annotations

import dataclasses
import json
import os
import select
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from moco.checkpoint import CHECKPOINT_VERSION, load_checkpoint, save_checkpoint
from moco.measure.metrics_log import read_metrics, step_records
from moco.train import fit
from plumbing.errors import FormatVersionError, InputError
from tests.moco.tiny import make_images, tiny_config

REPO = Path(__file__).resolve().parents[2]
N_STOP = 3  # of 6 steps (16 images, batch 8, 3 epochs): the stop falls inside an epoch


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Run A: 6 steps straight. Run B: stop after 3 steps, then the same command again finishes it."""
    base = tmp_path_factory.mktemp("resume")
    make_images(base / "photos", 16, seed=3)
    a = fit(tiny_config(base / "photos", base / "A", epochs=3))
    b1 = fit(tiny_config(base / "photos", base / "B", epochs=3, stop_after_steps=N_STOP))
    stopped = {
        "result": b1,
        "has_encoder": (base / "B" / "encoder.json").exists(),
        "state": load_checkpoint(base / "B" / "checkpoint.pt"),
    }
    (base / "stopped").mkdir()
    shutil.copy2(base / "B" / "checkpoint.pt", base / "stopped" / "checkpoint.pt")
    with open(base / "B" / "metrics.jsonl", "a") as f:  # written after the checkpoint by a run then killed
        f.write(json.dumps({"step": N_STOP + 1, "loss": 0.0}) + "\n" + '{"step": 9, "lo')
    b2 = fit(tiny_config(base / "photos", base / "B", epochs=3))
    yield {"base": base, "A": a, "B": b2, "stopped": stopped}
    shutil.rmtree(base, ignore_errors=True)  # checkpoints are 140 MB each


def test_resume_continues_bit_for_bit(runs):
    a, b = runs["A"], runs["B"]
    assert (a.steps, b.steps) == (6, 6) and a.stopped == b.stopped == "done"
    assert runs["stopped"]["result"].stopped == "stop_after_steps"
    assert runs["stopped"]["result"].steps == N_STOP and runs["stopped"]["state"]["step"] == N_STOP
    assert not runs["stopped"]["has_encoder"], "a stopped run must not look finished"

    sa = load_checkpoint(a.out_dir / "checkpoint.pt")
    sb = load_checkpoint(b.out_dir / "checkpoint.pt")
    assert sa["step"] == sb["step"] == 6
    assert sa["model"].keys() == sb["model"].keys()
    for name, t in sa["model"].items():
        assert torch.equal(t, sb["model"][name]), f"{name} differs after resume"
    for name in ("queue", "queue_ptr", "queue_ids"):
        assert torch.equal(sa["model"][name], sb["model"][name])
    assert int((sa["model"]["queue_ids"] >= 0).sum()) == sa["model"]["queue"].shape[0]  # filled by real keys
    # optimizer: LR of the last step and the momentum buffers
    assert [g["lr"] for g in sa["optimizer"]["param_groups"]] == [g["lr"] for g in sb["optimizer"]["param_groups"]]
    assert sa["optimizer"]["state"].keys() == sb["optimizer"]["state"].keys()
    for i, st in sa["optimizer"]["state"].items():
        assert torch.equal(st["momentum_buffer"], sb["optimizer"]["state"][i]["momentum_buffer"])
    assert sa["loss_history"] == sb["loss_history"]
    assert a.loss == b.loss
    assert a.encoder.sha256 == b.encoder.sha256  # the exported encoders are the same file
    assert _metrics(a.out_dir) == _metrics(b.out_dir)  # one record per step, none from the killed writer


def _metrics(run_dir: Path) -> list[tuple[int, float]]:
    return [(r["step"], r["loss"]) for r in step_records(read_metrics(run_dir))]


def test_resume_with_other_settings_is_refused(runs):
    base = runs["base"]
    ckpt = base / "stopped" / "checkpoint.pt"
    before = ckpt.read_bytes()
    cfg = tiny_config(base / "photos", base / "stopped", epochs=3, lr=0.5, model={"temperature": 0.07})
    with pytest.raises(InputError) as e:
        fit(cfg)
    msg = str(e.value)
    assert "lr" in msg and "model.temperature was 0.2, now 0.07" in msg and "--no-resume" in msg
    assert "\n" not in msg
    # the levers' schedules too, each named with the value it was trained with (a default that changed between
    # releases: an older run is resumed by giving its value)
    for given, named in (
        ({"lr_schedule": "linear"}, "lr_schedule was cosine, now linear"),
        ({"progressive_from": 8}, "progressive_from was 0, now 8"),
        ({"model": {"key_views": 2}}, "model.key_views was 1, now 2"),
    ):
        with pytest.raises(InputError, match=named):
            fit(tiny_config(base / "photos", base / "stopped", epochs=3, **given))
    assert ckpt.read_bytes() == before, "a refused resume must leave the checkpoint alone"
    with pytest.raises(InputError, match="batch_size"):
        fit(tiny_config(base / "photos", base / "stopped", epochs=3, batch_size=4))
    assert not (base / "stopped" / "encoder.json").exists()
    # --no-resume: the same new settings start over instead
    (base / "stopped" / "metrics.jsonl").write_text(json.dumps({"step": 50, "loss": 1.0}) + "\n")  # an older run
    fresh = fit(dataclasses.replace(cfg, resume=False, stop_after_steps=1))
    assert fresh.steps == 1
    assert all(step <= 1 for step, _ in _metrics(base / "stopped"))  # the older run's records are gone
    state = load_checkpoint(ckpt)
    assert state["step"] == 1 and state["config"]["lr"] == 0.5 and state["model_config"]["temperature"] == 0.07


def test_versioned_and_safe_loading(tmp_path):
    path = tmp_path / "checkpoint.pt"
    save_checkpoint(path, {"step": 7, "w": torch.arange(3)})
    state = load_checkpoint(path)
    assert state["version"] == CHECKPOINT_VERSION and state["step"] == 7
    assert torch.equal(state["w"], torch.arange(3))
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint.pt"]  # no temp file left behind

    torch.save({"version": CHECKPOINT_VERSION + 1, "step": 1}, path)
    with pytest.raises(FormatVersionError, match="newer"):
        load_checkpoint(path)

    torch.save({"step": 1}, path)
    with pytest.raises(InputError, match="not a retrieval checkpoint"):
        load_checkpoint(path)

    path.write_bytes(b"garbage, not a pickle")  # as far as the safe unpickler can tell, it may be a payload
    with pytest.raises(InputError, match="refused as unsafe"):
        load_checkpoint(path)

    # an arbitrary object inside: refused, never unpickled
    torch.save({"version": 1, "payload": np.random.default_rng(0)}, path, pickle_protocol=2)
    with pytest.raises(InputError):
        load_checkpoint(path)


# One interpreter imports torch once, then forks a fresh training process per attempt (python -c keeps
# this to one import instead of one per kill). Each child runs fit with a checkpoint every step.
DRIVER = """
import os, sys, torch
torch.set_num_threads(1)
from moco.train import fit
from tests.moco.tiny import tiny_config
cfg = tiny_config(sys.argv[1], sys.argv[2], epochs=1000, checkpoint_every=1, log_every=1000)
while sys.stdin.readline():
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            fit(cfg)
            code = 0
        finally:
            os._exit(code)
    print(pid, flush=True)
    print(os.waitpid(pid, 0)[1], flush=True)
"""


@pytest.mark.slow
def test_sigkill_at_any_moment_leaves_a_loadable_checkpoint(tmp_path):
    make_images(tmp_path / "photos", 12, seed=4)
    out = tmp_path / "run"
    ckpt = out / "checkpoint.pt"
    log = tmp_path / "driver.log"
    rng = np.random.default_rng(11)
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    steps_seen = []
    with open(log, "w") as err:
        driver = subprocess.Popen(
            [sys.executable, "-c", DRIVER, str(tmp_path / "photos"), str(out)],
            cwd=REPO,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=err,
            text=True,
        )
    try:
        # 1: the moment its first checkpoint write has begun; 2, 3: random moments once a checkpoint exists
        for attempt, delay in enumerate([0.0, rng.uniform(0.0, 0.8), rng.uniform(0.0, 0.8)]):
            driver.stdin.write("train\n")
            driver.stdin.flush()
            line = driver.stdout.readline()
            assert line.strip().isdigit(), log.read_text()[-3000:]
            pid = int(line)
            own_tmp = out / f".checkpoint.pt.tmp-{pid}"
            deadline = time.monotonic() + 120
            while not (own_tmp.exists() and (attempt == 0 or ckpt.exists())):
                ended, _, _ = select.select([driver.stdout], [], [], 0)
                assert not ended, "training ended before it was killed: " + log.read_text()[-3000:]
                assert time.monotonic() < deadline, "no checkpoint write began within 120 s"
                time.sleep(0.002)
            time.sleep(delay)
            os.kill(pid, signal.SIGKILL)
            status = int(driver.stdout.readline())
            assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
            if attempt == 0 and not ckpt.exists():
                continue  # killed while writing the very first checkpoint: none yet is fine, a torn one is not
            state = load_checkpoint(ckpt)  # never torn: the previous or the new file
            assert state["model"]["queue"].shape == (4, 16)
            steps_seen.append(state["step"])
    finally:
        driver.stdin.close()
        try:
            driver.wait(timeout=30)
        except subprocess.TimeoutExpired:
            driver.kill()
            driver.wait()
        driver.stdout.close()
    assert driver.returncode == 0, log.read_text()[-3000:]
    assert len(steps_seen) >= 2
    assert steps_seen == sorted(steps_seen) and steps_seen[-1] >= 1  # each restart resumed, none went back
    shutil.rmtree(out)  # the checkpoint and the killed writers' temp files: 140 MB each
