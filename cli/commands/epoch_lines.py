"""The lines `retrieval train` prints while it trains: `moco.train` logs each epoch's metrics.jsonl record as
JSON; on the terminal that is a short human line now and then instead (the JSON stays in metrics.jsonl)."""

from __future__ import annotations

import contextlib
import json
import logging
import math
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from moco.measure.metrics_log import read_metrics, step_records

SUMMARY_LINES = 10  # epoch lines over a run (besides the first and the last), and as many more on a time budget
EPOCH_RECORD = "epoch %s"  # moco.train logs each epoch's metrics.jsonl record as JSON with this message


class EpochLines(logging.Filter):
    """Turns `moco.train`'s per-epoch JSON log records (kept in metrics.jsonl) into a short line now and then:
    the first epoch, every `epochs / SUMMARY_LINES`-th, on a time budget also every tenth of it, and the
    last. Loss and img/s are the means of metrics.jsonl's step records since the previous line (or the
    latest one; none before the first is logged)."""

    def __init__(self, run_dir: Path, epochs: int, budget_s: float, write: Callable[[str], None]) -> None:
        super().__init__()
        self.run_dir, self.epochs, self.write = run_dir, epochs, write
        self.every = max(1, math.ceil(epochs / SUMMARY_LINES))
        self.every_s = budget_s / SUMMARY_LINES if budget_s else math.inf
        self.t_line = time.monotonic()
        self.step_shown = -1  # the step of the last line shown
        self.pending: dict[str, Any] | None = None  # the last epoch record not shown yet

    def filter(self, record: logging.LogRecord) -> bool:
        if record.msg != EPOCH_RECORD or not record.args:
            return True
        try:
            rec = json.loads(record.args[0])  # type: ignore[index]
        except (TypeError, ValueError, IndexError, KeyError):
            return True
        if not isinstance(rec, dict) or "epoch_end" not in rec:
            return True
        epoch = float(rec["epoch_end"])
        whole = epoch == int(epoch)
        due = epoch <= 1 or (whole and int(epoch) % self.every == 0) or epoch >= self.epochs
        if due or time.monotonic() - self.t_line >= self.every_s:
            self.show(rec)
        else:
            self.pending = rec
        return False  # the JSON stays in metrics.jsonl

    def show(self, rec: dict[str, Any]) -> None:
        step = int(rec.get("step", 0))
        logged = [r for r in step_records(read_metrics(self.run_dir)) if r.get("step", 0) <= step]
        steps = [r for r in logged if r.get("step", 0) > self.step_shown] or logged[-1:]  # else the latest logged
        epoch = float(rec["epoch_end"])
        parts = [f"epoch {epoch:g}/{self.epochs}"]
        if steps:
            parts.append(f"loss {sum(r['loss'] for r in steps) / len(steps):.3f}")
        if "pretext_top1" in rec:
            parts.append(f"pretext top-1 {rec['pretext_top1']:.3f}")
        if "knn_top1" in rec:
            parts.append(f"kNN top-1 {rec['knn_top1']:.3f}")
        rates = [r["img_per_s"] for r in steps if "img_per_s" in r]
        if rates:
            parts.append(f"{sum(rates) / len(rates):.0f} img/s")
        if rec.get("collapse_warning"):
            parts.append("embeddings look collapsed")
        self.write(", ".join(parts))
        self.t_line, self.step_shown, self.pending = time.monotonic(), step, None

    def finish(self) -> None:
        """Show the last epoch record if its line was not due."""
        if self.pending is not None:
            self.show(self.pending)


@contextlib.contextmanager
def epoch_lines(run_dir: Path, epochs: int, budget_s: float, write: Callable[[str], None]) -> Iterator[EpochLines]:
    """`EpochLines` on the `moco.train` logger for the duration of one training command."""
    lines = EpochLines(run_dir, epochs, budget_s, write)
    train_log = logging.getLogger("moco.train")
    train_log.addFilter(lines)
    try:
        yield lines
        lines.finish()
    finally:
        train_log.removeFilter(lines)
