"""Where the search score's bands sit on labelled pairs (retrieval/searching/score.py).

    python -m bench.search.score_bands [--index indexes/samples] [--truth samples/duplicates.json]

Every pair of files in the index is scored as `retrieval search` scores a hit (the neighbour-normalised score,
0 = as close as a typical neighbour, 1 = identical) and sorted into what it is by the truth file of the bundled
samples: identical bytes, the same picture at another size (`NAME_<W>x<H>`), a planted edited copy
(`photos/edited/`), another listed duplicate (colour variants, clip art held twice), two clip-art pictures of
one category, anything else. Writes bench/results/score_bands.json and .md: per kind the spread of scores
and how many pairs land in each band.
"""

from __future__ import annotations

import argparse
import json
import re
from collections import defaultdict
from pathlib import Path

import numpy as np

from bench.kit.results import publish
from retrieval.searching.score import BANDS, band
from retrieval.searching.searcher import SearchIndex

ROOT = Path(__file__).resolve().parents[2]
KINDS = ("identical bytes", "same picture, resized", "planted edit", "other duplicate", "same clip-art category")
KINDS += ("anything else",)


def kind(a: str, b: str, same_bytes: bool, same_group: bool) -> str:
    if same_bytes:
        return "identical bytes"
    if same_group:
        if re.sub(r"_\d+x\d+(?=\.)", "", a) == re.sub(r"_\d+x\d+(?=\.)", "", b):
            return "same picture, resized"
        return "planted edit" if "photos/edited/" in a + b else "other duplicate"
    if a.startswith("clipart/") and a.split("/")[1] == b.split("/")[1]:
        return "same clip-art category"
    return "anything else"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--index", type=Path, default=ROOT / "indexes" / "samples")
    ap.add_argument("--truth", type=Path, default=ROOT / "samples" / "duplicates.json")
    a = ap.parse_args()
    index = SearchIndex.open(a.index)
    group = {f: g for g, files in enumerate(json.loads(a.truth.read_text())["groups"]) for f in files}
    scores: dict[str, list[float]] = defaultdict(list)
    n = len(index)
    for i, hits in enumerate(index.search_vectors(index.vectors, k=n)):  # every pair, scored as search does
        pa, ha = index.records[i].path, index.records[i].content_hash
        for h in hits:
            if h.id <= i:
                continue
            rec = index.records[h.id]
            same_group = group.get(pa) is not None and group.get(pa) == group.get(rec.path)
            scores[kind(pa, rec.path, ha == rec.content_hash, same_group)].append(h.score)
    rows = []
    for k in KINDS:
        s = np.array(scores.get(k, []), dtype=np.float64)
        if not s.size:
            continue
        counts = {name: int(sum(band(x) == name for x in s)) for name, _ in BANDS}
        q = np.percentile(s, [0, 5, 50, 95, 100]).round(3).tolist()
        rows.append({"kind": k, "pairs": int(s.size), "min_p5_median_p95_max": q, "bands": counts})
    out = {
        "index": str(a.index),
        "files": n,
        "encoder": index.manifest.encoder_path,
        "bands": {name: floor for name, floor in BANDS[:-1]},
        "rows": rows,
    }
    names = [name for name, _ in BANDS]
    lines = [
        "## Search score bands on the bundled samples",
        "",
        f"`python -m bench.search.score_bands --index {a.index.name and 'indexes/' + a.index.name}` over {n} files"
        f" (every pair scored as a search hit). Bands: "
        + ", ".join(f"{name} >= {floor:g}" for name, floor in BANDS[:-1])
        + ", unrelated below.",
        "",
        "| pairs | count | score min / p5 / median / p95 / max | " + " | ".join(names) + " |",
        "|---|---|---|" + "---|" * len(names),
    ]
    for r in rows:
        q = " / ".join(f"{x:.3f}" for x in r["min_p5_median_p95_max"])
        lines.append(f"| {r['kind']} | {r['pairs']} | {q} | " + " | ".join(str(r["bands"][m]) for m in names) + " |")
    publish("score_bands", out, "\n".join(lines) + "\n", indent=2, newline=True, echo=False)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
