"""`retrieval train` on the terminal: a short line now and then, never the per-epoch JSON, which stays in
metrics.jsonl (one record per epoch)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from cli.commands.epoch_lines import SUMMARY_LINES, EpochLines
from moco.measure.metrics_log import epoch_records, read_metrics
from tests.moco.tiny import make_images

REPO = Path(__file__).resolve().parents[2]
LINE = re.compile(r"^epoch \d+(\.\d+)?/\d+(, loss \d+\.\d{3})?, pretext top-1 \d\.\d{3}(, \d+ img/s)?$")


def test_a_run_prints_a_few_lines_and_keeps_every_epoch_in_metrics_jsonl(tmp_path):
    M = 30  # epochs of one step each (10 images, batch 8)
    make_images(tmp_path / "imgs", 10, size=32)
    args = ["train", str(tmp_path / "imgs"), "--out", str(tmp_path / "run"), "--device", "cpu", "--workers", "0"]
    args += ["--image-size", "32", "--batch-size", "8", "--epochs", str(M), "--stem", "cifar", "--width", "8"]
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "cli", *args], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr
    lines = [x.strip() for x in re.split(r"[\r\n]", proc.stderr) if x.strip()]
    assert not [x for x in lines if x.startswith("epoch {")], proc.stderr  # no JSON on the terminal
    shown = [x for x in lines if LINE.match(x)]
    assert 2 <= len(shown) <= SUMMARY_LINES + 2, shown  # the first, every M/10-th, the last
    assert shown[0].startswith("epoch 1/30,") and shown[-1].startswith(f"epoch {M}/30,")
    assert ", loss " in shown[-1] and " img/s" in shown[-1]  # once metrics.jsonl has a step record (step 10)
    assert len(epoch_records(read_metrics(tmp_path / "run"))) == M


def test_lines_follow_the_epochs_and_the_kNN(tmp_path):
    written: list[str] = []
    lines = EpochLines(tmp_path, 100, 0.0, written.append)
    (tmp_path / "metrics.jsonl").write_text('{"step": 10, "loss": 2.0, "img_per_s": 50}\n')

    class Record:
        msg, args = "epoch %s", ()

    for e in range(1, 101):
        Record.args = (f'{{"epoch_end": {e}.0, "step": {10 * e}, "pretext_top1": 0.5, "knn_top1": 0.25}}',)
        assert lines.filter(Record()) is False  # never passed on to the terminal
    assert [w.split(",")[0] for w in written] == ["epoch 1/100"] + [f"epoch {e}/100" for e in range(10, 101, 10)]
    assert written[0] == "epoch 1/100, loss 2.000, pretext top-1 0.500, kNN top-1 0.250, 50 img/s"
    Record.msg = "something else %s"
    assert lines.filter(Record()) is True
