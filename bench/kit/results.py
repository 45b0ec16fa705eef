"""Where a benchmark's result goes: bench/results/NAME.json (the figures) and NAME.md (the table docs/BENCHMARKS.md
shows), the markdown printed too."""

from __future__ import annotations

import json
from pathlib import Path

RESULTS = Path(__file__).resolve().parents[1] / "results"


def publish(name: str, result: object, markdown: str) -> None:
    """Write RESULTS/name.json and RESULTS/name.md and print the markdown."""
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{name}.json").write_text(json.dumps(result, indent=1))
    (RESULTS / f"{name}.md").write_text(markdown)
    print(markdown)
