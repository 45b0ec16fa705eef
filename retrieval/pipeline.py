"""The library API that the CLI and the app share: index a folder, search it.

`index_folder(IndexConfig)` is incremental. For every image under the root it decides, cheapest first:
  1. unchanged    same path, size and mtime as in the live generation -> keep its row and vector;
  2. resumed      embedded by an interrupted earlier run (the `work/` cache) -> take it from there;
  3. rehashed     changed size/mtime or a new path, but its bytes (sha256) are those of a file already
                  indexed (a touched, moved, renamed or copied file) -> reuse that vector;
  4. embedded     decoded on a thread pool and run through the encoder in batches.
Only files whose size equals that of an indexed file are hashed up front (no other file can match one);
the others are hashed by the decode workers, so a first run reads each file once.

Under `torchrun` (WORLD_SIZE > 1) rank 0 plans, every rank embeds its share of step 4, and rank 0 gathers
the results and writes the one index.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import sys
import time
import uuid
from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from moco.images import BadImageError, image_size, list_images, load_image
from retrieval.catalog import BadFile
from retrieval.errors import EncoderMismatchError, IndexError_, InputError
from retrieval.hashing import content_hash
from retrieval.index import (
    KINDS,
    WORK,
    Generation,
    build_index,
    choose_kind,
    current_generation,
    load_generation,
    remove_stale_generations,
    write_generation,
    write_lock,
)
from retrieval.records import FileRecord
from retrieval.search import Hit, SearchIndex

if TYPE_CHECKING:
    import torch

    from retrieval.embed import Embedder

logger = logging.getLogger(__name__)

FLUSH_ROWS = 1024  # embedded rows kept in memory before they are persisted to the work cache
FLUSH_SECONDS = 30.0  # ... or this long, whichever comes first


def _default_workers() -> int:
    return max(1, min(8, os.cpu_count() or 1))


# ============================================================================================ configs


@dataclass(frozen=True)
class IndexConfig:
    """`retrieval index`: embed the images under `images` with the encoder in `model` into `index`."""

    images: Path
    model: Path
    index: Path
    kind: str = "auto"  # auto | flat | hnsw | ivf | ivfpq
    rebuild: bool = False  # ignore the live generation (e.g. to switch encoders) and embed everything
    batch_size: int = 64
    workers: int = field(default_factory=_default_workers)  # decode threads; 0 = decode inline
    device: str = "auto"
    progress: bool = True  # tqdm bar on stderr

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown index kind {self.kind!r}: choose one of {', '.join(KINDS)}")
        if self.batch_size < 1:
            raise ValueError(f"Illegal batch_size {self.batch_size}: must be >= 1")
        if self.workers < 0:
            raise ValueError(f"Illegal workers {self.workers}: must be >= 0")


@dataclass(frozen=True)
class IndexReport:
    """What one `index_folder` run did."""

    index: Path
    generation: str
    root: Path
    ok: int  # files in the index
    bad: int  # files recorded as undecodable
    embedded: int  # files run through the encoder by this run (under torchrun: all ranks on rank 0,
    #               the rank's own share on the others)
    unchanged: int  # kept from the previous generation as they were
    rehashed: int  # changed stat or new path, same bytes as an indexed file: vector reused
    resumed: int  # taken from an interrupted earlier run
    removed: int  # gone from the folder since the previous generation
    written: bool  # False when nothing changed and the live generation was kept
    kind: str
    params: dict[str, int]
    recall_at_10: float | None
    seconds: float
    images_per_second: float  # embedding throughput of this run (0 when nothing was embedded)


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


# ============================================================================================ indexing


@dataclass
class _Row:
    """One file of the generation being assembled. `vector` is a row of the old or the new vectors."""

    path: str
    size: int
    mtime_ns: int
    content_hash: str | None
    width: int = 0
    height: int = 0
    error: str | None = None  # None: ok
    vector: np.ndarray | None = None


@dataclass(frozen=True)
class _Todo:
    abspath: str
    path: str  # relative, POSIX
    size: int
    mtime_ns: int
    content_hash: str | None  # known when it was hashed while planning


@dataclass(frozen=True)
class _Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    owns_group: bool = False


def index_folder(cfg: IndexConfig) -> IndexReport:
    """Build or update the index of `cfg.images`. See the module docstring for the incremental rules."""
    dist = _init_distributed(cfg.device)
    try:
        if dist.rank == 0:
            with contextlib.ExitStack() as held:
                return _index_rank0(cfg, dist, held)
        return _index_follower(cfg, dist)
    finally:
        if dist.owns_group:
            import torch.distributed as tdist

            tdist.destroy_process_group()


def _index_rank0(cfg: IndexConfig, dist: _Dist, held: contextlib.ExitStack) -> IndexReport:
    t0 = time.perf_counter()
    index_dir = Path(cfg.index)
    plan: _Plan | None = None
    error: str | None = None
    try:
        root = Path(cfg.images).expanduser().resolve()
        files = list_images(root)
        if not files:
            raise InputError(f"{root}: no images found (is the disk mounted?); the index was left as it was")
        held.enter_context(write_lock(index_dir))  # held until the new generation is live
        embedder = _load_embedder(cfg.model, cfg.device, dist)
        old = _load_previous(index_dir, embedder, cfg)
        work = _WorkCache(index_dir / WORK, embedder.sha256, embedder.dim, dist.rank)
        plan = _plan(root, files, old, work, cfg.workers)
    except BaseException as exc:
        error = str(exc) or type(exc).__name__
        raise
    finally:
        if dist.world > 1:  # followers wait for the plan (or for the news that there is none)
            _broadcast((error, plan.todo if plan is not None else None))

    mine = plan.todo[dist.rank :: dist.world]
    t_embed = time.perf_counter()
    fresh = _embed_all(mine, embedder, cfg, work, progress=cfg.progress)
    t_embed = time.perf_counter() - t_embed
    if dist.world > 1:
        gathered = _gather(fresh, dist)
        fresh = [row for part in gathered for row in part]
    n_embedded = sum(1 for r in fresh if r.error is None)

    rows = plan.rows + fresh
    ok = sorted((r for r in rows if r.error is None), key=lambda r: r.path)
    bad = sorted((r for r in rows if r.error is not None), key=lambda r: r.path)
    kind = choose_kind(len(ok), embedder.dim) if cfg.kind == "auto" else cfg.kind
    changed = (
        old is None
        or bool(fresh)
        or plan.rehashed
        or plan.resumed
        or plan.removed
        or plan.stat_changed
        or str(root) != old.manifest.root
        or kind != old.manifest.kind
        or str(Path(cfg.model).resolve()) != old.manifest.encoder_path
    )
    if not changed:
        assert old is not None
        m = old.manifest
        logger.info("nothing changed under %s; keeping %s", root, m.generation)
        work.remove()
        return IndexReport(
            index=index_dir,
            generation=m.generation,
            root=root,
            ok=m.n_ok,
            bad=m.n_bad,
            embedded=0,
            unchanged=plan.unchanged,
            rehashed=0,
            resumed=0,
            removed=0,
            written=False,
            kind=m.kind,
            params=dict(m.params),
            recall_at_10=m.recall_at_10,
            seconds=time.perf_counter() - t0,
            images_per_second=0.0,
        )

    records = [
        FileRecord(i, r.path, r.size, r.mtime_ns, r.content_hash or "", r.width, r.height) for i, r in enumerate(ok)
    ]
    bad_files = [
        BadFile(len(ok) + i, r.path, r.size, r.mtime_ns, r.content_hash, r.error or "") for i, r in enumerate(bad)
    ]
    vectors = np.zeros((len(ok), embedder.dim), dtype=np.float32)  # (n_ok, d)
    for i, r in enumerate(ok):
        vectors[i] = r.vector
    logger.info("building %s index over %d vectors", cfg.kind if cfg.kind != "auto" else kind, len(ok))
    built = build_index(vectors, kind)
    manifest = write_generation(
        index_dir,
        root=root,
        encoder_sha256=embedder.sha256,
        encoder_path=str(Path(cfg.model).resolve()),
        records=records,
        bad=bad_files,
        vectors=vectors,
        built=built,
    )
    work.remove()
    seconds = time.perf_counter() - t0
    report = IndexReport(
        index=index_dir,
        generation=manifest.generation,
        root=root,
        ok=manifest.n_ok,
        bad=manifest.n_bad,
        embedded=n_embedded,
        unchanged=plan.unchanged,
        rehashed=plan.rehashed,
        resumed=plan.resumed,
        removed=plan.removed,
        written=True,
        kind=manifest.kind,
        params=dict(manifest.params),
        recall_at_10=manifest.recall_at_10,
        seconds=seconds,
        images_per_second=(len(plan.todo) / t_embed) if plan.todo and t_embed > 0 else 0.0,
    )
    logger.info(
        "%s: %d ok, %d bad (%d embedded, %d unchanged, %d reused by hash, %d resumed, %d removed)",
        manifest.generation,
        report.ok,
        report.bad,
        report.embedded,
        report.unchanged,
        report.rehashed,
        report.resumed,
        report.removed,
    )
    return report


def _index_follower(cfg: IndexConfig, dist: _Dist) -> IndexReport:
    """Rank > 0 under torchrun: embed this rank's share of rank 0's plan and send it back."""
    t0 = time.perf_counter()
    embedder = _load_embedder(cfg.model, cfg.device, dist)
    error, todo = _broadcast(None)
    if error is not None:
        raise InputError(error)
    mine = todo[dist.rank :: dist.world]
    work = _WorkCache(Path(cfg.index) / WORK, embedder.sha256, embedder.dim, dist.rank, create=False)
    fresh = _embed_all(mine, embedder, cfg, work, progress=False)
    seconds = time.perf_counter() - t0
    _gather(fresh, dist)
    return IndexReport(
        index=Path(cfg.index),
        generation="",
        root=Path(cfg.images),
        ok=0,
        bad=0,
        embedded=sum(1 for r in fresh if r.error is None),
        unchanged=0,
        rehashed=0,
        resumed=0,
        removed=0,
        written=False,
        kind="",
        params={},
        recall_at_10=None,
        seconds=seconds,
        images_per_second=len(mine) / seconds if mine and seconds > 0 else 0.0,
    )


def _load_embedder(model: Path, device: str, dist: _Dist) -> Embedder:
    from retrieval.embed import Embedder

    # Under torchrun on CUDA, _init_distributed has made cuda:LOCAL_RANK the current device, which is
    # where "cuda" / "auto" put the model.
    return Embedder.load(Path(model), device=device)


def _load_previous(index_dir: Path, embedder: Embedder, cfg: IndexConfig) -> Generation | None:
    """The live generation to update, or None (none yet, or --rebuild)."""
    if cfg.rebuild:
        remove_stale_generations(index_dir)
        return None
    if current_generation(index_dir) is None:
        return None
    try:
        old = load_generation(index_dir, load_index=False)
    except IndexError_ as exc:
        raise IndexError_(f"{exc}; rerun with --rebuild to index from scratch") from exc
    if old.manifest.encoder_sha256 != embedder.sha256:
        raise EncoderMismatchError(
            f"{index_dir}: built with encoder {old.manifest.encoder_sha256[:12]}"
            f" ({old.manifest.encoder_path}),"
            f" not {cfg.model} ({embedder.sha256[:12]}); pass --rebuild to re-embed everything"
        )
    remove_stale_generations(index_dir)
    return old


# -------------------------------------------------------------------------------------------- planning


@dataclass
class _Plan:
    rows: list[_Row]  # files whose row is already known (unchanged, resumed, rehashed, stat failures)
    todo: list[_Todo]  # files to decode and embed
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


def _plan(root: Path, files: Sequence[Path], old: Generation | None, work: _WorkCache, workers: int) -> _Plan:
    old_ok = {r.path: r for r in old.records} if old else {}
    old_bad = {b.path: b for b in old.bad} if old else {}
    old_by_hash = {r.content_hash: r.id for r in old.records} if old else {}
    old_sizes = {r.size for r in old.records} if old else set()
    plan = _Plan(rows=[], todo=[])
    candidates: list[_Todo] = []
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
            plan.rows.append(_Row(rel, 0, 0, None, error=f"cannot stat ({exc.strerror or exc})"))
            continue
        seen.add(rel)
        size, mtime_ns = st.st_size, st.st_mtime_ns
        rec = old_ok.get(rel)
        if rec is not None and rec.size == size and rec.mtime_ns == mtime_ns:
            assert old is not None
            plan.rows.append(
                _Row(rel, size, mtime_ns, rec.content_hash, rec.width, rec.height, vector=old.vectors[rec.id])
            )
            plan.unchanged += 1
            continue
        b = old_bad.get(rel)
        if b is not None and b.size == size and b.mtime_ns == mtime_ns:
            plan.rows.append(_Row(rel, size, mtime_ns, b.content_hash, error=b.error))
            plan.unchanged += 1
            continue
        cached = work.get(rel, size, mtime_ns)
        if cached is not None:
            plan.rows.append(cached)
            plan.resumed += 1
            continue
        candidates.append(_Todo(str(path), rel, size, mtime_ns, None))

    # Hash the candidates that could be an indexed file under a new name or mtime (same size).
    to_hash = [c for c in candidates if c.size in old_sizes or c.size in work.sizes]
    hashes = _hash_files([c.abspath for c in to_hash], workers)
    known = dict(zip((c.abspath for c in to_hash), hashes, strict=True))
    for c in candidates:
        digest = known.get(c.abspath)
        if digest is not None and digest in old_by_hash:
            assert old is not None
            src = old.records[old_by_hash[digest]]
            plan.rows.append(
                _Row(c.path, c.size, c.mtime_ns, digest, src.width, src.height, vector=old.vectors[src.id])
            )
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


# -------------------------------------------------------------------------------------------- embedding


@dataclass
class _Decoded:
    todo: _Todo
    content_hash: str | None = None
    width: int = 0
    height: int = 0
    x: torch.Tensor | None = None  # (3, H, W)
    error: str | None = None


def _decode(todo: _Todo, embedder: Embedder) -> _Decoded:
    """Runs on a worker thread: hash (if not yet known), read the size, decode, preprocess."""
    out = _Decoded(todo)
    path = Path(todo.abspath)
    try:
        out.content_hash = todo.content_hash or content_hash(path)
        out.width, out.height = image_size(path)
        img = load_image(path, min_side=embedder.min_side)
        out.x = embedder.preprocess(img)
    except BadImageError as exc:
        out.error = exc.reason
    except OSError as exc:
        out.error = f"unreadable ({exc.strerror or exc})"
    except Exception as exc:  # a preprocessing failure on one odd image must not stop the run
        logger.debug("preprocessing %s failed: %r", path, exc)
        out.error = f"preprocessing failed ({type(exc).__name__}: {exc})"
    return out


def _decoded_stream(todo: Sequence[_Todo], embedder: Embedder, workers: int, window: int) -> Iterator[_Decoded]:
    """Decode in order on `workers` threads, at most `window` files ahead of the consumer."""
    if workers == 0:
        for t in todo:
            yield _decode(t, embedder)
        return
    with ThreadPoolExecutor(workers, thread_name_prefix="decode") as pool:
        pending: deque[Future[_Decoded]] = deque()
        it = iter(todo)
        try:
            for t in it:
                pending.append(pool.submit(_decode, t, embedder))
                if len(pending) >= window:
                    break
            while pending:
                done = pending.popleft().result()
                nxt = next(it, None)
                if nxt is not None:
                    pending.append(pool.submit(_decode, nxt, embedder))
                yield done
        finally:
            for f in pending:
                f.cancel()


def _embed_all(
    todo: Sequence[_Todo], embedder: Embedder, cfg: IndexConfig, work: _WorkCache, *, progress: bool
) -> list[_Row]:
    """Decode (threads) overlapping the batched forward (this thread); persist results as they come."""
    if not todo:
        return []
    import torch
    from tqdm import tqdm

    rows: list[_Row] = []
    batch: list[_Decoded] = []
    unsaved: list[_Row] = []
    last_flush = time.monotonic()
    window = max(2 * cfg.batch_size, 4 * max(cfg.workers, 1))
    bar = tqdm(total=len(todo), unit="img", desc="embedding", file=sys.stderr, disable=not progress, dynamic_ncols=True)

    pin = embedder.device.type == "cuda"

    def forward() -> None:
        x = torch.stack([d.x for d in batch])  # (B, 3, H, W)
        if pin:
            x = x.pin_memory()  # lets the copy to the GPU run asynchronously
        z = embedder.encode_tensors(x)  # (B, D) float32, L2-normalised
        for d, v in zip(batch, z, strict=True):
            t = d.todo
            row = _Row(t.path, t.size, t.mtime_ns, d.content_hash, d.width, d.height, vector=v)
            rows.append(row)
            unsaved.append(row)
        bar.update(len(batch))
        batch.clear()

    stream = _decoded_stream(todo, embedder, cfg.workers, window)
    try:
        for d in stream:
            if d.error is not None:
                logger.warning("skipping %s: %s", d.todo.abspath, d.error)
                t = d.todo
                row = _Row(t.path, t.size, t.mtime_ns, d.content_hash, error=d.error)
                rows.append(row)
                unsaved.append(row)
                bar.update(1)
            else:
                batch.append(d)
                if len(batch) == cfg.batch_size:
                    forward()
            if len(unsaved) >= FLUSH_ROWS or time.monotonic() - last_flush > FLUSH_SECONDS:
                work.save(unsaved)
                unsaved.clear()
                last_flush = time.monotonic()
        if batch:
            forward()
    finally:
        stream.close()  # cancel decodes still queued, wait for those running
        bar.close()
        work.save(unsaved)  # also on Ctrl-C or an error: the next run resumes from here
    return rows


# -------------------------------------------------------------------------------------------- work cache


class _WorkCache:
    """Rows embedded by a run that has not finished yet, in `work/` beside the generations.

    Each flush is one `.npz` shard (written to a temp name, then renamed), keyed by (path, size, mtime).
    Shards from another encoder are dropped. The folder is removed once a generation is live."""

    def __init__(self, folder: Path, encoder_sha256: str, dim: int, rank: int, *, create: bool = True) -> None:
        self.folder = folder
        self.encoder_sha256 = encoder_sha256
        self.dim = dim
        self.rank = rank
        self._rows: dict[tuple[str, int, int], _Row] = {}
        self._by_hash: dict[str, _Row] = {}
        self.sizes: set[int] = set()
        if create:
            self._open()

    def _open(self) -> None:
        meta_path = self.folder / "meta.json"
        meta = {"encoder_sha256": self.encoder_sha256, "dim": self.dim}
        try:
            found = json.loads(meta_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            found = None
        if found != meta:
            if self.folder.exists():
                logger.info("discarding the work cache of another encoder in %s", self.folder)
                shutil.rmtree(self.folder, ignore_errors=True)
            self.folder.mkdir(parents=True, exist_ok=True)
            meta_path.write_text(json.dumps(meta), encoding="utf-8")
            return
        for shard in sorted(self.folder.glob("*.npz")):
            try:
                for row in _read_shard(shard, self.dim):
                    self._rows[(row.path, row.size, row.mtime_ns)] = row
                    if row.error is None and row.content_hash:
                        self._by_hash[row.content_hash] = row
                        self.sizes.add(row.size)
            except (OSError, ValueError, KeyError) as exc:
                logger.warning("ignoring unreadable work shard %s: %s", shard, exc)
        if self._rows:
            logger.info("resuming: %d files already embedded by an interrupted run", len(self._rows))

    def get(self, path: str, size: int, mtime_ns: int) -> _Row | None:
        return self._rows.get((path, size, mtime_ns))

    def by_hash(self, digest: str) -> _Row | None:
        return self._by_hash.get(digest)

    def save(self, rows: Sequence[_Row]) -> None:
        if not rows:
            return
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            name = f"r{self.rank}-{time.time_ns()}-{uuid.uuid4().hex[:8]}.npz"
            tmp = self.folder / (name + ".tmp")
            vectors = np.zeros((len(rows), self.dim), dtype=np.float32)  # (m, d), zero rows for bad files
            for i, r in enumerate(rows):
                if r.vector is not None:
                    vectors[i] = r.vector
            with open(tmp, "wb") as f:
                np.savez(
                    f,
                    paths=np.array([r.path for r in rows], dtype=str),
                    sizes=np.array([r.size for r in rows], dtype=np.int64),
                    mtimes=np.array([r.mtime_ns for r in rows], dtype=np.int64),
                    hashes=np.array([r.content_hash or "" for r in rows], dtype=str),
                    widths=np.array([r.width for r in rows], dtype=np.int64),
                    heights=np.array([r.height for r in rows], dtype=np.int64),
                    errors=np.array([r.error or "" for r in rows], dtype=str),
                    ok=np.array([r.error is None for r in rows], dtype=bool),
                    vectors=vectors,
                )
            os.replace(tmp, self.folder / name)
        except OSError as exc:  # the cache only saves time; never fail a run over it
            logger.warning("could not save resume data to %s: %s", self.folder, exc)

    def remove(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)


def _read_shard(path: Path, dim: int) -> list[_Row]:
    with np.load(path, allow_pickle=False) as z:
        vectors = z["vectors"]
        if vectors.ndim != 2 or vectors.shape[1] != dim:
            raise ValueError(f"vectors of shape {vectors.shape}")
        rows = []
        for i in range(vectors.shape[0]):
            ok = bool(z["ok"][i])
            rows.append(
                _Row(
                    path=str(z["paths"][i]),
                    size=int(z["sizes"][i]),
                    mtime_ns=int(z["mtimes"][i]),
                    content_hash=str(z["hashes"][i]) or None,
                    width=int(z["widths"][i]),
                    height=int(z["heights"][i]),
                    error=None if ok else str(z["errors"][i]),
                    vector=vectors[i].copy() if ok else None,
                )
            )
        return rows


# -------------------------------------------------------------------------------------------- distributed


def _init_distributed(device: str) -> _Dist:
    """Join the torchrun process group when WORLD_SIZE > 1 (gloo on CPU, nccl on CUDA)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return _Dist()
    import torch
    import torch.distributed as tdist

    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if tdist.is_initialized():
        return _Dist(tdist.get_rank(), tdist.get_world_size(), local_rank, owns_group=False)
    use_cuda = device in ("auto", "cuda") and torch.cuda.is_available()
    if use_cuda:
        torch.cuda.set_device(local_rank)
    tdist.init_process_group(backend="nccl" if use_cuda else "gloo")
    logger.debug("rank %d of %d joined (%s)", tdist.get_rank(), world, tdist.get_backend())
    return _Dist(tdist.get_rank(), tdist.get_world_size(), local_rank, owns_group=True)


def _broadcast(obj: Any) -> Any:
    import torch.distributed as tdist

    box = [obj]
    tdist.broadcast_object_list(box, src=0)
    return box[0]


def _gather(rows: list[_Row], dist: _Dist) -> list[list[_Row]]:
    import torch.distributed as tdist

    out: list[list[_Row]] | None = [[] for _ in range(dist.world)] if dist.rank == 0 else None
    tdist.gather_object(rows, out, dst=0)
    return out or []


# ============================================================================================ search


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


__all__ = [
    "IndexConfig",
    "IndexReport",
    "SearchConfig",
    "QueryResult",
    "index_folder",
    "search_images",
    "expand_queries",
]


# ============================================================================================ dedup
# `retrieval dedup` / `retrieval undo`: duplicate groups over a built index, and safe moves (retrieval.moves).

import datetime as _dt  # noqa: E402
import math  # noqa: E402
from functools import partial  # noqa: E402

from retrieval.dedup import (  # noqa: E402
    BACKGROUND_RANK,
    DEFAULT_KEEPER_KEYS,
    THRESHOLD_PRESETS,
    Group,
    KeeperRule,
    calibration_histogram,
    find_groups,
    normalised_scores,
    resolve_threshold,
)
from retrieval.index import HNSW_EF_SEARCH, apply_search_params, searcher  # noqa: E402
from retrieval.moves import MovePlan, MoveReport, UndoReport, apply_moves, plan_moves, undo_moves  # noqa: E402
from retrieval.near_pairs import search_width  # noqa: E402

CALIBRATION_BINS = 20
UNDO_LOG_PREFIX = "undo-"
DEDUP_PROBES = 1000  # probe queries used to tune an approximate index's search parameter for dedup
# Share of probes whose neighbour at the threshold must come back. Per direction: find_groups searches a
# pair from both of its files, so a pair is missed only when neither finds the other; on planted pairs in
# 1M random 128-d vectors (IVF), 0.96 one way gave 0.99 either way (bench/dedup_scale.py).
DEDUP_PROBE_RECALL = 0.95
_DEDUP_BATCH = 4096


@dataclass(frozen=True)
class DedupConfig:
    """`retrieval dedup`: duplicate groups in the folder indexed at `index`; optionally move them aside.

    `threshold` is a preset name (see `dedup.THRESHOLD_PRESETS`; "exact" = identical bytes only) or a
    score in (-1, 1]: with `background_rank` r > 0 (the default) the cosine normalised against each
    image's r-th nearest neighbour (`dedup.normalised_scores`: 0 = as close as that, 1 = identical),
    with r = 0 the plain cosine similarity. `keeper` orders the keys that choose the copy to keep.
    Without `move_to` nothing is planned; with `move_to` and not `apply` the moves are planned (a dry
    run); with `apply` they are made and logged for `undo`. `calibrate` only measures each file's
    nearest-neighbour score (no groups, no moves). `k` neighbours are searched per file.
    """

    index: Path
    threshold: str = "default"
    keeper: tuple[str, ...] = DEFAULT_KEEPER_KEYS
    move_to: Path | None = None
    apply: bool = False
    calibrate: bool = False
    k: int = 32
    background_rank: int = BACKGROUND_RANK

    def __post_init__(self) -> None:
        object.__setattr__(self, "keeper", tuple(self.keeper))
        self.threshold_value  # noqa: B018  (validates: InputError for an unknown preset or a bad number)
        self.keeper_rule  # noqa: B018  (validates the keys)
        if self.k < 1:
            raise InputError(f"Illegal k {self.k}: must be >= 1")
        if self.background_rank < 0:
            raise InputError(f"Illegal background_rank {self.background_rank}: must be >= 0")
        if self.apply and self.move_to is None:
            raise InputError("apply needs a move-to folder (--move-to DIR): duplicates are moved, never deleted")
        if self.apply and self.calibrate:
            raise InputError("calibrate only measures similarities; it cannot be combined with apply")

    @property
    def threshold_value(self) -> float | None:
        """The score threshold; None means exact (same bytes) duplicates only."""
        return resolve_threshold(self.threshold)

    @property
    def keeper_rule(self) -> KeeperRule:
        return KeeperRule(self.keeper)


@dataclass(frozen=True)
class DedupResult:
    """What one `find_duplicates` run found (and did). Paths in `groups` are relative to `root`."""

    index: Path
    root: Path
    n_files: int
    threshold: float | None  # None: exact duplicates only
    background_rank: int  # 0: scores are cosines; r: normalised against the r-th nearest neighbour
    groups: tuple[Group, ...]
    histogram: tuple[tuple[float, float, int], ...] | None = None  # (low, high, count); with calibrate
    plan: MovePlan | None = None  # with move_to: the moves planned (a dry run unless `moved` is set)
    moved: MoveReport | None = None  # with apply: the moves made, and the undo log
    seconds: float = 0.0

    @property
    def n_duplicates(self) -> int:
        return sum(len(g.duplicates) for g in self.groups)

    @property
    def dry_run(self) -> bool:
        return self.moved is None


@dataclass(frozen=True)
class _Candidates:
    """What `dedup.find_groups` needs of an index (d, ntotal, search), for a searcher that lacks `d`
    (the exactly re-ranked IVF-PQ searcher)."""

    inner: Any
    d: int

    @property
    def ntotal(self) -> int:
        return int(self.inner.ntotal)

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        return self.inner.search(queries, k)


def _candidate_index(index: SearchIndex) -> Any | None:
    """The index dedup searches for neighbours: None for flat (dedup builds an exact one over one copy of
    each distinct file), else the loaded approximate index (IVF-PQ re-ranked exactly from the vectors)."""
    kind = index.manifest.kind
    if kind == "flat" or len(index) == 0:
        return None
    found = searcher(index.index, kind, index.manifest.params, index.vectors)
    return found if hasattr(found, "d") else _Candidates(found, index.dim)


def _without_self(D: np.ndarray, I: np.ndarray, first: int) -> tuple[np.ndarray, np.ndarray]:  # noqa: E741
    """Drop each query row's own id from its results (the farthest result where it did not come back)."""
    b, kk = I.shape
    own = I == np.arange(first, first + b)[:, None]  # (B, kk)
    own[~own.any(axis=1), -1] = True
    return D[~own].reshape(b, kk - 1), I[~own].reshape(b, kk - 1)


def _probe_recall(search: Any, probes: np.ndarray, targets: np.ndarray, k: int) -> float:
    """Share of probes whose target row is among the k results."""
    _, I = search.search(probes, k)  # noqa: E741  (P, k)
    return float((I == targets[:, None]).any(axis=1).mean())


def _finer(values: Sequence[int]) -> tuple[int, ...]:
    """Search-parameter values with a 1.5x step between doublings (16, 24, 32, 48, ...): the k-NN pass of
    dedup costs about linearly in efSearch / nprobe, so stopping at 24 rather than 32 saves a quarter."""
    out: list[int] = []
    for a, b in zip(values, values[1:], strict=False):
        out.append(a)
        if a < a + a // 2 < b:
            out.append(a + a // 2)
    return (*out, *values[-1:])


def tune_for_threshold(
    index: SearchIndex, threshold: float, k: int, background_rank: int = BACKGROUND_RANK, seed: int = 0
) -> dict[str, int]:
    """Set (in memory) the smallest efSearch / nprobe at which an approximate index finds the neighbours
    dedup needs; return the parameter chosen ({} for flat, whose search is exact).

    The index's own parameter is tuned for recall@10 of *any* neighbour; dedup only needs neighbours whose
    score reaches the threshold, often far fewer. Probes: sampled rows moved to exactly the cosine at which
    a pair scores `threshold` (for normalised scores: b + t (1 - b), b the row's background, measured with
    the index's own parameter), the hardest pair dedup must find; the parameter is the smallest whose results,
    as many as find_groups first asks for (`near_pairs.search_width`), hold the original row for
    DEDUP_PROBE_RECALL of the probes, at most the index's own (which
    is tuned for recall@10 >= 0.95; dedup never searches harder than search does).
    """
    kind, params = index.manifest.kind, index.manifest.params
    n = len(index)
    if kind not in ("hnsw", "ivf", "ivfpq") or n < 2:
        return {}
    rng = np.random.default_rng(seed)
    rows = np.sort(rng.choice(n, size=min(n, DEDUP_PROBES), replace=False))  # (P,)
    v = np.asarray(index.vectors[rows], dtype=np.float32)  # (P, D)
    search = searcher(index.index, kind, params, index.vectors)
    t = float(np.clip(threshold, -1.0, 1.0))
    cos = np.full(rows.size, t, dtype=np.float32)  # (P,) cosine of the probe to its row
    if background_rank > 0:
        kb = min(n, background_rank + 1)
        D, I = search.search(v, kb)  # noqa: E741  (P, kb) at the index's own (recall-tuned) parameter
        own = I == rows[:, None]
        own[~own.any(axis=1), -1] = True
        b = np.nan_to_num(D[~own].reshape(rows.size, kb - 1)[:, -1], nan=0.0, neginf=0.0)  # (P,)
        cos = np.clip(b + t * (1.0 - b), -1.0, 1.0).astype(np.float32)
    noise = rng.standard_normal(v.shape).astype(np.float32)  # (P, D)
    noise -= np.einsum("pd,pd->p", noise, v)[:, None] * v  # orthogonal to v
    noise /= np.maximum(np.linalg.norm(noise, axis=1, keepdims=True), 1e-12)
    probes = np.ascontiguousarray(cos[:, None] * v + np.sqrt(1.0 - cos**2)[:, None] * noise)  # (P, D)
    if kind == "hnsw":
        name, values = "efSearch", _finer(HNSW_EF_SEARCH)
    else:
        nlist = int(params.get("nlist", 1))
        name = "nprobe"
        values = _finer(tuple(p for p in (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024) if p < nlist) + (nlist,))
    own_value = int(params.get(name, values[-1]))
    kk = min(n, search_width(k, background_rank, t) + 1)  # as deep as find_groups searches first
    value, recall = own_value, -1.0
    for v_try in (*(x for x in values if x < own_value), own_value):
        apply_search_params(index.index, kind, {name: v_try})
        value, recall = v_try, _probe_recall(search, probes, rows, kk)
        if recall >= DEDUP_PROBE_RECALL:
            break
    (logger.info if recall >= DEDUP_PROBE_RECALL else logger.warning)(
        "dedup search: %s=%d finds %.1f%% of neighbours at score %.3f (median cosine %.3f; index default %s=%d)",
        name,
        value,
        100 * recall,
        t,
        float(np.median(cos)),
        name,
        own_value,
    )
    return {name: value}


def nearest_neighbour_scores(
    index: SearchIndex, background_rank: int = BACKGROUND_RANK, candidates: Any | None = None
) -> np.ndarray:
    """(N,) each file's best score to another file, as `find_groups` scores pairs: the cosine to its nearest
    neighbour, or with `background_rank` r > 0 the best normalised score (`dedup.normalised_scores`,
    backgrounds = cosine to the r-th nearest neighbour) among its r nearest neighbours. Unlike
    `find_groups`, exact copies count as neighbours here (they score 1). NaN for a lone file."""
    import faiss

    n, d = len(index), index.dim
    if n < 2:
        return np.full(n, np.nan, dtype=np.float32)
    xb = np.ascontiguousarray(index.vectors, dtype=np.float32)  # (N, D)
    if candidates is None:
        candidates = faiss.IndexFlatIP(d)
        candidates.add(xb)
    kk = min(n, max(1, background_rank) + 1)
    sims = np.full((n, kk - 1), np.nan, dtype=np.float32)  # (N, kk-1) cosines, nearest first
    ids = np.zeros((n, kk - 1), dtype=np.int64)  # (N, kk-1)
    for start in range(0, n, _DEDUP_BATCH):
        D, I = candidates.search(xb[start : start + _DEDUP_BATCH], kk)  # noqa: E741  (B, kk)
        D, I = _without_self(np.where(I >= 0, D, np.nan), I, start)  # noqa: E741  (B, kk-1)
        sims[start : start + D.shape[0]] = D
        ids[start : start + D.shape[0]] = np.maximum(I, 0)
    if background_rank == 0:
        return sims[:, 0]
    background = np.nan_to_num(sims[:, -1], nan=0.0)  # (N,)
    scores = normalised_scores(sims, background[:, None], background[ids])  # (N, kk-1)
    return np.nanmax(np.where(np.isnan(sims), -np.inf, scores), axis=1).astype(np.float32)


def find_duplicates(cfg: DedupConfig) -> DedupResult:
    """Exact and near duplicate groups of the indexed folder; with `cfg.move_to`, the moves planned or
    (with `cfg.apply`) made, logged in `move_to/undo-<time>.jsonl`. InputError for anything the person
    can fix (no such index, a bad threshold, a move-to folder inside the indexed one)."""
    t0 = time.perf_counter()
    threshold = cfg.threshold_value
    index = SearchIndex.open(Path(cfg.index))
    root = index.root
    candidates = _candidate_index(index)
    logger.info("%d files in %s (%s index)", len(index), cfg.index, index.manifest.kind)
    done = partial(
        DedupResult,
        index=Path(cfg.index),
        root=root,
        n_files=len(index),
        threshold=threshold,
        background_rank=cfg.background_rank,
    )

    if cfg.calibrate:
        loosest = min(t for t in THRESHOLD_PRESETS.values() if math.isfinite(t))
        tune_for_threshold(index, loosest if threshold is None else min(loosest, threshold), 1, cfg.background_rank)
        scores = nearest_neighbour_scores(index, cfg.background_rank, candidates)  # (N,)
        histogram = tuple(calibration_histogram(scores, bins=CALIBRATION_BINS))
        return done(groups=(), histogram=histogram, seconds=time.perf_counter() - t0)

    if threshold is not None:
        tune_for_threshold(index, threshold, cfg.k, cfg.background_rank)
    groups = tuple(
        find_groups(
            index.records,
            index.vectors,
            threshold,
            keeper=cfg.keeper_rule,
            k=cfg.k,
            index=candidates,
            root=root,
            background_rank=cfg.background_rank,
        )
    )
    plan: MovePlan | None = None
    moved: MoveReport | None = None
    if cfg.move_to is not None:
        plan = plan_moves(groups, root, Path(cfg.move_to))
        if cfg.apply:
            moved = apply_moves(plan, root, Path(cfg.move_to), _new_undo_log(Path(cfg.move_to)))
    return done(groups=groups, plan=plan, moved=moved, seconds=time.perf_counter() - t0)


def _new_undo_log(move_to: Path) -> Path:
    """`move_to/undo-<UTC time>.jsonl`, a name not taken yet (a suffix -2, -3 ... if needed)."""
    stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    path = move_to / f"{UNDO_LOG_PREFIX}{stamp}.jsonl"
    n = 1
    while path.exists():
        n += 1
        path = move_to / f"{UNDO_LOG_PREFIX}{stamp}-{n}.jsonl"
    return path


def undo(log: Path) -> UndoReport:
    """Put every file moved by `retrieval dedup --apply` back where it was, from its undo log."""
    return undo_moves(Path(log))


def threshold_marks(threshold: float | None) -> dict[str, float]:
    """The presets to mark on a calibration histogram, plus a custom threshold when one was given."""
    marks = {name: t for name, t in THRESHOLD_PRESETS.items() if math.isfinite(t)}
    if threshold is not None and threshold not in marks.values():
        marks["chosen"] = threshold
    return marks


__all__ += [
    "DedupConfig",
    "DedupResult",
    "find_duplicates",
    "undo",
    "threshold_marks",
    "tune_for_threshold",
    "nearest_neighbour_scores",
]
