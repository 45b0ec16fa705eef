"""Resumable HTTP download of one file: bytes go to `NAME.part` (continued with a Range request after an
interruption), the finished file is checked (declared size, sha256 and/or md5 prefix) and renamed into place
atomically, so `NAME` only ever exists complete and verified."""

from __future__ import annotations

import hashlib
import http.client
import os
import re
import urllib.error
import urllib.request
from pathlib import Path

from plumbing.atomic import fsync_dir
from plumbing.errors import InputError
from plumbing.progress import Progress, report

STAGE = "downloading"  # the Progress stage; done and total count bytes (total None when undeclared)
CHUNK = 1 << 20


class DownloadError(InputError):
    """A download failed or its file is not the expected one; the message is one line and names the URL."""


def download(
    url: str,
    dest: Path,
    sha256: str = "",
    md5_prefix: str = "",
    progress: Progress | None = None,
    timeout: float = 30.0,
) -> Path:
    """Fetch `url` into `dest` unless it is there already. A partial `dest.part` is continued, not restarted."""
    if dest.is_file():
        return dest
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise DownloadError(f"{dest.parent}: cannot create the download folder ({e.strerror or e})") from None
    part = dest.with_name(dest.name + ".part")
    total = _fetch_into(url, part, progress, timeout)
    size = part.stat().st_size
    if total is not None and size > total:  # not a prefix of this file: resuming it would never finish
        part.unlink()
        raise DownloadError(f"{url}: the partial download is larger than the file ({size} > {total}); deleted it")
    if total is not None and size != total:
        raise DownloadError(f"{url}: download stopped at {size} of {total} bytes; run again to resume")
    _verify(url, part, sha256, md5_prefix)
    with open(part, "rb+") as f:
        os.fsync(f.fileno())
    os.replace(part, dest)
    fsync_dir(dest.parent)
    return dest


def _fetch_into(url: str, part: Path, progress: Progress | None, timeout: float) -> int | None:
    """Append the missing bytes to `part`; returns the file's full size as the server declared it (or None)."""
    have = part.stat().st_size if part.is_file() else 0
    headers = {"User-Agent": "retrieval", **({"Range": f"bytes={have}-"} if have else {})}
    try:
        response = urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout)
    except urllib.error.HTTPError as e:
        if e.code == 416 and have:  # nothing past what we hold: the part is complete (its size is checked next)
            m = re.fullmatch(r"bytes \*/(\d+)", (e.headers.get("Content-Range") or "").strip())
            return int(m.group(1)) if m else None
        raise DownloadError(f"{url}: HTTP {e.code} {e.reason}") from None
    except (urllib.error.URLError, OSError, http.client.HTTPException) as e:
        reason = getattr(e, "reason", None) or e
        raise DownloadError(f"{url}: unreachable ({reason})") from None
    with response:
        total, start = _declared(response, have)
        if start not in (have, 0):
            part.unlink(missing_ok=True)
            raise DownloadError(f"{url}: the server sent bytes from {start}, not {have}; run again to start over")
        have = start  # 0 when the server ignored the range: start over
        done = have
        try:
            with open(part, "ab" if have else "wb") as f:
                report(progress, STAGE, done, total)
                while chunk := response.read(CHUNK):
                    f.write(chunk)
                    done += len(chunk)
                    report(progress, STAGE, done, total)
        except (OSError, http.client.HTTPException) as e:  # a dropped connection, a full disk: the part is kept
            raise DownloadError(f"{url}: download interrupted at {done} bytes ({e}); run again to resume") from None
    return total


def _declared(response: object, have: int) -> tuple[int | None, int]:
    """(full size, first byte sent) from a 206's Content-Range or a 200's Content-Length."""
    headers = response.headers  # type: ignore[attr-defined]
    if response.status == 206:  # type: ignore[attr-defined]
        m = re.fullmatch(r"bytes (\d+)-(\d+)/(\d+|\*)", headers.get("Content-Range", "").strip())
        if m:
            return (int(m.group(3)) if m.group(3) != "*" else None), int(m.group(1))
        return None, have
    length = headers.get("Content-Length")
    return (int(length) if length and length.isdigit() else None), 0


def _verify(url: str, part: Path, sha256: str, md5_prefix: str) -> None:
    """The digests asked for; a mismatch deletes the part, so the next try starts clean."""
    got_sha, got_md5 = file_digests(part)
    checks = (("sha256", sha256, got_sha), ("md5", md5_prefix, got_md5))
    for kind, want, got in checks:
        if want and not got.startswith(want.lower()):
            part.unlink()
            raise DownloadError(
                f"{url}: {kind} {got[: max(12, len(want))]} is not the expected {want}; the download was deleted"
            )


def file_digests(path: Path) -> tuple[str, str]:
    """(sha256, md5) of a file, hex."""
    h_sha, h_md5 = hashlib.sha256(), hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            h_sha.update(chunk)
            h_md5.update(chunk)
    return h_sha.hexdigest(), h_md5.hexdigest()
