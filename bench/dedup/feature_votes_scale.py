"""What keypoint votes (retrieval/dedup/candidates/feature_votes.py) cost as a folder grows: time and peak memory of
`vote_pairs` on synthetic ORB-like descriptors, and whether planted copies are still proposed.

    python -m bench.dedup.feature_votes_scale [--pictures 1000 5000 20000] [--per 1000]

Each picture gets `per` random 256-bit descriptors; every 10th picture has a planted copy whose descriptors are
the original's with 8% of them kept, each with up to 16 bits flipped, the rest random (a strong crop keeps about
that share of its keypoints). Past MAX_DESCRIPTORS in all, each picture votes with fewer descriptors
(`voting_share`), as in a real run. Reported per size: descriptors indexed, seconds, peak RSS growth, pairs
proposed per picture, and the share of planted pairs proposed. Writes bench/results/feature_votes_scale.json/.md.
"""

from __future__ import annotations

import argparse
import os
import resource
import time

import numpy as np

from bench.kit.machine import machine_info
from bench.kit.results import publish
from retrieval.dedup.candidates.feature_votes import MAX_DESCRIPTORS, vote_pairs, voting_share
from retrieval.dedup.verify.keypoints import Features

KEPT = 0.08  # share of the original's descriptors a copy keeps
FLIPS = 16  # bits flipped at most in a kept descriptor


def folder(n: int, per: int, seed: int = 0) -> tuple[list[Features], set[tuple[int, int]]]:
    rng = np.random.default_rng(seed)
    feats: list[Features] = []
    planted: set[tuple[int, int]] = set()
    xy = np.zeros((per, 2), dtype=np.float32)
    for i in range(n):
        if i % 10 == 1:  # a copy of picture i - 1
            d = rng.integers(0, 256, (per, 32), dtype=np.uint8)
            keep = rng.random(per) < KEPT
            src = feats[i - 1].descriptors[keep].copy()
            bits = np.unpackbits(src, axis=1)
            for row in bits:
                row[rng.choice(256, size=rng.integers(0, FLIPS + 1), replace=False)] ^= 1
            d[keep] = np.packbits(bits, axis=1)
            planted.add((i - 1, i))
        else:
            d = rng.integers(0, 256, (per, 32), dtype=np.uint8)
        feats.append(Features(xy, d, 320, 240))
    return feats, planted


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def measure(n: int, per: int) -> dict:
    feats, planted = folder(n, per)
    before = peak_mb()
    t = time.perf_counter()
    src, dst = vote_pairs(lambda i: feats[i], list(range(n)))
    seconds = time.perf_counter() - t
    got = set(zip(src.tolist(), dst.tolist(), strict=True))
    return {
        "pictures": n,
        "descriptors_per_picture": min(per, voting_share(n)),
        "descriptors": n * min(per, voting_share(n)),
        "seconds": seconds,
        "peak_rss_growth_mb": peak_mb() - before,
        "pairs_per_picture": len(got) / n,
        "planted_found": len(planted & got) / len(planted),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--pictures", type=int, nargs="+", default=[1000, 5000, 20000])
    ap.add_argument("--per", type=int, default=1000)
    a = ap.parse_args()
    info = machine_info()
    rows = []
    for n in a.pictures:
        rows.append(measure(n, a.per))
        print(rows[-1], flush=True)
    publish("feature_votes_scale", {"machine": info, "rows": rows}, markdown(info, rows, a), echo=False)


def markdown(info: dict, rows: list[dict], a: argparse.Namespace) -> str:
    lines = [
        "### Keypoint votes as the folder grows (bench/dedup/feature_votes_scale.py)",
        "",
        f"`python -m bench.dedup.feature_votes_scale --pictures {' '.join(map(str, a.pictures))} --per {a.per}` on "
        f"{info['cpus']} CPU cores (load {info['load_avg_at_start'][0]:.1f} at the start). Synthetic descriptors: "
        f"every 10th picture a copy keeping {KEPT:.0%} of its original's descriptors (up to {FLIPS} bits flipped). "
        f"At most {MAX_DESCRIPTORS:,} descriptors are indexed; beyond that each picture votes with fewer.",
        "",
        "| pictures | descriptors each | descriptors | seconds | peak RSS growth MB | pairs proposed per picture "
        "| planted pairs proposed |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['pictures']:,} | {r['descriptors_per_picture']} | {r['descriptors']:,} | {r['seconds']:.1f} | "
            f"{r['peak_rss_growth_mb']:.0f} | {r['pairs_per_picture']:.2f} | {r['planted_found']:.2f} |"
        )
    lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "2")
    main()
