"""The plan step of `index_folder` (retrieval.indexing.run): which files keep their row and vector, and which
must be decoded and embedded. The rules, cheapest first, are in retrieval.indexing.run's docstring."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

from plumbing.hashing import content_hash
from retrieval.indexing.generations import Generation
from retrieval.indexing.rows import Row, Todo

if TYPE_CHECKING:
    from retrieval.indexing.resume_cache import WorkCache

logger = logging.getLogger(__name__)


@dataclass
class Plan:
    """What `plan_files` decided for every image under the root."""

    rows: list[Row]  # files whose row is already known (unchanged, resumed, rehashed, stat failures)
    todo: list[Todo]  # files to decode and embed
    unchanged: int = 0
    stat_changed: int = 0  # unchanged bytes at the same path, but a new size/mtime (touched)
    rehashed: int = 0
    resumed: int = 0
    removed: int = 0


def _relpath(path: Path, root: Path) -> str:
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return Path(os.path.relpath(path, root)).as_posix()


def plan_files(root: Path, files: Sequence[Path], old: Generation | None, work: WorkCache, workers: int) -> Plan:
    old_ok = {r.path: r for r in old.records} if old else {}
    old_bad = {b.path: b for b in old.bad} if old else {}
    old_by_hash = {r.content_hash: r.id for r in old.records} if old else {}
    old_sizes = {r.size for r in old.records} if old else set()
    plan = Plan(rows=[], todo=[])
    candidates: list[Todo] = []
    seen: set[str] = set()

    for path in files:
        rel = _relpath(path, root)
        try:
            st = path.stat()
        except FileNotFoundError:
            logger.debug("%s vanished while indexing", path)
            continue
        except OSError as exc:
            seen.add(rel)
            plan.rows.append(Row(rel, 0, 0, None, error=f"cannot stat ({exc.strerror or exc})"))
            continue
        seen.add(rel)
        size, mtime_ns = st.st_size, st.st_mtime_ns
        rec = old_ok.get(rel)
        if rec is not None and rec.size == size and rec.mtime_ns == mtime_ns:
            assert old is not None
            plan.rows.append(
                Row(rel, size, mtime_ns, rec.content_hash, rec.width, rec.height, vector=old.vectors[rec.id])
            )
            plan.unchanged += 1
            continue
        b = old_bad.get(rel)
        if b is not None and b.size == size and b.mtime_ns == mtime_ns:
            plan.rows.append(Row(rel, size, mtime_ns, b.content_hash, error=b.error))
            plan.unchanged += 1
            continue
        cached = work.get(rel, size, mtime_ns)
        if cached is not None:
            plan.rows.append(cached)
            plan.resumed += 1
            continue
        candidates.append(Todo(str(path), rel, size, mtime_ns, None))

    # Hash the candidates that could be an indexed file under a new name or mtime (same size).
    to_hash = [c for c in candidates if c.size in old_sizes or c.size in work.sizes]
    hashes = _hash_files([c.abspath for c in to_hash], workers)
    known = dict(zip((c.abspath for c in to_hash), hashes, strict=True))
    for c in candidates:
        digest = known.get(c.abspath)
        if digest is not None and digest in old_by_hash:
            assert old is not None
            src = old.records[old_by_hash[digest]]
            plan.rows.append(Row(c.path, c.size, c.mtime_ns, digest, src.width, src.height, vector=old.vectors[src.id]))
            if src.path == c.path:
                plan.stat_changed += 1
                plan.unchanged += 1
            else:
                plan.rehashed += 1
            continue
        hit = work.by_hash(digest) if digest is not None else None
        if hit is not None:
            plan.rows.append(replace(hit, path=c.path, size=c.size, mtime_ns=c.mtime_ns))
            plan.resumed += 1
            continue
        plan.todo.append(replace(c, content_hash=digest))

    plan.removed = sum(1 for p in (*old_ok, *old_bad) if p not in seen)
    logger.info(
        "%d files: %d unchanged, %d reused by hash, %d resumed, %d to embed, %d removed",
        len(files),
        plan.unchanged,
        plan.rehashed,
        plan.resumed,
        len(plan.todo),
        plan.removed,
    )
    return plan


def _hash_files(paths: Sequence[str], workers: int) -> list[str | None]:
    def one(p: str) -> str | None:
        try:
            return content_hash(Path(p))
        except OSError:
            return None  # the decode step records why

    if not paths:
        return []
    with ThreadPoolExecutor(max(1, workers)) as pool:
        return list(pool.map(one, paths))
