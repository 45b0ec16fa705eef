"""Writes docs/BENCHMARKS.md: bench/SUMMARY.md, then one section per benchmark.

    python -m bench.collect

A benchmark's section is bench/results/NAME.md, which the benchmark writes on every run (bench/kit/results.py
publish(): never edit it by hand), followed by bench/notes/NAME.md when there is one: the hand-written commentary
on that result, which no benchmark writes. Sections come in the suite's order (bench/suite.py), then every other
NAME alphabetically. A note whose result is missing is still shown, alone, where its result would stand: collect
never drops hand-written text.

A note goes after its result. Where commentary belongs inside the result instead (before a long list the result
ends with), a line `<!-- before: TEXT -->` in the note starts a block, up to the next such line or the note's end,
that goes just before the first line of the result starting with TEXT; the note's text above its first such line
still goes after the result. When no line of the result starts with TEXT (a rerun reworded it, or the result is
missing), collect stops with an error rather than drop the block.

Edit SUMMARY.md and the notes, never docs/BENCHMARKS.md: tests/bench/test_collect.py fails when the page is not
what build() returns.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Sequence
from pathlib import Path

from bench.suite import SUITE

HERE = Path(__file__).parent
PAGE = HERE.parent / "docs" / "BENCHMARKS.md"
ORDER = [b.name for b in SUITE]
BEFORE = re.compile(r"<!-- before: (.+?) -->")


def names(root: Path = HERE, order: Sequence[str] = ORDER) -> list[str]:
    """Every NAME with a ROOT/results/NAME.md or ROOT/notes/NAME.md: those in ORDER first, in its order, then the
    rest alphabetically."""
    found = {p.stem for folder in ("results", "notes") for p in (root / folder).glob("*.md")}
    return [n for n in order if n in found] + sorted(found - set(order))


def split_note(note: str) -> tuple[str, list[tuple[str, str]]]:
    """The text that goes after the result, and each (TEXT, block) of a `<!-- before: TEXT -->` line."""
    after: list[str] = []
    blocks: list[tuple[str, list[str]]] = []
    current = after
    for line in note.splitlines(keepends=True):
        m = BEFORE.fullmatch(line.rstrip("\n"))
        if m:
            current = []
            blocks.append((m.group(1), current))
        else:
            current.append(line)
    return "".join(after), [(text, "".join(lines)) for text, lines in blocks]


def section(name: str, result: str | None, note: str | None) -> str:
    """NAME's section of the page: its result (None: none) with its note (None: none) placed in it."""
    text = "" if result is None else result.rstrip() + "\n"
    if note is None:
        return text
    after, blocks = split_note(note)
    for anchor, block in blocks:
        lines = text.splitlines(keepends=True)
        at = next((i for i, line in enumerate(lines) if line.startswith(anchor)), None)
        if at is None:
            raise ValueError(
                f"bench/notes/{name}.md: no line of bench/results/{name}.md starts with {anchor!r}"
                " (the `<!-- before: ... -->` line's text)"
            )
        text = "".join(lines[:at]) + block.strip("\n").rstrip() + "\n\n" + "".join(lines[at:])
    after = after.lstrip("\n").rstrip()
    if after:
        text = (text + "\n" if text else "") + after + "\n"
    return text


def build(root: Path = HERE, order: Sequence[str] = ORDER) -> str:
    """The page's text: ROOT/SUMMARY.md, then each NAME's section (see the module's docstring)."""

    def read(path: Path) -> str | None:
        return path.read_text() if path.exists() else None

    parts = [(root / "SUMMARY.md").read_text().rstrip() + "\n"]
    for name in names(root, order):
        text = section(name, read(root / "results" / f"{name}.md"), read(root / "notes" / f"{name}.md"))
        if text:
            parts.append(text)
    return "\n".join(parts)


def main() -> None:
    try:
        page = build()
    except ValueError as e:
        sys.exit(f"error: {e}")
    PAGE.write_text(page)
    print(f"wrote {PAGE}")


if __name__ == "__main__":
    main()
