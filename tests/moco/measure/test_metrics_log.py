"""moco.measure.metrics_log: the one reader of metrics.jsonl, against records written by hand."""

from __future__ import annotations

import json

from moco.measure.metrics_log import epoch_records, last_step, metrics_path, read_metrics, step_records

STEP = {"step": 10, "epoch": 0.5, "loss": 4.2, "lr": 0.01, "img_per_s": 80.0, "elapsed_s": 3.0}
EPOCH = {"epoch_end": 1.0, "step": 20, "pretext_top1": 0.25}


def test_reads_both_kinds_and_skips_what_a_killed_writer_left(tmp_path):
    lines = [json.dumps(STEP), json.dumps(EPOCH), "[1, 2]", "", json.dumps({**STEP, "step": 30})[:-9]]
    (tmp_path / "metrics.jsonl").write_text("\n".join(lines))
    records = read_metrics(tmp_path)
    assert records == [STEP, EPOCH]  # the list and the cut line are not records
    assert read_metrics(tmp_path / "metrics.jsonl") == records  # the file itself
    assert step_records(records) == [STEP] and epoch_records(records) == [EPOCH]
    assert last_step(records) == 20


def test_no_file_is_no_records(tmp_path):
    assert read_metrics(tmp_path / "run") == [] and last_step([]) == 0
    assert metrics_path(tmp_path / "run") == tmp_path / "run" / "metrics.jsonl"
