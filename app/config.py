"""`retrieval app`: the one frozen config the CLI builds and `app.main` serves, with its defaults and checks."""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

from plumbing.errors import InputError

LOOPBACK_NAMES = frozenset({"localhost", "localhost.localdomain", "ip6-localhost"})


@dataclass(frozen=True)
class AppConfig:
    """The web app on the index at `index`. Served on `host`:`port` (loopback unless `auth` is given);
    `move_to` enables moving duplicates aside (as `retrieval dedup --move-to DIR --apply`)."""

    index: Path
    host: str = "127.0.0.1"
    port: int = 7860
    auth: tuple[str, str] | None = None  # (user, password)
    move_to: Path | None = None
    device: str = "auto"
    max_file_size: int = 25 * 1024 * 1024  # bytes of one upload
    concurrency: int = 2  # heavy handlers (encode, dedup, look-up) running at once, over all users
    thumb_size: int = 160  # longest side of the result thumbnails sent to the browser
    cache_sweep_s: int = 300  # every this often, uploads and thumbnails older than `cache_age_s` are deleted
    cache_age_s: int = 600

    def __post_init__(self) -> None:
        if not 0 < self.port < 65536:
            raise InputError(f"--port {self.port}: must be between 1 and 65535")
        if self.auth is not None and (not self.auth[0] or not self.auth[1]):
            raise InputError("--auth: give USER:PASS, both non-empty")
        if not is_loopback(self.host) and self.auth is None:
            raise InputError(
                f"--host {self.host}: serving beyond this machine needs --auth USER:PASS (your photos would be public)"
            )
        if self.max_file_size < 1 or self.concurrency < 1 or self.thumb_size < 16:
            raise InputError("max_file_size, concurrency and thumb_size must be positive (thumb_size >= 16)")

    @property
    def torch_threads(self) -> int:
        """Intra-op threads per heavy handler: the cores shared among the `concurrency` that run at once
        (more threads than cores makes every encode many times slower: bench/search/app_load.py)."""
        return max(1, (os.cpu_count() or 1) // self.concurrency)


def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and localhost: addresses only this machine can reach."""
    if host.lower() in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def parse_auth(text: str | None) -> tuple[str, str] | None:
    """ "USER:PASS" -> (user, password); the password may contain ':'."""
    if text is None:
        return None
    user, sep, password = text.partition(":")
    if not sep or not user or not password:
        raise InputError("--auth: expected USER:PASS")
    return user, password
