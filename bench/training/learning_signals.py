"""Which label-free signal tracks what a searcher sees: over every scored point of `bench.training.learning_curve`
results (folders of different sizes, settings, seeds), the rank correlation (Spearman) of first-page precision over
the random init (`p10_minus_random`) with each candidate a user can read without labels:

- how long the run trained: steps (= pairs / batch), passes over the folder (pairs / pictures), CPU minutes;
- the run's own health at the point (metrics.jsonl, the last epoch before it): pretext top-1, effective rank and
  per-dimension std of the query embeddings;
- neighbour agreement with the run's previous point (the share of each query's 10 nearest it kept).

A signal tracks precision when its correlation is high across all points; one that only orders the points of each
run (every signal rises or falls with time) is read from `within runs`, the mean correlation inside runs with at
least three points. Each correlation comes with its number of points; `p10_noise` (two paired standard errors of a
point's precision gain) is the yardstick for whether there was anything to track.

    python -m bench.training.learning_signals --result bench/results/learning_curve_29_quiet.json --result ... \
        [--tag learning_signals]
"""

from __future__ import annotations

import argparse
import json
import math
from collections.abc import Callable
from pathlib import Path

import numpy as np

from bench.kit.learning_curve_plot import passes
from bench.kit.results import RESULTS, publish

Signal = Callable[[dict], float | None]


def _health(key: str) -> Signal:
    return lambda row: (row.get("last_health") or {}).get(key)


SIGNALS: dict[str, Signal] = {
    "steps": lambda row: row["steps"],
    "passes over the folder": passes,
    "CPU minutes": lambda row: row["cpu_s"] / 60 if row.get("cpu_s") is not None else None,
    "pretext top-1": _health("pretext_top1"),
    "effective rank": _health("effective_rank"),
    "dimension std": _health("dim_std"),
    "neighbour agreement": lambda row: row.get("neighbour_agreement"),
}


def spearman(x: list[float], y: list[float]) -> float:
    """Spearman's rank correlation of x and y (ties take their mean rank); nan under three points or with a
    constant side."""
    if len(x) != len(y):
        raise ValueError(f"x has {len(x)} values, y {len(y)}")
    if len(x) < 3:
        return math.nan
    rx, ry = _ranks(np.asarray(x, float)), _ranks(np.asarray(y, float))
    if rx.std() == 0 or ry.std() == 0:
        return math.nan
    return float(np.corrcoef(rx, ry)[0, 1])


def _ranks(v: np.ndarray) -> np.ndarray:
    order = np.argsort(v, kind="stable")
    ranks = np.empty(len(v))
    ranks[order] = np.arange(len(v), dtype=float)
    for value in np.unique(v):  # ties: their mean rank
        tied = v == value
        ranks[tied] = ranks[tied].mean()
    return ranks


def points(results: list[dict]) -> list[dict]:
    """Every scored row of the results (key-encoder rows left out), each with its folder's picture count."""
    return [
        row | {"train_images": res["data"]["train_images"]}
        for res in results
        for row in res["rows"]
        if not row["setting"].endswith("(key encoder)") and row.get("precision_at_10") is not None
    ]


def correlations(rows: list[dict]) -> list[dict]:
    """Per signal: its correlation with the precision gain over all points that have it, and the mean correlation
    within runs of three or more such points."""
    out = []
    for name, signal in SIGNALS.items():
        have = [(signal(r), r["p10_minus_random"], r["run"]) for r in rows if _finite(signal(r))]
        runs: dict[str, list[tuple[float, float]]] = {}
        for s, p, run in have:
            runs.setdefault(run, []).append((s, p))
        inside = [spearman(*map(list, zip(*v, strict=True))) for v in runs.values() if len(v) >= 3]
        inside = [c for c in inside if _finite(c)]
        out.append(
            {
                "signal": name,
                "points": len(have),
                "spearman": spearman([h[0] for h in have], [h[1] for h in have]),
                "runs": len(inside),
                "within_runs": float(np.mean(inside)) if inside else math.nan,
            }
        )
    return out


def _finite(v: object) -> bool:
    return isinstance(v, (int, float)) and math.isfinite(v)


def _f(v: object, fmt: str) -> str:
    return format(v, fmt) if _finite(v) else "-"


def table(rows: list[dict], corr: list[dict]) -> str:
    lines = [
        "| folder | setting | run (min) | steps | passes | CPU min | P@10 gain (noise) | pretext top-1 | eff. rank "
        "| dim std | neighbour agreement |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    key = lambda r: (r["train_images"], r["setting"], r["run"], r["steps"])  # noqa: E731
    for r in sorted(rows, key=key):
        health = r.get("last_health") or {}
        run_min = r.get("snapshot_of_min") or r["budget_min"]
        lines.append(
            f"| {r['train_images']:,} | {r['setting']} | {run_min:g} | {r['steps']:,} | "
            f"{passes(r):.0f} | {_f((r.get('cpu_s') or math.nan) / 60, '.1f')} | "
            f"{r['p10_minus_random']:+.3f} (+-{r['p10_noise']:.3f}) | {_f(health.get('pretext_top1'), '.3f')} | "
            f"{_f(health.get('effective_rank'), '.1f')} | {_f(health.get('dim_std'), '.3f')} | "
            f"{_f(r.get('neighbour_agreement'), '.2f')} |"
        )
    lines += [
        "",
        "| signal | points | Spearman with P@10 gain, all points | runs | mean Spearman within a run |",
        "|---|---|---|---|---|",
    ]
    for c in corr:
        lines.append(
            f"| {c['signal']} | {c['points']} | {_f(c['spearman'], '+.2f')} | {c['runs']} | "
            f"{_f(c['within_runs'], '+.2f')} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--result", type=Path, action="append", required=True, help="a learning_curve result JSON")
    ap.add_argument("--tag", default="learning_signals")
    a = ap.parse_args()
    results = [json.loads(p.read_text()) for p in a.result]
    rows = points(results)
    corr = correlations(rows)
    root = RESULTS.parents[1]
    sources = [str(p.resolve().relative_to(root)) if p.resolve().is_relative_to(root) else str(p) for p in a.result]
    result = {"benchmark": "learning_signals", "results": sources, "correlations": corr}
    publish(a.tag, result, table(rows, corr))


if __name__ == "__main__":
    main()
