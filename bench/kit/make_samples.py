"""Rebuilds samples/ (the bundled demo images) from the folder made by ../shared/datasets/build.py.

    python -m bench.kit.make_samples ~/.cache/retrieval-datasets samples

40 wallpapers (longest side 800 px), 8 clip-art categories x 20 images, and 6 planted edited copies of
photos (so the demo's dedup has something to find). Sources and licences: samples/SOURCES.md.
"""

from __future__ import annotations

import sys
from pathlib import Path

from PIL import Image, ImageOps

CATEGORIES = ("animals", "buildings", "food", "plants", "transportation", "people", "tools", "electronics")


def main(src: Path, dst: Path) -> None:
    (dst / "photos").mkdir(parents=True, exist_ok=True)
    photos = sorted((src / "photos").glob("*.jpg"))
    for p in photos:
        im = Image.open(p).convert("RGB")
        im.thumbnail((800, 800), Image.LANCZOS)
        im.save(dst / "photos" / p.name, quality=85)
    for cat in CATEGORIES:
        (dst / "clipart" / cat).mkdir(parents=True, exist_ok=True)
        for p in sorted((src / "clipart" / cat).glob("*.png"))[:20]:
            im = Image.open(p).convert("RGB")
            im.thumbnail((160, 160), Image.LANCZOS)
            im.save(dst / "clipart" / cat / p.name, optimize=True)
    edited = dst / "photos" / "edited"
    edited.mkdir(exist_ok=True)
    for i, p in enumerate(photos[1:40:7]):
        im = Image.open(dst / "photos" / p.name)
        w, h = im.size
        if i % 3 == 0:
            im = im.crop((w // 10, h // 10, w - w // 10, h - h // 10))
        elif i % 3 == 1:
            im = ImageOps.expand(im.resize((w // 2, h // 2)), border=20, fill=(0, 0, 0))
        else:
            im = ImageOps.grayscale(im).convert("RGB")
        im.save(edited / f"copy-of-{p.stem}.jpg", quality=40)


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
