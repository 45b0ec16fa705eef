"""Undo a small rotation that left fill-coloured corners (a picture rotated with its canvas expanded).

A rotated copy of a photo sits on a larger canvas whose four corners are triangles of one fill colour (black,
white, transparent made opaque). Its content touches each canvas edge at one point, and those four points
are the corners of the original picture. `straighten` finds them, checks that they form a rectangle tilted by
0.5 to 30 degrees with fill outside it (or a parallelogram close to one: a rotated copy whose width or height
was changed afterwards), and maps it back onto an upright rectangle. Anything else (an
upright photo, a drawing on a plain background, a frame) is returned unchanged. A tilted rectangular object
shot on a plain background (a book on a white table) is cut out and turned upright too; every copy of that
picture gets the same treatment, so its duplicates still match.
"""

from __future__ import annotations

import math

import numpy as np
from PIL import Image

FILL_TOLERANCE = 12  # grey levels a fill pixel may differ from the top-left corner's colour
ANALYSIS_SIDE = 256  # the corners are located on a copy at most this large
MIN_DEGREES, MAX_DEGREES = 0.5, 30.0  # tilts outside this range are left alone
SHAPE_TOLERANCE = 0.04  # of the longer side: how far the four contact points may be from a rectangle
MAX_SKEW = 0.25  # |cosine| of the parallelogram's corner angle (a rectangle: 0); a rotated picture whose
# width or height was changed afterwards is a parallelogram: up to about 14 degrees from square is accepted
MIN_OUTSIDE_FILL = 0.9  # share of the canvas outside the rectangle that must be fill colour
# each side of the rectangle moves in by INSET of its length, and at least by 2 analysis pixels (how closely the
# corners are located) plus 2 pixels of the picture (where picture and fill were blended)
INSET, MIN_INSET_ANALYSIS_PX, MIN_INSET_PX = 0.005, 2.0, 2.0
STRAIGHTEN_REVISION = 2  # bump whenever straighten turns pictures differently: part of the encoder identity
# (moco.export), so an index made with an earlier version asks for --rebuild instead of mixing vectors.
# 2: parallelograms (a rotated copy stretched afterwards) are straightened too


def _fill_runs(fill: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Length of the fill run entering the picture from the top and bottom (per column) and from the left
    and right (per row)."""

    def run(m: np.ndarray, axis: int) -> np.ndarray:
        content = ~m
        return np.where(content.any(axis=axis), content.argmax(axis=axis), m.shape[axis])

    return run(fill, 0), run(fill[::-1], 0), run(fill, 1), run(fill[:, ::-1], 1)


def _argmin(run: np.ndarray) -> int | None:
    """Where the content touches an edge (the run's first minimum), or None when it does not."""
    i = int(run.argmin())
    return i if run[i] <= 2 else None


def _fit(ts: np.ndarray, vs: np.ndarray) -> tuple[float, float] | None:
    """Least-squares line v = a t + b through the middle 80% of the points."""
    n = len(ts)
    keep = slice(n // 10, n - n // 10)
    if n - 2 * (n // 10) < 4:
        return None
    a, b = np.polyfit(ts[keep], vs[keep], 1)
    return float(a), float(b)


def _meet(shallow: tuple[float, float], steep: tuple[float, float]) -> np.ndarray | None:
    """Intersection of y = a x + b (a top or bottom edge) and x = c y + d (a left or right edge); None when
    the two lines are (nearly) parallel."""
    (a, b), (c, d) = shallow, steep
    if abs(1.0 - c * a) < 1e-6:
        return None
    x = (c * b + d) / (1.0 - c * a)
    return np.array([x, a * x + b])


def _inside(points: np.ndarray, quad: np.ndarray) -> np.ndarray:
    """Which (x, y) points lie inside the convex quad (corners in order around it, clockwise on screen)."""
    inside = np.ones(len(points), dtype=bool)
    for i in range(4):
        a, b = quad[i], quad[(i + 1) % 4]
        inside &= (b[0] - a[0]) * (points[:, 1] - a[1]) - (b[1] - a[1]) * (points[:, 0] - a[0]) >= 0
    return inside


def find_tilt(grey: np.ndarray, tolerance: int = FILL_TOLERANCE) -> tuple[np.ndarray, float] | None:
    """Corners (upper-left, upper-right, lower-right, lower-left; x, y in pixel-edge coordinates) of the
    tilted picture on a fill-cornered canvas, and its tilt in degrees (positive: counter-clockwise); None when
    the canvas does not look like a rotated picture."""
    g = grey.astype(np.int16)
    h, w = g.shape
    if h < 16 or w < 16:
        return None
    corner = g[0, 0]
    if np.any(np.abs(g[[0, 0, -1, -1], [0, -1, 0, -1]] - corner) > tolerance):
        return None
    fill = np.abs(g - corner) <= tolerance
    top, bottom, left, right = _fill_runs(fill)
    xt, xb, yl, yr = _argmin(top), _argmin(bottom), _argmin(left), _argmin(right)
    if xt is None or xb is None or yl is None or yr is None:
        return None
    xs, ys = np.arange(w) + 0.5, np.arange(h) + 0.5
    # each edge of the picture is the shallow part of one side's run profile
    if xt > w / 2:  # counter-clockwise: the top contact is the upper-right corner
        spans = (slice(0, xt), slice(0, yr), slice(xb + 1, w), slice(yl + 1, h))
    else:
        spans = (slice(xt + 1, w), slice(yr + 1, h), slice(0, xb), slice(0, yl))
    st, sr, sb, sl = spans
    edges = (
        _fit(xs[st], top[st].astype(float)),
        _fit(ys[sr], w - right[sr].astype(float)),
        _fit(xs[sb], h - bottom[sb].astype(float)),
        _fit(ys[sl], left[sl].astype(float)),
    )
    if any(e is None for e in edges):
        return None
    e_top, e_right, e_bottom, e_left = edges
    corners = [_meet(e_top, e_left), _meet(e_top, e_right), _meet(e_bottom, e_right), _meet(e_bottom, e_left)]
    if any(c is None for c in corners):
        return None
    quad = np.stack(corners)
    top_edge, left_edge = quad[1] - quad[0], quad[3] - quad[0]
    side = max(w, h)
    if np.linalg.norm(top_edge - (quad[2] - quad[3])) > SHAPE_TOLERANCE * side:
        return None  # not a parallelogram
    if abs(float(top_edge @ left_edge)) > MAX_SKEW * np.linalg.norm(top_edge) * np.linalg.norm(left_edge):
        return None  # too far from right-angled
    degrees = math.degrees(math.atan2(-top_edge[1], top_edge[0]))
    if not MIN_DEGREES <= abs(degrees) <= MAX_DEGREES:
        return None
    yy, xx = np.mgrid[0:h, 0:w]
    points = np.stack([xx.ravel() + 0.5, yy.ravel() + 0.5], axis=1)
    centre = quad.mean(axis=0)
    outside = ~_inside(points, centre + (quad - centre) * 1.03)  # the blended edge is left out of the test
    if outside.sum() < 0.002 * h * w or fill.ravel()[outside].mean() < MIN_OUTSIDE_FILL:
        return None
    return quad, degrees


def straighten(im: Image.Image, tolerance: int = FILL_TOLERANCE) -> Image.Image:
    """The upright picture inside a rotated canvas with fill-coloured corners; other pictures unchanged."""
    w, h = im.size
    scale = min(1.0, ANALYSIS_SIDE / max(w, h))
    grey = im.convert("L")
    if scale < 1.0:
        grey = grey.resize((max(1, round(w * scale)), max(1, round(h * scale))), Image.BILINEAR)
    found = find_tilt(np.asarray(grey), tolerance)
    if found is None:
        return im
    quad, _ = found
    quad = quad * np.array([w / grey.width, h / grey.height])
    ul, ur, lr, ll = quad
    across, down = (ur - ul) / np.linalg.norm(ur - ul), (ll - ul) / np.linalg.norm(ll - ul)
    least = MIN_INSET_ANALYSIS_PX * w / grey.width + MIN_INSET_PX
    dx = max(INSET * float(np.linalg.norm(ur - ul)), least) * across
    dy = max(INSET * float(np.linalg.norm(ll - ul)), least) * down
    ul, ur, lr, ll = ul + dx + dy, ur - dx + dy, lr - dx - dy, ll + dx - dy
    size = (max(1, round(float(np.linalg.norm(ur - ul)))), max(1, round(float(np.linalg.norm(ll - ul)))))
    data = tuple(float(v) for v in (*ul, *ll, *lr, *ur))
    return im.transform(size, Image.Transform.QUAD, data, resample=Image.BICUBIC)
