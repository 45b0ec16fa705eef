"""Builds a near-duplicate benchmark folder with known truth from the real photos and clip art of
../shared/datasets/build.py.

    python -m bench.kit.neardup_data ~/.cache/retrieval-datasets OUT_DIR [--seed 0]

OUT_DIR/images/orig/*.jpg      originals (photos, plus clip-art originals)
OUT_DIR/images/copies/*.jpg    1-3 edited copies of each original (edits as real duplicates have them, at
                               light, medium and strong settings: JPEG re-encoding, resizing, crops,
                               borders/padding, aspect changes, text/logo overlays, grayscale, small
                               rotations, flips, brightness)
OUT_DIR/images/distractors/*   other clip art and photos that have no copy
OUT_DIR/truth.json             {"groups": [[relpath, ...], ...], "edits": {relpath: [edit, ...]}}

Photo families that are already duplicates in the source (the three Elephants renditions) enter once;
the four colour variants of the Ubuntu-MATE wallpaper enter once too (they are different pictures of
the same design, not copies).
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageEnhance, ImageOps

# clip-art categories of varied pictures; "shapes", "signs_and_symbols", "computer", "buttons" and the like
# hold many near-identical drawings (plain circles, arrows, icons) that would be duplicates of each other
CLIPART_CATEGORIES = (
    "animals",
    "people",
    "food",
    "plants",
    "transportation",
    "buildings",
    "recreation",
    "tools",
    "geography",
    "office",
    "education",
    "electronics",
    "science",
    "containers",
    "special",
)
SOURCE_SIMILARITY_LIMIT = 0.9  # a source picture this close (16 px grey thumbnail cosine) to another is dropped
SKIP_PHOTOS = ("Elephants_", "Ubuntu-Mate-Dark", "Ubuntu-Mate-Radioactive", "Ubuntu-Mate-Warm")
STRENGTHS = {"light": 0, "medium": 1, "strong": 2}


def edit(im: Image.Image, kind: str, s: int, rng: random.Random) -> Image.Image:
    w, h = im.size
    if kind == "jpeg":
        return im  # applied at save time through the quality setting
    if kind == "resize":
        f = (0.7, 0.5, 0.3)[s]
        return im.resize((max(16, int(w * f)), max(16, int(h * f))), Image.BICUBIC)
    if kind == "crop":
        f = (0.05, 0.12, 0.2)[s]
        dx, dy = int(w * f * rng.uniform(0.5, 1)), int(h * f * rng.uniform(0.5, 1))
        ox, oy = rng.randint(0, dx), rng.randint(0, dy)
        return im.crop((ox, oy, w - (dx - ox), h - (dy - oy)))
    if kind == "border":
        b = int(min(w, h) * (0.03, 0.08, 0.15)[s])
        return ImageOps.expand(im, border=b, fill=rng.choice([(0, 0, 0), (255, 255, 255), (40, 40, 40)]))
    if kind == "aspect":
        f = (0.9, 0.8, 0.65)[s]
        return im.resize((int(w * f), h), Image.BICUBIC) if rng.random() < 0.5 else im.resize((w, int(h * f)))
    if kind == "overlay":
        im = im.copy()
        d = ImageDraw.Draw(im)
        n = (1, 2, 4)[s]
        for _ in range(n):
            x, y = rng.uniform(0, 0.7) * w, rng.uniform(0, 0.85) * h
            if rng.random() < 0.5:
                d.rectangle([x, y, x + 0.2 * w, y + 0.08 * h], fill=tuple(rng.randint(0, 255) for _ in range(3)))
            else:
                d.text((x, y), "© SAMPLE TEXT 2024", fill=(255, 255, 255))
        return im
    if kind == "grayscale":
        return ImageOps.grayscale(im).convert("RGB")
    if kind == "rotate":
        return im.rotate((2, 5, 10)[s] * rng.choice([-1, 1]), resample=Image.BICUBIC, expand=True)
    if kind == "flip":
        return ImageOps.mirror(im)
    if kind == "brightness":
        return ImageEnhance.Brightness(im).enhance((1.15, 1.3, 1.5)[s] if rng.random() < 0.5 else (0.85, 0.7, 0.55)[s])
    raise ValueError(kind)


EDITS = ("jpeg", "resize", "crop", "border", "aspect", "overlay", "grayscale", "rotate", "flip", "brightness")


def _thumb(path: Path) -> np.ndarray | None:
    """16-px grey thumbnail, centred and unit length; None for a flat picture (a blank or fully transparent
    PNG), which has no content to compare and would make every blank source a byte-identical twin."""
    a = np.asarray(Image.open(path).convert("L").resize((16, 16), Image.BILINEAR), np.float32).ravel()
    a -= a.mean()
    norm = float(np.linalg.norm(a))
    return a / norm if norm > 1.0 else None


def distinct_sources(paths: list[Path]) -> list[Path]:
    """Keep paths in order, dropping flat pictures and any picture nearly identical to one kept before it
    (clip-art packages hold the same drawing under several names), so that the planted copies are the only
    duplicates."""
    kept: list[Path] = []
    thumbs: list[np.ndarray] = []
    for p in paths:
        t = _thumb(p)
        if t is None:
            continue
        if not thumbs or float(np.max(np.stack(thumbs) @ t)) < SOURCE_SIMILARITY_LIMIT:
            kept.append(p)
            thumbs.append(t)
    return kept


def build(src: Path, out: Path, seed: int = 0, n_clipart_orig: int = 160, n_distractors: int = 400) -> dict:
    rng = random.Random(seed)
    for sub in ("orig", "copies", "distractors"):
        (out / "images" / sub).mkdir(parents=True, exist_ok=True)
    photos = [p for p in sorted((src / "photos").glob("*.jpg")) if not any(k in p.name for k in SKIP_PHOTOS)]
    clip = sorted(p for c in CLIPART_CATEGORIES for p in (src / "clipart" / c).glob("*.png"))
    rng.shuffle(clip)
    clip = distinct_sources(photos + clip)[len(photos) :]
    originals = [(p, 1024) for p in photos] + [(p, 256) for p in clip[:n_clipart_orig]]
    distractors = clip[n_clipart_orig : n_clipart_orig + n_distractors]
    groups, edits_of = [], {}
    for i, (p, size) in enumerate(originals):
        im = Image.open(p).convert("RGB")
        im.thumbnail((size, size), Image.LANCZOS)
        name = f"orig/{i:04d}.jpg"
        im.save(out / "images" / name, quality=92)
        group = [name]
        for c in range(rng.randint(1, 3)):
            strength = rng.choice(list(STRENGTHS))
            kinds = rng.sample(EDITS, k=rng.randint(1, 3))
            e = im
            for kind in kinds:
                e = edit(e, kind, STRENGTHS[strength], rng)
            q = (85, 50, 25)[STRENGTHS[strength]] if "jpeg" in kinds else 90
            cname = f"copies/{i:04d}-{c}.jpg"
            e.save(out / "images" / cname, quality=q)
            edits_of[cname] = [f"{k}:{strength}" for k in kinds]
            group.append(cname)
        groups.append(group)
    for j, p in enumerate(distractors):
        im = Image.open(p).convert("RGB")
        im.save(out / "images" / "distractors" / f"{j:04d}.jpg", quality=92)
    truth = {"groups": groups, "edits": edits_of}
    (out / "truth.json").write_text(json.dumps(truth, indent=1))
    return truth


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("src", type=Path)
    ap.add_argument("out", type=Path)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    t = build(a.src, a.out, a.seed)
    print(f"{len(t['groups'])} originals, {len(t['edits'])} copies")
