"""Finding and decoding image files: the only place in the project that opens an image.

`load_image(path, min_side)` always returns a plain RGB image with EXIF orientation applied, or raises
`BadImageError` (an `InputError`) with a short reason. Nothing else escapes it, so callers can log the
file as bad and move on.
"""

from __future__ import annotations

import logging
import os
import stat
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import Image, ImageFile, UnidentifiedImageError

from plumbing.errors import InputError

logger = logging.getLogger(__name__)

MAX_PIXELS = 180_000_000  # width * height above this is refused (decompression bomb), read from the header
REDUCING_GAP = 3.0  # box-reduce by an integer factor first while the image stays >= 3x the target (Pillow's)
STRIP_PIXELS = 1 << 20  # a large image is converted and reduced in strips of about this many pixels
_GLOBAL_RANGE_MODES = frozenset({"I", "F"})  # converted with the whole image's value range, never in strips

_BASE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff"})
_ORIENTATION_TAG = 0x0112
_TRANSPOSE = {  # EXIF orientation -> the transpose that displays it upright (ImageOps.exif_transpose)
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
_SWAPS_SIDES = frozenset({5, 6, 7, 8})
_ALPHA_MODES = frozenset({"RGBA", "RGBa", "LA", "La", "PA"})
_HIGH_DEPTH_MODES = frozenset({"I;16", "I;16L", "I;16B", "I;16N", "I", "F"})
_WHITE = (255, 255, 255)


def _heif_extensions() -> frozenset[str]:
    """Register pillow-heif's opener when it is installed; return the extensions it adds."""
    try:
        from pillow_heif import register_heif_opener
    except (ImportError, OSError):
        return frozenset()
    register_heif_opener()
    return frozenset({".heic", ".heif"})


IMAGE_EXTENSIONS: frozenset[str] = _BASE_EXTENSIONS | _heif_extensions()
# what an uploaded file (the app) may be: the photo formats (JPEG includes MPO), never Pillow's rarer decoders
UPLOAD_FORMATS = ("JPEG", "PNG", "WEBP", "BMP", "GIF", "TIFF") + (("HEIF",) if ".heic" in IMAGE_EXTENSIONS else ())


class BadImageError(InputError):
    """A file that cannot be decoded as an image: corrupt, truncated, not an image, too large, unreadable."""

    def __init__(self, path: Path, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = Path(path)
        self.reason = reason


# --------------------------------------------------------------------------------------------- listing


@dataclass(frozen=True)
class SkippedFile:
    """A file with an image's name that `scan_images` left out, and why (for `bad_files.csv`)."""

    path: Path
    reason: str


def list_images(root: Path) -> list[Path]:
    """All image files under `root`, recursively and sorted (`scan_images` without the skipped files)."""
    return scan_images(root)[0]


def scan_images(root: Path) -> tuple[list[Path], list[SkippedFile]]:
    """All image files under `root`, recursively and sorted, and the files with an image's name left out.

    Hidden files and folders (name starts with '.') are skipped; symlinked folders are not followed
    (no loops). A symlinked file is listed unless it leads to a file listed already (then that file
    stands for both: one file is never its own duplicate); a dangling one, one to a folder, a pipe, device
    or socket, and an entry that cannot be read are left out with a warning, each a SkippedFile with the reason.
    """
    root = Path(root)
    if not root.exists():
        raise InputError(f"{root}: folder does not exist")
    if not root.is_dir():
        raise InputError(f"{root}: not a folder")
    skipped: list[SkippedFile] = []
    try:
        found, links = _scan(root, skipped)
    except OSError as exc:
        raise InputError(f"{root}: cannot read folder ({exc.strerror or exc})") from exc
    listed = _without_symlinked_twins(sorted(found), links, skipped)
    return listed, sorted(skipped, key=lambda s: s.path)


def _without_symlinked_twins(found: list[Path], links: set[Path], skipped: list[SkippedFile]) -> list[Path]:
    """Drop every symlink (of `links`) whose target is a listed regular file or the target of an earlier one."""
    if not links:
        return found
    owner: dict[tuple[int, int], Path] = {}
    for p in found:
        if p in links:
            continue
        try:
            st = p.stat()
        except OSError:
            continue
        owner.setdefault((st.st_dev, st.st_ino), p)
    dropped: set[Path] = set()
    for link in (p for p in found if p in links):
        try:
            st = link.stat()
        except OSError:
            continue  # vanished; the caller finds out
        key = (st.st_dev, st.st_ino)
        if key in owner:
            reason = f"a symbolic link to {owner[key]}, which is listed under its own name"
            logger.info("skipping %s: %s", link, reason)
            skipped.append(SkippedFile(link, reason))
            dropped.add(link)
        else:
            owner[key] = link
    return [p for p in found if p not in dropped]


def _scan(root: Path, skipped: list[SkippedFile]) -> tuple[list[Path], set[Path]]:
    """(image files, the symlinks among them); the entries with an image's name left out go to `skipped`."""
    found: list[Path] = []
    links: set[Path] = set()
    pending = [root]
    while pending:
        folder = pending.pop()
        try:
            with os.scandir(folder) as it:
                entries = list(it)
        except OSError as exc:
            if folder == root:
                raise
            logger.warning("skipping unreadable folder %s: %s", folder, exc.strerror or exc)
            continue
        for entry in entries:
            if entry.name.startswith("."):
                continue
            try:
                if entry.is_dir(follow_symlinks=False):
                    pending.append(Path(entry.path))
                elif _has_image_extension(entry.name):
                    if entry.is_file():
                        found.append(Path(entry.path))
                        if entry.is_symlink():
                            links.add(Path(entry.path))
                    elif entry.is_symlink():
                        target = os.readlink(entry.path)
                        why = "is missing" if not os.path.exists(entry.path) else "is not a file"
                        _skip(skipped, entry.path, f"a symbolic link whose target {target} {why}")
                    else:
                        _skip(skipped, entry.path, "not a regular file (a pipe, device or socket)")
            except OSError as exc:
                _skip(skipped, entry.path, str(exc.strerror or exc))
    return found, links


def _skip(skipped: list[SkippedFile], path: str, reason: str) -> None:
    logger.warning("skipping %s: %s", path, reason)
    skipped.append(SkippedFile(Path(path), reason))


def _has_image_extension(name: str) -> bool:
    return os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS


# --------------------------------------------------------------------------------------------- decoding


def load_image(path: Path, min_side: int | None = None, formats: Sequence[str] | None = None) -> Image.Image:
    """Decode `path` to an upright RGB image.

    With `min_side`, an image whose shorter side is longer than `min_side` is downscaled (aspect kept)
    so that its shorter side is `min_side`; JPEGs are decoded at 1/2..1/8 scale first (draft mode), other
    formats are converted and box-reduced strip by strip (`_shrink`), so beyond the decoded picture itself
    a large image costs memory for one strip, not for full-size RGB copies.
    Smaller images are never upscaled. With `formats` (Pillow format names, e.g. UPLOAD_FORMATS), any other
    format is refused, whatever the file name says. Raises BadImageError for anything that cannot be decoded.
    """
    if min_side is not None and min_side < 1:
        raise ValueError(f"Illegal min_side {min_side}: must be a positive number of pixels")
    path = Path(path)
    with _decoding(path, formats) as im:
        target = None if min_side is None else _target_size(im.size, min_side)
        if target is not None:
            _draft(im, target)
        im.load()
        orientation = _orientation(im)  # read after load: a plugin that turns the picture itself drops the tag
        rgb = _to_rgb(im) if target is None or im.size == target else _shrink(im, target)
        return _upright(rgb, orientation)


def image_size(path: Path) -> tuple[int, int]:
    """(width, height) as displayed, i.e. after EXIF orientation, read from the header only."""
    path = Path(path)
    with _decoding(path) as im:
        width, height = im.size
        if _orientation(im) in _SWAPS_SIDES and not _size_is_displayed(im):
            width, height = height, width
        return width, height


def _size_is_displayed(im: ImageFile.ImageFile) -> bool:
    """Whether the plugin already reports the displayed size (Pillow's TIFF plugin since 11: it turns the
    picture on load and keeps the stored size as `_tile_size`)."""
    stored = getattr(im, "_tile_size", None)
    return stored is not None and tuple(stored) != tuple(im.size)


@contextmanager
def _decoding(path: Path, formats: Sequence[str] | None = None) -> Iterator[ImageFile.ImageFile]:
    """Open `path` (header only) and check its size; any failure inside becomes a BadImageError."""
    try:
        with warnings.catch_warnings():
            # MAX_PIXELS is the limit that counts: silence Pillow's lower warning threshold
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            # Pillow's plugins warn about damage they work around ("Truncated File Read", "Corrupt EXIF
            # data"): the file then decodes or is a BadImageError, so those warnings are noise on the terminal
            warnings.filterwarnings("ignore", category=UserWarning, module=r"PIL\.")
            with _open_regular(path) as fp, Image.open(fp, formats=formats) as im:
                _check_size(path, im.size)
                yield im
    except BadImageError as exc:
        logger.debug("bad image %s", exc)
        raise
    except Exception as exc:  # Pillow plugins raise many types; the contract is one type out
        logger.debug("bad image %s: %r", path, exc)
        raise BadImageError(path, _reason(exc)) from exc


def _open_regular(path: Path) -> BinaryIO:
    """`path` opened for reading without ever blocking: opened non-blocking (a FIFO without a writer would hang
    an ordinary open) and refused unless it is a regular file with some bytes in it."""
    fp = open(path, "rb", opener=lambda name, flags: os.open(name, flags | getattr(os, "O_NONBLOCK", 0)))
    try:
        st = os.fstat(fp.fileno())
        if not stat.S_ISREG(st.st_mode):
            raise BadImageError(path, "not a regular file (a pipe, device or socket)")
        if st.st_size == 0:
            raise BadImageError(path, "empty file")
    except BaseException:
        fp.close()
        raise
    return fp


def _check_size(path: Path, size: tuple[int, int]) -> None:
    width, height = size
    if width <= 0 or height <= 0:
        raise BadImageError(path, f"zero-size image ({width}x{height})")
    if width * height > MAX_PIXELS:
        raise BadImageError(path, f"too many pixels ({width}x{height} > {MAX_PIXELS}), possible bomb")


def _reason(exc: BaseException) -> str:
    if isinstance(exc, FileNotFoundError):
        return "file does not exist"
    if isinstance(exc, PermissionError):
        return "permission denied"
    if isinstance(exc, IsADirectoryError):
        return "is a folder, not an image file"
    if isinstance(exc, Image.DecompressionBombError):
        return "too many pixels, possible decompression bomb"
    if isinstance(exc, UnidentifiedImageError):
        return "not an image, or an unsupported format"
    text = str(exc) or type(exc).__name__
    if "truncated" in text:
        return "truncated file"
    if len(text) > 80:
        text = text[:77] + "..."
    return f"corrupt or unreadable image ({text})"


def _orientation(im: Image.Image) -> int:
    """EXIF (or XMP) orientation 1..8; 1 when absent or unreadable (bad EXIF does not make a bad image)."""
    try:
        value = im.getexif().get(_ORIENTATION_TAG, 1)
        return value if isinstance(value, int) and value in _TRANSPOSE else 1
    except Exception as exc:  # malformed EXIF blocks raise anything from SyntaxError to struct.error
        logger.debug("ignoring unreadable EXIF in %s: %r", getattr(im, "filename", "?"), exc)
        return 1


def _upright(im: Image.Image, orientation: int) -> Image.Image:
    method = _TRANSPOSE.get(orientation)
    return im if method is None else im.transpose(method)


def _target_size(size: tuple[int, int], min_side: int) -> tuple[int, int] | None:
    """Size with the shorter side scaled down to min_side (aspect kept); None when already small enough."""
    width, height = size
    short = min(width, height)
    if short <= min_side:
        return None
    scale = min_side / short
    if width <= height:
        return min_side, max(min_side, round(height * scale))
    return max(min_side, round(width * scale)), min_side


def _draft(im: ImageFile.ImageFile, target: tuple[int, int]) -> None:
    """Let the JPEG decoder scale by 1/2..1/8 while staying >= target on both sides (a no-op elsewhere)."""
    if im.format in ("JPEG", "MPO"):
        im.draft("RGB", target)


def _shrink(im: Image.Image, target: tuple[int, int]) -> Image.Image:
    """RGB at `target`: the same pixels as `_to_rgb(im).resize(target, LANCZOS, reducing_gap=REDUCING_GAP)`,
    with the conversion and the integer box reduce done strip by strip (rows a multiple of the factor, so
    no reduce block straddles two strips) instead of on a full-size RGB copy."""
    width, height = im.size
    fx = int(width / target[0] / REDUCING_GAP) or 1
    fy = int(height / target[1] / REDUCING_GAP) or 1
    direct = im.mode == "RGB" and "transparency" not in im.info  # _to_rgb would not copy it anyway
    if (fx == 1 and fy == 1) or direct or im.mode in _GLOBAL_RANGE_MODES:
        return _to_rgb(im).resize(target, Image.Resampling.LANCZOS, reducing_gap=REDUCING_GAP)
    rows = max(fy, STRIP_PIXELS // width // fy * fy)
    reduced = Image.new("RGB", (-(-width // fx), -(-height // fy)))
    for top in range(0, height, rows):
        strip = _to_rgb(im.crop((0, top, width, min(height, top + rows))))
        reduced.paste(strip.reduce((fx, fy)), (0, top // fy))
    return reduced.resize(target, Image.Resampling.LANCZOS, box=(0, 0, width / fx, height / fy))


def _to_rgb(im: Image.Image) -> Image.Image:
    if im.mode in _HIGH_DEPTH_MODES:
        return _high_depth_to_rgb(im)
    if im.mode in _ALPHA_MODES or "transparency" in im.info:
        return _on_white(im.convert("RGBA"))
    if im.mode == "RGB":
        return im
    return im.convert("RGB")  # L, 1, P, CMYK (Adobe-inverted handled by the decoder), YCbCr, RGBX ...


def _on_white(rgba: Image.Image) -> Image.Image:
    """Composite onto white, so transparent areas look like a page, not a black hole."""
    out = Image.new("RGB", rgba.size, _WHITE)
    out.paste(rgba, mask=rgba.getchannel("A"))
    return out


def _high_depth_to_rgb(im: Image.Image) -> Image.Image:
    """16-bit / 32-bit int / float greyscale -> 8-bit, scaled (not clipped)."""
    a = np.asarray(im).astype(np.float64)  # (H, W)
    if im.mode.startswith("I;16"):
        a = a / 257.0  # 0..65535 -> 0..255
    elif im.mode == "I" and a.size and a.min() >= 0 and a.max() <= 65535:
        a = a / 257.0  # 16-bit data held in 32-bit ints, the usual case
    elif im.mode == "F" and a.size and np.nanmin(a) >= 0 and np.nanmax(a) <= 1:
        a = a * 255.0  # normalised float image
    else:
        a = _stretch(a)
    a = np.nan_to_num(a, nan=0.0)
    grey = Image.fromarray(np.clip(np.rint(a), 0, 255).astype(np.uint8))  # mode L
    return grey.convert("RGB")


def _stretch(a: np.ndarray) -> np.ndarray:
    """Min-max to 0..255, for value ranges with no conventional meaning."""
    finite = a[np.isfinite(a)]
    if finite.size == 0:
        return np.zeros_like(a)
    lo, hi = float(finite.min()), float(finite.max())
    if hi <= lo:
        return np.zeros_like(a)
    return (np.clip(a, lo, hi) - lo) * (255.0 / (hi - lo))
