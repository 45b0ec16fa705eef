"""Where a benchmark's result goes: bench/results/NAME.json (the figures) and NAME.md (the table docs/BENCHMARKS.md
shows), the markdown printed too. Every run rewrites NAME.md: hand-written commentary on a result lives in
bench/notes/NAME.md, which bench.collect puts after it."""

from __future__ import annotations

import json
from pathlib import Path

RESULTS = Path(__file__).resolve().parents[1] / "results"


def publish(
    name: str,
    result: object,
    markdown: str | None,
    *,
    folder: Path = RESULTS,
    indent: int = 1,
    newline: bool = False,
    echo: bool = True,
) -> None:
    """Write FOLDER/name.json and FOLDER/name.md and print the markdown.

    The keywords keep the files of a module byte for byte as it wrote them itself: folder (its --out DIR),
    indent and newline (json.dumps(result, indent=2) + "\\n"), markdown None (the JSON only), echo False (it
    prints something else, or nothing)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{name}.json").write_text(json.dumps(result, indent=indent) + ("\n" if newline else ""))
    if markdown is None:
        return
    (folder / f"{name}.md").write_text(markdown)
    if echo:
        print(markdown)
