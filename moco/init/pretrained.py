"""Named starting points for `--init`: the official MoCo ResNet-50 checkpoints, downloaded on request.

URLs and md5 prefixes are those published in the MoCo repository's README (facebookresearch/moco, "Models").
The repository publishes neither sha256 values nor file sizes: `sha256` below is filled once a value is
known; until then a download is checked by the size the server declares, the published md5 prefix, and by
loading it (weights_only, official key layout, ResNet-50 shapes) before use.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

from moco.init.download import DownloadError, download, file_digests
from plumbing.progress import Progress

logger = logging.getLogger(__name__)

WEIGHTS_DIR_ENV = "RETRIEVAL_WEIGHTS_DIR"
MOCO_LICENCE = (
    "MIT (the facebookresearch/moco LICENSE file since January 2023; that repository's README still says CC-BY-NC 4.0)"
)
_BASE = "https://dl.fbaipublicfiles.com/moco/moco_checkpoints"


@dataclass(frozen=True)
class Pretrained:
    name: str
    arch: str
    url: str
    md5_prefix: str  # as published
    sha256: str  # "" until known
    licence: str
    about: str


PRETRAINED = {
    p.name: p
    for p in (
        Pretrained(
            "moco-v1-200ep",
            "resnet50",
            f"{_BASE}/moco_v1_200ep/moco_v1_200ep_pretrain.pth.tar",
            "b251726a",
            "",
            MOCO_LICENCE,
            "MoCo v1, 200 ImageNet epochs, linear top-1 60.6",
        ),
        Pretrained(
            "moco-v2-200ep",
            "resnet50",
            f"{_BASE}/moco_v2_200ep/moco_v2_200ep_pretrain.pth.tar",
            "59fd9945",
            "",
            MOCO_LICENCE,
            "MoCo v2, 200 ImageNet epochs, linear top-1 67.7",
        ),
        Pretrained(
            "moco-v2-800ep",
            "resnet50",
            f"{_BASE}/moco_v2_800ep/moco_v2_800ep_pretrain.pth.tar",
            "a04e12f8",
            "",
            MOCO_LICENCE,
            "MoCo v2, 800 ImageNet epochs, linear top-1 71.1",
        ),
    )
}


def weights_dir() -> Path:
    """Where named checkpoints are kept: $RETRIEVAL_WEIGHTS_DIR, else $XDG_CACHE_HOME/retrieval/weights."""
    if os.environ.get(WEIGHTS_DIR_ENV):
        return Path(os.environ[WEIGHTS_DIR_ENV]).expanduser()
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache").expanduser()
    return cache / "retrieval" / "weights"


def cached_path(name: str) -> Path:
    return weights_dir() / PRETRAINED[name].url.rsplit("/", 1)[-1]


def is_downloaded(name: str) -> bool:
    return cached_path(name).is_file()


def fetch_pretrained(name: str, progress: Progress | None = None, timeout: float = 30.0) -> Path:
    """The local file of a named checkpoint, downloaded (resumably, verified) if it is not cached yet."""
    p = PRETRAINED[name]
    dest = cached_path(name)
    if dest.is_file():
        return dest
    try:
        download(p.url, dest, p.sha256, p.md5_prefix, progress, timeout)
    except DownloadError as e:
        raise DownloadError(
            f"{name}: cannot download ({e}); fetch {p.url} by hand and pass --init FILE, or save it as {dest}"
        ) from None
    if not p.sha256:
        logger.info("%s: sha256 %s (not yet recorded in moco/init/pretrained.py)", dest, file_digests(dest)[0])
    return dest


def resolve_init(source: str, progress: Progress | None = None) -> Path:
    """`--init` value -> a local path: a name above (downloaded if needed), else the path itself."""
    return fetch_pretrained(source, progress) if source in PRETRAINED else Path(source).expanduser()
