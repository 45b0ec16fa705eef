"""Progress of long library calls, reported to whoever shows it. The library never draws or prints: it calls
a `Progress` callback, and the CLI (cli/commands/bars.py) draws bars on stderr from it.

A call is `progress(stage, done, total, status)`: `stage` names the work ("embedding", "training", ...),
`done` is how much of it is finished so far, `total` how much there is (None while unknown; it may change,
as for a time-budgeted training run whose step count follows the clock), `status` a short text such as the
current loss.
"""

from __future__ import annotations

from typing import Protocol


class Progress(Protocol):
    def __call__(self, stage: str, done: int, total: int | None, status: str = "") -> None: ...


def report(progress: Progress | None, stage: str, done: int, total: int | None, status: str = "") -> None:
    """Call `progress` when there is one."""
    if progress is not None:
        progress(stage, done, total, status)
