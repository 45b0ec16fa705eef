"""Progress bars on stderr for the library's `plumbing.progress.Progress` reports: one bar per stage, closed when
the stage is done or the command ends. Log lines print above the bars, never glued to them; stdout stays
clean for `--format json`."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from typing import Any

UNITS = {"training": "step", "downloading": "B"}  # every other stage counts images


class StderrBars:
    """A `Progress` callback: `bars(stage, done, total)` moves the bar of `stage` to `done` of `total`."""

    def __init__(self) -> None:
        self._bars: dict[str, Any] = {}

    def __call__(self, stage: str, done: int, total: int | None, status: str = "") -> None:
        bar = self._bars.get(stage)
        if bar is None:
            from tqdm import tqdm

            unit = UNITS.get(stage, "img")
            bar = tqdm(
                total=total,
                initial=done,
                desc=stage,
                unit=unit,
                unit_scale=unit == "B",
                unit_divisor=1024 if unit == "B" else 1000,
                file=sys.stderr,
                dynamic_ncols=True,
            )
            self._bars[stage] = bar
        if total != bar.total:
            bar.total = total
        if status:
            bar.set_postfix_str(status, refresh=False)
        bar.update(done - bar.n)
        if total is not None and done >= total:
            bar.close()
            del self._bars[stage]

    def write(self, line: str) -> None:
        """A line above the bars (never glued to one)."""
        from tqdm import tqdm

        tqdm.write(line, file=sys.stderr)

    def close(self) -> None:
        for bar in self._bars.values():
            bar.close()
        self._bars.clear()


@contextlib.contextmanager
def stderr_bars() -> Iterator[StderrBars]:
    """Bars for the duration of one command, with the log lines routed above them."""
    from tqdm.contrib.logging import logging_redirect_tqdm

    bars = StderrBars()
    try:
        with logging_redirect_tqdm():
            yield bars
    finally:
        bars.close()
