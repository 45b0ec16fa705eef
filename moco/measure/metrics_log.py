"""The one reader of a run's `metrics.jsonl` (written by `moco.train`): one JSON object per line.

Two kinds of record share the file: a *step* record every `TrainConfig.log_every` steps (`step`, `epoch`,
`loss`, `lr`, `img_per_s`, `elapsed_s`) and an *epoch* record at the end of each epoch (`epoch_end`, `step`,
`pretext_top1`, `dim_std`, ..., and `knn_top1` with `--val`). A line cut short by a killed writer, or that is
not a JSON object, is skipped: a run is read as far as it was written.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

METRICS_FILE = "metrics.jsonl"


def metrics_path(run: Path) -> Path:
    """`run/metrics.jsonl` for a run folder; a path to the file itself is returned as it is."""
    run = Path(run)
    return run if run.suffix == ".jsonl" else run / METRICS_FILE


def read_metrics(run: Path) -> list[dict[str, Any]]:
    """Every readable record of a run's metrics.jsonl (`run` is the run folder or the file), in file order;
    [] when there is no such file."""
    path = metrics_path(run)
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return []
    out = []
    for line in text.splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(rec, dict):
            out.append(rec)
    return out


def step_records(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The per-step records (loss, lr, img/s), in order."""
    return [r for r in records if "epoch_end" not in r and "loss" in r]


def epoch_records(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The end-of-epoch health records (pretext top-1, embedding spread, kNN top-1 with --val), in order."""
    return [r for r in records if "epoch_end" in r]


def last_step(records: list[dict[str, Any]]) -> int:
    """The highest step any record reached (0 for none)."""
    return max((int(r.get("step", 0)) for r in records), default=0)
