"""The edits a near-duplicate benchmark applies (bench/kit/neardup_family.py), each with its strength drawn from
a range, and the distractors that are near but not duplicates (burst shots, another angle, simple drawings,
nearly blank pictures).

Every function takes a PIL RGB image and a `random.Random` and returns a new RGB image.
"""

from __future__ import annotations

import random

import numpy as np
from PIL import Image, ImageDraw, ImageEnhance, ImageFont, ImageOps

WORDS = ("holiday", "best day ever", "© 2024 studio", "sample", "look at this", "friday", "#nofilter", "wow")


def _colour(rng: random.Random) -> tuple[int, int, int]:
    return tuple(rng.randint(0, 255) for _ in range(3))  # type: ignore[return-value]


def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    return ImageFont.load_default(size=max(8, size))


def perspective_coefficients(src: list[tuple[float, float]], dst: list[tuple[float, float]]) -> list[float]:
    """PIL's 8 PERSPECTIVE coefficients mapping output points `dst` to input points `src`."""
    a = []
    for (x, y), (u, v) in zip(dst, src, strict=True):
        a.append([x, y, 1, 0, 0, 0, -u * x, -u * y])
        a.append([0, 0, 0, x, y, 1, -v * x, -v * y])
    b = np.array([c for p in src for c in p], dtype=np.float64)
    return np.linalg.solve(np.array(a, dtype=np.float64), b).tolist()


def jpeg(im: Image.Image, rng: random.Random) -> Image.Image:
    return im  # applied when the copy is saved (the quality is drawn there)


def resize(im: Image.Image, rng: random.Random) -> Image.Image:
    f = rng.uniform(0.25, 0.8)
    return im.resize((max(24, int(im.width * f)), max(24, int(im.height * f))), Image.BICUBIC)


def rotate(im: Image.Image, rng: random.Random) -> Image.Image:
    """In-frame rotation by 1-15 degrees: the same canvas, the corners filled (black or white) or cut away
    (the largest rectangle of the same shape inside the rotated picture, scaled back to the frame)."""
    angle = rng.uniform(1, 15) * rng.choice((-1, 1))
    w, h = im.size
    if rng.random() < 0.5:
        return im.rotate(angle, resample=Image.BICUBIC, fillcolor=rng.choice(((0, 0, 0), (255, 255, 255))))
    t = np.radians(abs(angle))
    s = 1 / (np.cos(t) + max(w / h, h / w) * np.sin(t))
    r = im.rotate(angle, resample=Image.BICUBIC)
    cw, ch = w * s, h * s
    box = ((w - cw) / 2, (h - ch) / 2, (w + cw) / 2, (h + ch) / 2)
    return r.crop(tuple(int(round(v)) for v in box)).resize((w, h), Image.BICUBIC)


def crop(im: Image.Image, rng: random.Random) -> Image.Image:
    """A crop keeping 40-85% of the area, anywhere in the picture (off-centre), its shape changed a little."""
    w, h = im.size
    area = rng.uniform(0.4, 0.85)
    aspect = rng.uniform(0.8, 1.25)
    cw = min(w, int(w * np.sqrt(area * aspect)))
    ch = min(h, int(h * area / (cw / w)))
    x, y = rng.randint(0, w - cw), rng.randint(0, h - ch)
    return im.crop((x, y, x + cw, y + ch))


def caption(im: Image.Image, rng: random.Random) -> Image.Image:
    """A caption: a coloured band with text over the top or bottom 8-22%, or meme text on the picture."""
    im = im.copy()
    w, h = im.size
    d = ImageDraw.Draw(im)
    text = rng.choice(WORDS)
    bh = int(h * rng.uniform(0.08, 0.22))
    top = rng.random() < 0.5
    if rng.random() < 0.6:
        y0 = 0 if top else h - bh
        d.rectangle([0, y0, w, y0 + bh], fill=_colour(rng))
        d.text((w * 0.05, y0 + bh * 0.15), text, fill=_colour(rng), font=_font(int(bh * 0.6)))
    else:
        y0 = int(h * 0.04) if top else h - bh - int(h * 0.04)
        d.text((w * 0.08, y0), text.upper(), fill="white", font=_font(bh), stroke_width=2, stroke_fill="black")
    return im


def sticker(im: Image.Image, rng: random.Random) -> Image.Image:
    """1-3 stickers (filled circles, boxes, stars), each 10-25% of the short side."""
    im = im.copy()
    d = ImageDraw.Draw(im)
    side = min(im.size)
    for _ in range(rng.randint(1, 3)):
        r = side * rng.uniform(0.05, 0.125)
        x, y = rng.uniform(r, im.width - r), rng.uniform(r, im.height - r)
        shape = rng.choice(("circle", "box", "star"))
        if shape == "circle":
            d.ellipse([x - r, y - r, x + r, y + r], fill=_colour(rng), outline="white", width=max(1, int(r / 8)))
        elif shape == "box":
            d.rounded_rectangle([x - r, y - r * 0.6, x + r, y + r * 0.6], radius=r / 4, fill=_colour(rng))
        else:
            pts = [
                (
                    x + (r if k % 2 == 0 else r / 2.5) * np.cos(np.pi * k / 5),
                    y + (r if k % 2 == 0 else r / 2.5) * np.sin(np.pi * k / 5),
                )
                for k in range(10)
            ]
            d.polygon(pts, fill=_colour(rng))
    return im


def watermark(im: Image.Image, rng: random.Random) -> Image.Image:
    """Semi-transparent text: one large mark across the picture or a small logo in a corner."""
    base = im.convert("RGBA")
    layer = Image.new("RGBA", base.size, (0, 0, 0, 0))
    d = ImageDraw.Draw(layer)
    alpha = int(255 * rng.uniform(0.3, 0.6))
    w, h = base.size
    if rng.random() < 0.5:
        size = int(h * rng.uniform(0.1, 0.2))
        d.text((w * 0.1, h * rng.uniform(0.3, 0.6)), "WATERMARK", fill=(255, 255, 255, alpha), font=_font(size))
    else:
        s = int(min(w, h) * rng.uniform(0.12, 0.22))
        x = rng.choice((int(w * 0.03), w - s - int(w * 0.03)))
        y = rng.choice((int(h * 0.03), h - s - int(h * 0.03)))
        d.ellipse([x, y, x + s, y + s], fill=(*_colour(rng), alpha))
        d.text((x + s * 0.2, y + s * 0.3), "logo", fill=(255, 255, 255, alpha), font=_font(int(s * 0.35)))
    return Image.alpha_composite(base, layer).convert("RGB")


def screenshot(im: Image.Image, rng: random.Random) -> Image.Image:
    """The picture shown inside an app window or a phone screen: title bar, toolbar, side panel, status bar;
    the picture takes 45-85% of the screenshot's width."""
    frac = rng.uniform(0.45, 0.85)
    pw, ph = im.size
    W = int(pw / frac)
    top, bottom = int(W * rng.uniform(0.04, 0.1)), int(W * rng.uniform(0.02, 0.08))
    side = int((W - pw) * rng.uniform(0.2, 0.8))
    H = ph + top + bottom + int(W * rng.uniform(0.0, 0.1))
    dark = rng.random() < 0.5
    canvas = Image.new("RGB", (W, H), (32, 33, 36) if dark else (245, 245, 245))
    d = ImageDraw.Draw(canvas)
    d.rectangle([0, 0, W, top * 0.45], fill=(60, 64, 67) if dark else (222, 225, 230))
    for k in range(rng.randint(3, 6)):  # toolbar buttons
        x = int(W * 0.02) + k * int(top * 0.8)
        d.rounded_rectangle([x, top * 0.55, x + top * 0.55, top * 0.92], radius=3, fill=_colour(rng))
    for k in range(rng.randint(2, 8)):  # side panel lines
        y = top + k * max(8, int(ph * 0.08))
        d.rectangle([int(W * 0.01), y, max(int(W * 0.01) + 4, side - 6), y + 4], fill=(128, 128, 128))
    d.text((W * 0.02, H - bottom * 0.8), f"IMG_{rng.randint(1, 9999):04d}.jpg  100%", fill=(150, 150, 150))
    canvas.paste(im, (side, top))
    return canvas


def colour_filter(im: Image.Image, rng: random.Random) -> Image.Image:
    """One colour filter: sepia, a hue shift, more or less saturation and contrast, or a warm/cool tint."""
    kind = rng.choice(("sepia", "hue", "saturation", "contrast", "tint", "grayscale"))
    if kind == "sepia":
        g = np.asarray(im.convert("L"), dtype=np.float32)[..., None]
        out = g * np.array([1.07, 0.74, 0.43]) * rng.uniform(0.9, 1.1)
        return Image.fromarray(np.clip(out, 0, 255).astype(np.uint8))
    if kind == "hue":
        hsv = np.array(im.convert("HSV"), dtype=np.int16)
        hsv[..., 0] = (hsv[..., 0] + rng.randint(15, 60) * rng.choice((-1, 1))) % 256
        return Image.fromarray(hsv.astype(np.uint8), "HSV").convert("RGB")
    if kind == "saturation":
        return ImageEnhance.Color(im).enhance(rng.choice((rng.uniform(0.2, 0.6), rng.uniform(1.5, 2.5))))
    if kind == "contrast":
        im = ImageEnhance.Contrast(im).enhance(rng.uniform(0.5, 1.8))
        return ImageEnhance.Brightness(im).enhance(rng.uniform(0.7, 1.3))
    if kind == "grayscale":
        return ImageOps.grayscale(im).convert("RGB")
    gain = np.array([rng.uniform(0.75, 1.25) for _ in range(3)])
    return Image.fromarray(np.clip(np.asarray(im, dtype=np.float32) * gain, 0, 255).astype(np.uint8))


def perspective(im: Image.Image, rng: random.Random) -> Image.Image:
    """A keystone: each corner moved inwards by up to 3-12% of the side (a photo of a print or a screen)."""
    w, h = im.size
    m = rng.uniform(0.03, 0.12)
    dst = [(0, 0), (w, 0), (w, h), (0, h)]
    src = [(x + rng.uniform(-m, m) * w, y + rng.uniform(-m, m) * h) for x, y in dst]
    return im.transform((w, h), Image.PERSPECTIVE, perspective_coefficients(src, dst), Image.BICUBIC)


EDITS = {
    "jpeg": jpeg,
    "resize": resize,
    "rotate": rotate,
    "crop": crop,
    "caption": caption,
    "sticker": sticker,
    "watermark": watermark,
    "screenshot": screenshot,
    "colour": colour_filter,
    "perspective": perspective,
}


# ---------------------------------------------------------------------------------------------------
# Distractors: near but not duplicates


def window(im: Image.Image, centre: tuple[float, float], area: float) -> Image.Image:
    """The crop of `area` (share of the picture) around `centre` (fractions of width, height), kept inside."""
    w, h = im.size
    cw, ch = int(w * area**0.5), int(h * area**0.5)
    x = int(np.clip(centre[0] * w - cw / 2, 0, w - cw))
    y = int(np.clip(centre[1] * h - ch / 2, 0, h - ch))
    return im.crop((x, y, x + cw, y + ch))


def burst(scene: Image.Image, rng: random.Random) -> tuple[Image.Image, Image.Image]:
    """(original, burst shot): two windows of one large photo, the second shifted by 12-25% of the side
    and zoomed by up to 15%, its exposure a little different: the next frame of a burst, not a copy."""
    cx, cy = rng.uniform(0.4, 0.6), rng.uniform(0.4, 0.6)
    first = window(scene, (cx, cy), 0.55)
    shift = rng.uniform(0.12, 0.25)
    a = rng.uniform(0, 2 * np.pi)
    second = window(scene, (cx + shift * np.cos(a), cy + shift * np.sin(a)), 0.55 * rng.uniform(0.85, 1.15))
    second = ImageEnhance.Brightness(second).enhance(rng.uniform(0.9, 1.1))
    return first, second.resize(first.size, Image.BICUBIC)


def other_angle(scene: Image.Image, rng: random.Random) -> tuple[Image.Image, Image.Image]:
    """(original, the same scene from another angle): windows 20-35% apart, the second seen in perspective."""
    cx, cy = rng.uniform(0.4, 0.6), rng.uniform(0.4, 0.6)
    first = window(scene, (cx, cy), 0.5)
    shift = rng.uniform(0.2, 0.35)
    a = rng.uniform(0, 2 * np.pi)
    second = window(scene, (cx + shift * np.cos(a), cy + shift * np.sin(a)), 0.5 * rng.uniform(0.7, 1.0))
    w, h = second.size
    k = rng.uniform(0.1, 0.2)
    left = rng.random() < 0.5
    dst = [(0, 0), (w, 0), (w, h), (0, h)]
    src = [(0, k * h), (w, 0), (w, h), (0, h - k * h)] if left else [(0, 0), (w, k * h), (w, h - k * h), (0, h)]
    second = second.transform((w, h), Image.PERSPECTIVE, perspective_coefficients(src, dst), Image.BICUBIC)
    return first, second.resize(first.size, Image.BICUBIC)


def drawing(rng: random.Random, side: int = 256) -> Image.Image:
    """A simple drawing: 1-2 shapes of one colour on a plain background of another."""
    bg, fg = _colour(rng), _colour(rng)
    while sum(abs(a - b) for a, b in zip(bg, fg, strict=True)) < 200:
        fg = _colour(rng)
    im = Image.new("RGB", (side, side), bg)
    d = ImageDraw.Draw(im)
    for _ in range(rng.randint(1, 2)):
        r = side * rng.uniform(0.15, 0.35)
        x, y = rng.uniform(r, side - r), rng.uniform(r, side - r)
        shape = rng.choice(("circle", "square", "triangle", "ring", "bar"))
        if shape == "circle":
            d.ellipse([x - r, y - r, x + r, y + r], fill=fg)
        elif shape == "square":
            d.rectangle([x - r, y - r, x + r, y + r], fill=fg)
        elif shape == "triangle":
            d.polygon([(x, y - r), (x + r, y + r), (x - r, y + r)], fill=fg)
        elif shape == "ring":
            d.ellipse([x - r, y - r, x + r, y + r], outline=fg, width=max(2, int(r / 4)))
        else:
            d.rectangle([0, y - r / 4, side, y + r / 4], fill=fg)
    return im


def near_blank(rng: random.Random, side: int = 256) -> Image.Image:
    """A nearly blank picture (a white wallpaper, an empty clip-art page): white or light grey, with one to
    three faint small marks (so that no two are the same bytes)."""
    level = rng.choice((255, 250, 245, 238))
    im = Image.new("RGB", (side, side), (level, level, level))
    d = ImageDraw.Draw(im)
    for _ in range(rng.randint(1, 3)):
        r = side * rng.uniform(0.02, 0.06)
        x, y = rng.uniform(r, side - r), rng.uniform(r, side - r)
        tone = level - rng.randint(8, 40)
        d.ellipse([x - r, y - r, x + r, y + r], fill=(tone, tone, tone))
    return im
