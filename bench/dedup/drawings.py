"""Distinct drawings of one subject or template: how many false groups does `retrieval dedup` form among them?

    python -m bench.dedup.drawings ~/.cache/retrieval-datasets --model RUN [--work /tmp/dedup-drawings]

From the clip-art source (../shared/datasets/build.py), drawings grouped by subject: the first word of the file name
within a category (apple_*, bamboo_*, aiga_*, Matieres* ...), subjects with at least MIN_PER_SUBJECT drawings, at
most MAX_PER_SUBJECT each, one file per distinct content (same bytes kept once). The tuning folder draws on
signs_and_symbols and bench/kit/neardup_family.py's tuning categories, the held-out folder on its held-out
categories; the held-out folder chose nothing. Every pair of files is a negative unless the package itself holds
one artwork twice (a colour, black-and-white or card-style version of one drawing): those were read by eye from the
contact sheets and listed in bench/dedup/drawings_truth.json ("artworks": sets of files that are one artwork;
"ambiguous": sets a person could not call, left out of the counts). Each group is scored by its pairs: true (one
artwork), ambiguous, false; a false group holds at least one false pair. The groups are listed, and a contact sheet
written to WORK/<folder>/groups.png.

Measured at the default threshold with: the default rule; the keypoint match without the aligned-overlap check
(retrieval/dedup/verify/rule.py constants patched off); no verification. Writes bench/results/dedup_drawings.json
and .md.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import shutil
from collections import defaultdict
from pathlib import Path

from PIL import Image, ImageDraw

from bench.dedup.family import NO_OVERLAP, patched
from bench.kit.eval_cli import run
from bench.kit.machine import machine_info
from bench.kit.neardup_family import HELDOUT_CATEGORIES, TUNING_CATEGORIES
from bench.kit.results import publish
from retrieval.dedup.run import DedupConfig, find_duplicates

TRUTH = Path(__file__).with_name("drawings_truth.json")
FOLDERS = {"tuning": ("signs_and_symbols", *TUNING_CATEGORIES), "heldout": HELDOUT_CATEGORIES}
MIN_PER_SUBJECT = 3
MAX_PER_SUBJECT = 8
MAX_DRAWINGS = 320
SIDE = 256


def subject(path: Path) -> str:
    """The first word of the name, lower case: `Matieres`, `apple`, `aiga`, ..."""
    words = re.findall(r"[A-Za-z]+?(?=[A-Z_\-0-9.]|$)", path.stem)
    return (words[0] if words else path.stem).lower()


def build(src: Path, out: Path, categories: tuple[str, ...]) -> dict[str, list[str]]:
    """Copy the drawings (flattened on white, long side SIDE) into out/images/<subject>/; {subject: [paths]}."""
    by_subject: dict[str, list[Path]] = defaultdict(list)
    for c in categories:
        for p in sorted((src / "clipart" / c).glob("*.png")):
            by_subject[f"{c}-{subject(p)}"].append(p)
    seen: set[str] = set()
    chosen: dict[str, list[str]] = {}
    total = 0
    for key in sorted(by_subject, key=lambda k: (-len(by_subject[k]), k)):
        files = []
        for p in by_subject[key]:
            digest = hashlib.sha256(p.read_bytes()).hexdigest()
            if digest not in seen:
                seen.add(digest)
                files.append(p)
        if len(files) < MIN_PER_SUBJECT or len(key.split("-", 1)[1]) < 3:
            continue
        files = files[:MAX_PER_SUBJECT]
        rel = []
        for p in files:
            im = Image.open(p).convert("RGBA")
            page = Image.new("RGBA", im.size, (255, 255, 255, 255))
            page.alpha_composite(im)
            page = page.convert("RGB")
            page.thumbnail((SIDE, SIDE), Image.LANCZOS)
            dst = out / "images" / key / p.name
            dst.parent.mkdir(parents=True, exist_ok=True)
            page.save(dst)
            rel.append(f"{key}/{p.name}")
        chosen[key] = rel
        total += len(rel)
        if total >= MAX_DRAWINGS:
            break
    return chosen


def sheet(images: Path, groups: list[list[str]], out: Path, side: int = 120) -> None:
    if not groups:
        return
    cols = max(len(g) for g in groups)
    im = Image.new("RGB", (cols * side, len(groups) * (side + 12)), "white")
    d = ImageDraw.Draw(im)
    for r, g in enumerate(groups):
        for c, p in enumerate(g):
            t = Image.open(images / p).convert("RGB")
            t.thumbnail((side - 4, side - 4))
            im.paste(t, (c * side + 2, r * (side + 12) + 2))
            d.text((c * side + 2, r * (side + 12) + side - 2), Path(p).name[:20], fill=(200, 0, 0))
    im.save(out)


def pair_kinds(groups: list[list[str]], truth: dict) -> dict[str, int]:
    """Pairs within the groups by kind ("true": one artwork, "ambiguous", "false") and "false_groups": the groups
    holding a false pair."""
    same = {f: i for i, s in enumerate(truth["artworks"]) for f in s}
    unsure = [set(s) for s in truth["ambiguous"]]
    out = {"true": 0, "ambiguous": 0, "false": 0, "false_groups": 0}
    for g in groups:
        wrong = 0
        for i, a in enumerate(g):
            for b in g[i + 1 :]:
                if a in same and same.get(b) == same[a]:
                    out["true"] += 1
                elif any(a in u and b in u for u in unsure):
                    out["ambiguous"] += 1
                else:
                    wrong += 1
        out["false"] += wrong
        out["false_groups"] += wrong > 0
    return out


def groups_of(index: Path, **constants: float) -> list[list[str]]:
    with patched(**constants):
        found = find_duplicates(DedupConfig(index=index)).groups
    return [[g.keep.path] + [d.record.path for d in g.duplicates] for g in found]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("src", type=Path)
    ap.add_argument("--model", type=Path, required=True, help="an encoder run (e.g. bench/dedup/family.py's WORK/run)")
    ap.add_argument("--work", type=Path, default=Path("/tmp/dedup-drawings"))
    ap.add_argument("--reuse", action="store_true", help="keep the folders and indexes a previous run made in WORK")
    a = ap.parse_args()
    truth = json.loads(TRUTH.read_text())
    result: dict = {"machine": machine_info(), "model": str(a.model), "folders": {}}
    for name, categories in FOLDERS.items():
        work = a.work / name
        index = work / "index"
        if a.reuse and (index / "CURRENT").exists():
            chosen = {d.name: [f"{d.name}/{f.name}" for f in sorted(d.iterdir())] for d in (work / "images").iterdir()}
        else:
            if work.exists():
                shutil.rmtree(work)
            chosen = build(a.src, work, categories)
            run("index", str(work / "images"), "--model", str(a.model), "--index", str(index))
        rows = {
            "default": groups_of(index),
            "without the overlap check": groups_of(index, **NO_OVERLAP),
        }
        no_verify = find_duplicates(DedupConfig(index=index, verify=False)).groups
        rows["no verification"] = [[g.keep.path] + [d.record.path for d in g.duplicates] for g in no_verify]
        sheet(work / "images", rows["default"], work / "groups.png")
        result["folders"][name] = {
            "drawings": sum(len(v) for v in chosen.values()),
            "subjects": len(chosen),
            "groups": {k: v for k, v in rows.items()},
            "pairs": {k: pair_kinds(v, truth) for k, v in rows.items()},
        }
        print(name, {k: pair_kinds(v, truth) for k, v in rows.items()}, flush=True)
    publish("dedup_drawings", result, markdown(result))


def markdown(r: dict) -> str:
    lines = [
        "## Distinct drawings of one subject or template (bench/dedup/drawings.py)",
        "",
        "`python -m bench.dedup.drawings ~/.cache/retrieval-datasets --model RUN [--reuse]` (RUN: the encoder "
        f"bench/dedup/family.py trained on its tuning folder) on {r['machine']['cpus']} CPU cores. Clip art grouped "
        f"by subject (the first word of the name within a category, {MIN_PER_SUBJECT} to {MAX_PER_SUBJECT} distinct "
        "drawings each): "
        "tuning = signs_and_symbols and the family's tuning categories, held out = its held-out categories. A pair "
        "within a group is true when bench/dedup/drawings_truth.json (read by eye) has both files as one artwork (a "
        "colour, black-and-white or card-style version), ambiguous when a person could not call it, else false; a "
        "false group holds a false pair. Cells: false groups / groups, then pairs false / true / ambiguous.",
        "",
        "| folder | drawings | subjects | default | without the overlap check | no verification |",
        "|---|---|---|---|---|---|",
    ]
    for name, f in r["folders"].items():
        cells = []
        for k in ("default", "without the overlap check", "no verification"):
            n = f["pairs"][k]
            groups = f"{n['false_groups']} / {len(f['groups'][k])} groups"
            cells.append(f"{groups}; pairs {n['false']} / {n['true']} / {n['ambiguous']}")
        lines.append(f"| {name} | {f['drawings']} | {f['subjects']} | " + " | ".join(cells) + " |")
    lines.append("")
    for name, f in r["folders"].items():
        lines.append(
            f"Groups at the default, {name}: " + ("; ".join(" + ".join(x) for x in f["groups"]["default"]) or "none")
        )
        lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
