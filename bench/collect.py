"""Writes docs/BENCHMARKS.md: the summary below followed by every bench/results/*.md, in the
suite's order (bench/suite.py).

python -m bench.collect
"""

from __future__ import annotations

from pathlib import Path

from bench.suite import SUITE

HERE = Path(__file__).parent
ORDER = [b.name for b in SUITE]


def main() -> None:
    summary = (HERE / "SUMMARY.md").read_text()
    parts = [summary.rstrip() + "\n"]
    names = ORDER + sorted(p.stem for p in (HERE / "results").glob("*.md") if p.stem not in ORDER)
    for name in names:
        f = HERE / "results" / f"{name}.md"
        if f.exists():
            parts.append(f.read_text().rstrip() + "\n")
    out = HERE.parent / "docs" / "BENCHMARKS.md"
    out.write_text("\n".join(parts))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
