"""Re-measure every benchmark that fits this machine, one after another, then rebuild docs/BENCHMARKS.md.

    python -m bench.run --list                       # what would run, with its rough cost
    python -m bench.run                              # all of it (hours on a 2-core CPU)
    python -m bench.run --only search_latency dedup_scale
    python -m bench.run --max-minutes 30             # only the benchmarks that take at most 30 minutes

The data sets come from `python ../shared/datasets/build.py` (default cache ~/.cache/retrieval-datasets,
`--data` to change it). Each benchmark writes bench/results/NAME.json and NAME.md; `bench.collect` then
rebuilds docs/BENCHMARKS.md from them and the hand-written notes in bench/notes/. A benchmark that fails is
reported and the others still run.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

from bench import collect
from bench.suite import SUITE

DEFAULT_DATA = Path.home() / ".cache" / "retrieval-datasets"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA, help="folder built by shared/datasets/build.py")
    ap.add_argument("--only", nargs="+", metavar="NAME", help="run only these benchmarks")
    ap.add_argument("--max-minutes", type=int, help="skip benchmarks whose rough cost is above this")
    ap.add_argument("--list", action="store_true", help="list the benchmarks and exit")
    a = ap.parse_args()

    known = {b.name for b in SUITE if b.minutes}
    unknown = sorted(set(a.only or ()) - known)
    if unknown:
        sys.exit(f"error: unknown benchmark(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
    chosen = [
        b
        for b in SUITE
        if b.minutes and (not a.only or b.name in a.only) and (a.max_minutes is None or b.minutes <= a.max_minutes)
    ]
    if a.list:
        for b in chosen:
            print(f"{b.name:18s} ~{b.minutes:3d} min  python -m {b.module} {' '.join(b.args)}")
        return

    failed = []
    for b in chosen:
        cmd = [sys.executable, "-m", b.module, *(s.format(data=a.data) for s in b.args)]
        print(f"== {b.name}: {' '.join(cmd[1:])}", flush=True)
        t = time.monotonic()
        rc = subprocess.run(cmd, cwd=Path(__file__).resolve().parent.parent).returncode
        print(f"== {b.name}: exit {rc} after {(time.monotonic() - t) / 60:.1f} min", flush=True)
        if rc:
            failed.append(b.name)
    collect.main()
    if failed:
        sys.exit(f"error: failed: {', '.join(failed)} (their earlier results stay in docs/BENCHMARKS.md)")


if __name__ == "__main__":
    main()
