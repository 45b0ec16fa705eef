"""Fuzzing the image loader: mutated JPEG/PNG/WebP/GIF/TIFF/BMP bytes, truncations and header bombs fed to
`plumbing.images.load_image` and `image_size`. The only outcomes allowed are an RGB image or `BadImageError`
(the documented bad-file outcome); anything else is a crash, a case over `--timeout` seconds a hang.

The CI test (tests/reliability/test_fuzz_images.py) draws a few hundred cases with Hypothesis from the
same seeds and mutations; this script runs many more, seeded, and reports counts and the peak memory.

    python -m tests.reliability.fuzz_images [--cases 10000] [--seed 0] [--timeout 10]
"""

from __future__ import annotations

import argparse
import io
import json
import resource
import signal
import struct
import sys
import tempfile
import time
import zlib
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

FORMATS = ("JPEG", "PNG", "WEBP", "GIF", "TIFF", "BMP")
SUFFIX = {"JPEG": ".jpg", "PNG": ".png", "WEBP": ".webp", "GIF": ".gif", "TIFF": ".tif", "BMP": ".bmp"}
MUTATIONS = ("flip", "set", "truncate", "insert", "delete", "splice_header")


def seed_bytes(fmt: str, seed: int = 0) -> bytes:
    """A small, valid file of `fmt` (24 x 18, blocky colours; GIF with two frames, PNG with an alpha band)."""
    rng = np.random.default_rng(seed)
    a = np.kron(rng.integers(0, 256, (3, 4, 3), dtype=np.uint8), np.ones((6, 6, 1), np.uint8))  # (18, 24, 3)
    im = Image.fromarray(a)
    buf = io.BytesIO()
    if fmt == "PNG":
        im.putalpha(Image.fromarray(np.full((18, 24), 200, np.uint8)))
        im.save(buf, "PNG")
    elif fmt == "GIF":
        im.save(buf, "GIF", save_all=True, append_images=[im.rotate(90)], duration=50)
    else:
        im.save(buf, fmt)
    return buf.getvalue()


def header_bomb(fmt: str, width: int, height: int) -> bytes:
    """A tiny file whose header declares width x height: PNG (IHDR) or GIF (logical screen)."""
    if fmt == "PNG":

        def chunk(kind: bytes, data: bytes) -> bytes:
            crc = zlib.crc32(kind + data) & 0xFFFFFFFF
            return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

        ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
        return (
            b"\x89PNG\r\n\x1a\n"
            + chunk(b"IHDR", ihdr)
            + chunk(b"IDAT", zlib.compress(b"\0" * 64))
            + chunk(b"IEND", b"")
        )
    if fmt == "GIF":
        screen = struct.pack("<HHBBB", width, height, 0, 0, 0)
        frame = b"\x2c" + struct.pack("<HHHHB", 0, 0, width, height, 0) + b"\x02\x02\x44\x01\x00"
        return b"GIF89a" + screen + frame + b"\x3b"
    raise ValueError(f"no header bomb for {fmt}")


def mutate(data: bytes, ops: Sequence[tuple[str, int, int]]) -> bytes:
    """Apply (kind, position, value) edits in order; positions wrap around the current length."""
    b = bytearray(data)
    for kind, pos, value in ops:
        if not b:
            break
        i = pos % len(b)
        if kind == "flip":
            b[i] ^= 1 << (value % 8)
        elif kind == "set":
            b[i] = value % 256
        elif kind == "truncate":
            del b[i:]
        elif kind == "insert":
            b[i:i] = bytes([value % 256]) * (1 + value % 16)
        elif kind == "delete":
            del b[i : i + 1 + value % 16]
        elif kind == "splice_header":  # large numbers where sizes usually live (the first 32 bytes)
            j = pos % min(len(b), 32)
            b[j : j + 4] = struct.pack(">I", 0xFFFF0000 | value % 0xFFFF)
    return bytes(b)


class Hang(Exception):
    pass


def _alarm(signum: int, frame: object) -> None:
    raise Hang


def check_file(path: Path, timeout: float) -> str:
    """'ok', 'bad', 'hang' or 'crash: ...' for one file through load_image and image_size."""
    from plumbing.images import BadImageError, image_size, load_image

    signal.signal(signal.SIGALRM, _alarm)
    signal.setitimer(signal.ITIMER_REAL, timeout)
    try:
        im = load_image(path, min_side=32)
        if im.mode != "RGB" or min(im.size) < 1:
            return f"crash: load_image returned {im.mode} {im.size}"
        image_size(path)
        return "ok"
    except BadImageError:
        return "bad"
    except Hang:
        return "hang"
    except Exception as exc:  # the contract: nothing but BadImageError escapes
        return f"crash: {type(exc).__name__}: {exc}"
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)


def random_case(rng: np.random.Generator, seeds: dict[str, bytes]) -> tuple[str, bytes]:
    fmt = FORMATS[int(rng.integers(len(FORMATS)))]
    n = int(rng.integers(1, 6))
    ops = [
        (MUTATIONS[int(rng.integers(len(MUTATIONS)))], int(rng.integers(1 << 30)), int(rng.integers(1 << 16)))
        for _ in range(n)
    ]
    return fmt, mutate(seeds[fmt], ops)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cases", type=int, default=10_000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--timeout", type=float, default=10.0, help="seconds before a case counts as a hang")
    args = ap.parse_args(argv)

    seeds = {fmt: seed_bytes(fmt) for fmt in FORMATS}
    rng = np.random.default_rng(args.seed)
    outcomes: Counter[str] = Counter()
    crashes: list[str] = []
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="fuzz-images-") as tmp:
        extra = [("PNG", header_bomb("PNG", 100_000, 100_000)), ("GIF", header_bomb("GIF", 65_535, 65_535)),
                 ("PNG", b""), ("JPEG", seeds["PNG"])]  # fmt: skip
        for i in range(args.cases):
            fmt, data = extra[i] if i < len(extra) else random_case(rng, seeds)
            path = Path(tmp) / f"case{i % 97}{SUFFIX[fmt]}"
            path.write_bytes(data)
            outcome = check_file(path, args.timeout)
            outcomes["crash" if outcome.startswith("crash") else outcome] += 1
            if outcome.startswith("crash") and len(crashes) < 20:
                crashes.append(f"case {i} ({fmt}): {outcome}")
    seconds = time.perf_counter() - t0
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    summary = {"cases": args.cases, "seed": args.seed, **dict(outcomes), "seconds": round(seconds, 1),
               "peak_rss_mib": round(peak_mib)}  # fmt: skip
    print(json.dumps(summary))
    for line in crashes:
        print(line, file=sys.stderr)
    return 1 if outcomes["crash"] or outcomes["hang"] else 0


if __name__ == "__main__":
    sys.exit(main())
