"""`retrieval search`: the library call that the CLI and the app share to look query images up in an index."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

from plumbing.hashing import content_hash
from plumbing.images import BadImageError, list_images, load_image
from retrieval.errors import InputError
from retrieval.searching.searcher import Hit, SearchIndex

if TYPE_CHECKING:
    from retrieval.embed import Embedder

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class SearchConfig:
    """`retrieval search`: look up each query image (files, or folders of images) in `index`."""

    queries: tuple[Path, ...]
    index: Path
    k: int = 10
    exclude_self: bool = False  # drop the query file itself (same path, or same bytes) from its results
    device: str = "auto"
    model: Path | None = None  # encoder folder; default: the one recorded in the index manifest
    batch_size: int = 32

    def __post_init__(self) -> None:
        if self.k < 1:
            raise ValueError(f"Illegal k {self.k}: must be >= 1")
        if self.batch_size < 1:
            raise ValueError(f"Illegal batch_size {self.batch_size}: must be >= 1")


@dataclass(frozen=True)
class QueryResult:
    """The hits for one query file; `hits[i].path` is absolute (index root joined), ready to open."""

    query: str
    hits: tuple[Hit, ...]


def expand_queries(queries: Sequence[Path]) -> list[tuple[Path, bool]]:
    """(path, named) pairs: files as given (named=True), folders replaced by the images inside them
    (named=False). InputError names a path that does not exist or a folder without images."""
    out: list[tuple[Path, bool]] = []
    for q in queries:
        q = Path(q)
        if q.is_dir():
            found = list_images(q)
            if not found:
                raise InputError(f"{q}: no images in this folder")
            out.extend((p, False) for p in found)
        elif q.is_file():
            out.append((q, True))
        elif q.exists():  # neither file nor folder: a FIFO, device or socket (stat only: never opened)
            raise InputError(f"{q}: not a regular file (a pipe, device or socket), so not an image")
        else:
            raise InputError(f"{q}: no such file or folder")
    if not out:
        raise InputError("no query images given")
    return out


def search_images(
    cfg: SearchConfig, *, index: SearchIndex | None = None, embedder: Embedder | None = None
) -> list[QueryResult]:
    """Top-k similar indexed images for each query file. `index` / `embedder` may be passed in to reuse
    ones already open (the app); by default both are loaded here.

    A query file named explicitly that cannot be decoded is an error (BadImageError, an InputError);
    undecodable files found inside a query folder are skipped with a warning."""
    from retrieval.embed import Embedder

    queries = expand_queries(cfg.queries)
    index = index if index is not None else SearchIndex.open(Path(cfg.index))
    if embedder is None:
        model = Path(cfg.model) if cfg.model is not None else Path(index.manifest.encoder_path)
        embedder = Embedder.load(model, device=cfg.device)
    index.check_encoder(embedder)

    results: list[QueryResult] = []
    for start in range(0, len(queries), cfg.batch_size):
        paths: list[Path] = []
        images = []
        for path, named in queries[start : start + cfg.batch_size]:
            try:
                images.append(load_image(path, min_side=embedder.min_side))
            except BadImageError as exc:
                if named:
                    raise
                logger.warning("skipping query %s", exc)
                continue
            paths.append(path)
        if not paths:
            continue
        Q = embedder.encode(images)  # (b, D)
        exclude = [_self_ids(index, p) for p in paths] if cfg.exclude_self else None
        for p, hits in zip(paths, index.search_vectors(Q, cfg.k, exclude), strict=True):
            hits = [replace(h, path=str(index.root / h.path)) for h in hits]
            results.append(QueryResult(str(p), tuple(hits)))
    if not results:
        raise InputError("none of the query images could be decoded")
    return results


def _self_ids(index: SearchIndex, path: Path) -> set[int]:
    """The query's own id: the indexed file at the same path, else indexed files with the same bytes."""
    own = index.id_for_path(Path(path).resolve())
    if own is not None:
        return {own}
    try:
        return set(index.ids_for_hash(content_hash(path)))
    except OSError:
        return set()


__all__ = ["SearchConfig", "QueryResult", "search_images", "expand_queries"]
