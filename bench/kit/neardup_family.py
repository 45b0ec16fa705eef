"""A family of near-duplicate benchmark folders with known truth: photo sources kept apart, so that one
source stays out of all tuning (bench/dedup/family.py).

    python -m bench.kit.neardup_family ~/.cache/retrieval-datasets OUT_DIR [--seed 0]

Sources (the photos of ../shared/datasets/build.py, by package, and its clip art):
  tuning:   mate-backgrounds and ukui-wallpapers photos, clip art of TUNING_CATEGORIES
  held out: lomiri-wallpapers photos (all three releases), clip art of HELDOUT_CATEGORIES
Every constant of `retrieval dedup` is chosen on OUT_DIR/tuning; OUT_DIR/heldout only reports.

Each folder, OUT_DIR/{tuning,heldout}/:
  images/orig/*.jpg         originals (photos at long side PHOTO_SIDE, clip art at CLIPART_SIDE)
  images/copies/*.jpg       1-3 copies of each original, each with 1-3 edits of bench/kit/neardup_edits.py
                            (strengths drawn from ranges; jpeg quality drawn at save time)
  images/distractors/*      near but not duplicates: burst shots and other angles of photo originals,
                            simple drawings (shapes of one colour on another), nearly blank pictures,
                            other clip art
  truth.json                {"groups": [[relpath, ...]], "edits": {copy: [kind, ...]},
                             "distractors": {relpath: kind}}
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

from PIL import Image

from bench.kit.neardup_data import SKIP_PHOTOS, distinct_sources
from bench.kit.neardup_edits import EDITS, burst, drawing, near_blank, other_angle

PHOTO_SIDE = 512
CLIPART_SIDE = 256
TUNING_PHOTOS = ("mate-backgrounds-", "ukui-wallpapers-")
HELDOUT_PHOTOS = ("lomiri-wallpapers-",)
TUNING_CATEGORIES = ("animals", "people", "food", "plants", "transportation", "buildings", "recreation", "tools")
HELDOUT_CATEGORIES = ("geography", "office", "education", "electronics", "science", "containers", "special")
# per folder: (clip-art originals, clip-art distractors, drawings, nearly blank pictures)
SIZES = {"tuning": (40, 50, 30, 6), "heldout": (20, 30, 20, 4)}
BURST_SHARE = 0.35  # share of photo originals that get a burst-shot twin
ANGLE_SHARE = 0.25  # ... and a view from another angle


def _copy(im: Image.Image, rng: random.Random) -> tuple[Image.Image, list[str], int]:
    n = rng.choices((1, 2, 3), weights=(0.4, 0.35, 0.25))[0]
    kinds = rng.sample(sorted(EDITS), k=n)
    out = im
    for kind in kinds:
        out = EDITS[kind](out, rng)
    quality = rng.randint(20, 80) if "jpeg" in kinds else 90
    return out, kinds, quality


def build_folder(src: Path, out: Path, which: str, seed: int) -> dict:
    rng = random.Random(f"{which}-{seed}")
    for sub in ("orig", "copies", "distractors"):
        (out / "images" / sub).mkdir(parents=True, exist_ok=True)
    prefixes = TUNING_PHOTOS if which == "tuning" else HELDOUT_PHOTOS
    categories = TUNING_CATEGORIES if which == "tuning" else HELDOUT_CATEGORIES
    n_clip, n_clip_distractors, n_drawings, n_blank = SIZES[which]
    photos = [
        p
        for p in sorted((src / "photos").glob("*.jpg"))
        if p.name.startswith(prefixes) and not any(k in p.name for k in SKIP_PHOTOS)
    ]
    clip = sorted(p for c in categories for p in (src / "clipart" / c).glob("*.png"))
    rng.shuffle(clip)
    clip = distinct_sources(photos + clip[: 4 * (n_clip + n_clip_distractors)])[len(photos) :]
    groups: list[list[str]] = []
    edits: dict[str, list[str]] = {}
    distractors: dict[str, str] = {}

    def save(im: Image.Image, name: str, quality: int = 92) -> str:
        im.save(out / "images" / name, quality=quality)
        return name

    originals = [(p, PHOTO_SIDE, True) for p in photos] + [(p, CLIPART_SIDE, False) for p in clip[:n_clip]]
    for i, (p, side, is_photo) in enumerate(originals):
        im = Image.open(p).convert("RGB")
        im.thumbnail((2 * side, 2 * side), Image.LANCZOS)  # the scene a burst or another angle is cut from
        twin_kind = None
        if is_photo:
            u = rng.random()
            twin_kind = "burst" if u < BURST_SHARE else "other angle" if u < BURST_SHARE + ANGLE_SHARE else None
        if twin_kind is not None:
            im, twin = (burst if twin_kind == "burst" else other_angle)(im, rng)
            distractors[save(twin, f"distractors/{i:04d}-twin.jpg")] = twin_kind
        im.thumbnail((side, side), Image.LANCZOS)
        group = [save(im, f"orig/{i:04d}.jpg")]
        for c in range(rng.randint(1, 3)):
            copy, kinds, quality = _copy(im, rng)
            name = save(copy, f"copies/{i:04d}-{c}.jpg", quality)
            edits[name] = kinds
            group.append(name)
        groups.append(group)
    for j, p in enumerate(clip[n_clip : n_clip + n_clip_distractors]):
        im = Image.open(p).convert("RGB")
        im.thumbnail((CLIPART_SIDE, CLIPART_SIDE), Image.LANCZOS)
        distractors[save(im, f"distractors/clip-{j:04d}.jpg")] = "clip art"
    for j in range(n_drawings):
        distractors[save(drawing(rng), f"distractors/drawing-{j:04d}.png")] = "drawing"
    for j in range(n_blank):
        distractors[save(near_blank(rng), f"distractors/blank-{j:04d}.png")] = "nearly blank"
    truth = {"groups": groups, "edits": edits, "distractors": distractors}
    (out / "truth.json").write_text(json.dumps(truth, indent=1))
    return truth


def build(src: Path, out: Path, seed: int = 0) -> dict[str, dict]:
    return {which: build_folder(src, out / which, which, seed) for which in ("tuning", "heldout")}


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("src", type=Path)
    ap.add_argument("out", type=Path)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    for which, t in build(a.src, a.out, a.seed).items():
        n_files = len(t["groups"]) + len(t["edits"]) + len(t["distractors"])
        print(f"{which}: {n_files} files, {len(t['groups'])} originals, {len(t['edits'])} copies")
