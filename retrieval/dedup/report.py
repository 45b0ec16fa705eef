"""A self-contained HTML page of duplicate groups: inline CSS, thumbnails embedded as base64 JPEG.

Each member shows why it joined its keeper (kind, score, the check that passed: `formats.why`) and its pixels,
bytes and date beside the keeper's; a member that joined on keypoints also shows the matched points drawn between
the two pictures (`draw_matches`, which the app's Duplicates tab uses too).

Open it straight from disk; it references no other file. A missing or unreadable image gets a
placeholder box. Pass `loader` to decode with the project's image loader (e.g. `images.load_image`).
"""

from __future__ import annotations

import base64
import html
import io
import logging
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageOps

from plumbing.filenames import printable
from retrieval.dedup.formats import file_facts, human_size, why
from retrieval.dedup.groups import BACKGROUND_RANK, Duplicate, Group, normalise_path
from retrieval.dedup.verify.keypoints import FEATURE_SIDE
from retrieval.records import FileRecord

log = logging.getLogger(__name__)

ImageLoader = Callable[[Path], Image.Image]

_CSS = """
body { font-family: system-ui, sans-serif; margin: 1.5rem; color: #222; background: #fafafa; }
h1 { font-size: 1.4rem; margin: 0 0 .3rem; }
.summary { color: #555; margin: 0 0 1.5rem; }
.group { background: #fff; border: 1px solid #ddd; border-radius: 6px; padding: .8rem; margin: 0 0 1rem; }
.group h2 { font-size: 1rem; margin: 0 0 .6rem; }
.members { display: flex; flex-wrap: wrap; gap: .8rem; align-items: flex-start; }
.member { margin: 0; width: var(--thumb); border: 3px solid transparent; border-radius: 4px; padding: 3px; }
.member.keep { border-color: #2a8a3e; background: #eef8f0; }
.member img, .placeholder { display: block; max-width: 100%; margin: 0 auto; }
.placeholder { width: 100%; height: calc(var(--thumb) * .66); background: #eee; color: #888;
  display: flex; align-items: center; justify-content: center; border: 1px dashed #bbb; }
figcaption { font-size: .8rem; margin-top: .3rem; word-break: break-all; }
.badge { display: inline-block; font-weight: 600; padding: 0 .35rem; border-radius: 3px; background: #ddd; }
.keep .badge { background: #2a8a3e; color: #fff; }
.meta { color: #666; display: block; }
.why { color: #345; display: block; font-style: italic; }
.matches { margin: .6rem 0 0; }
.matches img { max-width: 100%; }
"""

MATCH_COLOURS = ((230, 60, 40), (40, 140, 230), (40, 170, 70), (220, 160, 20), (160, 60, 200))
MAX_LINES = 60  # matched points drawn per pair at most (the first ones, as the fit listed them)


def draw_matches(a: Image.Image, b: Image.Image, matches: np.ndarray, side: int = FEATURE_SIDE) -> Image.Image:
    """The two pictures side by side, each scaled to `side` on its long side (where keypoints are found:
    `verify.keypoints`), with a line between each matched pair of points. `matches` (I, 4): xa, ya, xb, yb in
    those scaled pictures (`verify.rule.Evidence.matches`); a is drawn left."""
    pics = []
    for im in (a, b):
        im = im.convert("RGB")
        f = side / max(im.size)
        pics.append(im.resize((max(1, round(im.width * f)), max(1, round(im.height * f))), Image.Resampling.BILINEAR))
    gap = 8
    out = Image.new("RGB", (pics[0].width + gap + pics[1].width, max(p.height for p in pics)), (255, 255, 255))
    out.paste(pics[0], (0, 0))
    out.paste(pics[1], (pics[0].width + gap, 0))
    draw = ImageDraw.Draw(out)
    dx = pics[0].width + gap
    for n, (xa, ya, xb, yb) in enumerate(np.asarray(matches, dtype=np.float64)[:MAX_LINES].tolist()):
        colour = MATCH_COLOURS[n % len(MATCH_COLOURS)]
        draw.line([(xa, ya), (xb + dx, yb)], fill=colour, width=1)
        for x, y in ((xa, ya), (xb + dx, yb)):
            draw.ellipse([x - 2, y - 2, x + 2, y + 2], outline=colour)
    return out


def _jpeg_uri(im: Image.Image) -> str:
    buf = io.BytesIO()
    im.convert("RGB").save(buf, format="JPEG", quality=80)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _matches_figure(keep: Path, member: Duplicate, root: Path, loader: ImageLoader) -> str:
    """The matched points between keeper and member, or "" when the member did not join on keypoints or a
    picture cannot be read."""
    ev = member.evidence
    if ev is None or ev.matches is None or ev.check not in ("keypoints", "none") or len(ev.matches) == 0:
        return ""
    try:
        im = draw_matches(loader(keep), loader(root / normalise_path(member.record.path)), ev.matches)
    except Exception as e:  # an unreadable picture: no drawing, never a broken report
        log.debug("no match drawing for %s: %s", member.record.path, e)
        return ""
    path = html.escape(printable(member.record.path), quote=True)
    return (
        f'<figure class="matches"><img src="{_jpeg_uri(im)}" alt="matched points: keeper and {path}">'
        f"<figcaption>{len(ev.matches)} matched points: keeper (left) and {path} (right)</figcaption></figure>"
    )


def _open_image(path: Path) -> Image.Image:
    with Image.open(path) as im:
        im.load()
        return ImageOps.exif_transpose(im)


def thumbnail_data_uri(path: Path, size: int, loader: ImageLoader = _open_image) -> str | None:
    """A `data:image/jpeg;base64,...` thumbnail no larger than size x size, or None if unreadable."""
    try:
        im = loader(path)
        im = im.convert("RGB")
        im.thumbnail((size, size))
        buf = io.BytesIO()
        im.save(buf, format="JPEG", quality=80)
    except Exception as e:  # any decoder failure becomes a placeholder, never a broken report
        log.debug("no thumbnail for %s: %s", path, e)
        return None
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _figure(
    record: FileRecord,
    label: str,
    keep: bool,
    root: Path,
    thumb_size: int,
    loader: ImageLoader,
    reason: str = "",
) -> str:
    path = html.escape(printable(record.path), quote=True)
    uri = thumbnail_data_uri(root / normalise_path(record.path), thumb_size, loader)
    picture = f'<img src="{uri}" alt="{path}">' if uri else '<div class="placeholder">no preview</div>'
    meta = html.escape(file_facts(record)).replace(" · ", " &middot; ")
    note = f'<span class="why">{html.escape(reason)}</span>' if reason else ""
    css = "member keep" if keep else "member"
    return (
        f'<figure class="{css}">{picture}<figcaption><span class="badge">{label}</span> '
        f'<span class="path">{path}</span><span class="meta">{meta}</span>{note}</figcaption></figure>'
    )


def render_report(
    groups: Sequence[Group],
    root: Path,
    threshold: float | None,
    thumb_size: int = 256,
    *,
    loader: ImageLoader = _open_image,
    background_rank: int = BACKGROUND_RANK,
) -> str:
    """One HTML page: each group side by side, the keeper marked KEEP, each duplicate with its score. The
    header names the score the threshold applies to: the normalised score (`dedup.normalised_scores`)
    with `background_rank` r > 0, the cosine similarity with r = 0."""
    if thumb_size < 16:
        raise ValueError(f"thumb_size must be >= 16, got {thumb_size}")
    root = Path(root)
    exact_only = threshold is None
    score_name = f"normalised score (background: rank-{background_rank} neighbour)" if background_rank else "cosine"
    t_text = "exact duplicates only" if exact_only else f"{score_name} &ge; {threshold:.4f}"
    n_dups = sum(len(g.duplicates) for g in groups)
    n_bytes = sum(d.record.size for g in groups for d in g.duplicates)
    parts = [
        "<!doctype html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        "<title>Duplicate report</title>",
        f"<style>:root {{ --thumb: {thumb_size}px; }}{_CSS}</style>",
        "</head><body>",
        "<h1>Duplicate report</h1>",
        f'<p class="summary">{html.escape(printable(str(root)))} &middot; {t_text} &middot; {len(groups)} groups, '
        f"{n_dups} duplicates, {html.escape(human_size(n_bytes))} in duplicates</p>",
    ]
    if not groups:
        parts.append("<p>No duplicates found.</p>")
    for n, g in enumerate(groups, start=1):
        figures = [_figure(g.keep, "KEEP", True, root, thumb_size, loader)]
        drawings = []
        for d in g.duplicates:
            label = f"{d.score:.4f} {d.kind}" + ("" if d.alignment is None else f", aligned {d.alignment:.2f}")
            figures.append(_figure(d.record, label, False, root, thumb_size, loader, why(d)))
            drawings.append(_matches_figure(root / normalise_path(g.keep.path), d, root, loader))
        parts.append(
            f'<section class="group"><h2>Group {n} &middot; {len(figures)} files</h2>'
            f'<div class="members">{"".join(figures)}</div>{"".join(drawings)}</section>'
        )
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"
