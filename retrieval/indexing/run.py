"""`retrieval index`: the library call that the CLI and the app share to build or update a folder's index.

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
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from moco.distributed import Dist, init_distributed, shutdown
from plumbing.errors import disk_full_is
from plumbing.filenames import printable
from plumbing.images import list_images
from plumbing.progress import Progress
from retrieval.errors import EncoderMismatchError, IndexError_, InputError
from retrieval.indexing.catalog import BadFile
from retrieval.indexing.embed_stream import embed_all
from retrieval.indexing.faiss_index import KINDS, build_index, choose_kind
from retrieval.indexing.generations import (
    WORK,
    Generation,
    current_generation,
    load_generation,
    read_manifest,
    remove_stale_generations,
    write_generation,
    write_lock,
)
from retrieval.indexing.plan import Plan, plan_files
from retrieval.indexing.resume_cache import WorkCache
from retrieval.indexing.rows import Row
from retrieval.records import FileRecord

if TYPE_CHECKING:
    from retrieval.embed import Embedder

logger = logging.getLogger(__name__)


def _default_workers() -> int:
    return max(1, min(8, os.cpu_count() or 1))


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
    progress: Progress | None = field(default=None, compare=False, repr=False)  # the caller shows it (the CLI: bars)

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


def index_folder(cfg: IndexConfig) -> IndexReport:
    """Build or update the index of `cfg.images`. See the module docstring for the incremental rules."""
    dist, owns_group = _init_distributed(cfg.device)
    full = (
        f"{cfg.index}: no space left on the device while writing the index; the index is as it was before"
        " this run; free some space and run again"
    )
    try:
        with disk_full_is(full):
            if dist.rank == 0:
                with contextlib.ExitStack() as held:
                    return _index_rank0(cfg, dist, held)
            return _index_follower(cfg, dist)
    finally:
        if owns_group:
            shutdown(dist)


def _index_rank0(cfg: IndexConfig, dist: Dist, held: contextlib.ExitStack) -> IndexReport:
    t0 = time.perf_counter()
    index_dir = Path(cfg.index)
    plan: Plan | None = None
    error: str | None = None
    try:
        root = Path(cfg.images).expanduser().resolve()
        files = list_images(root)
        if not files:
            raise InputError(f"{root}: no images found (is the disk mounted?); the index was left as it was")
        held.enter_context(write_lock(index_dir))  # held until the new generation is live
        _check_root(index_dir, root)  # before anything in the index folder changes
        embedder = _load_embedder(cfg.model, cfg.device, dist)
        old = _load_previous(index_dir, embedder, cfg)
        work = WorkCache(index_dir / WORK, embedder.sha256, embedder.dim, dist.rank)
        plan = plan_files(root, files, old, work, cfg.workers)
    except BaseException as exc:
        error = str(exc) or type(exc).__name__
        raise
    finally:
        if dist.world > 1:  # followers wait for the plan (or for the news that there is none)
            _broadcast((error, plan.todo if plan is not None else None))

    mine = plan.todo[dist.rank :: dist.world]
    t_embed = time.perf_counter()
    fresh = embed_all(mine, embedder, work, batch_size=cfg.batch_size, workers=cfg.workers, progress=cfg.progress)
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


def _index_follower(cfg: IndexConfig, dist: Dist) -> IndexReport:
    """Rank > 0 under torchrun: embed this rank's share of rank 0's plan and send it back."""
    t0 = time.perf_counter()
    embedder = _load_embedder(cfg.model, cfg.device, dist)
    error, todo = _broadcast(None)
    if error is not None:
        raise InputError(error)
    mine = todo[dist.rank :: dist.world]
    work = WorkCache(Path(cfg.index) / WORK, embedder.sha256, embedder.dim, dist.rank, create=False)
    fresh = embed_all(mine, embedder, work, batch_size=cfg.batch_size, workers=cfg.workers)
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


def _load_embedder(model: Path, device: str, dist: Dist) -> Embedder:
    from retrieval.embed import Embedder

    # Under torchrun on CUDA, _init_distributed has made cuda:LOCAL_RANK the current device, which is
    # where "cuda" / "auto" put the model.
    return Embedder.load(Path(model), device=device)


def _check_root(index_dir: Path, root: Path) -> None:
    """An index belongs to the one folder it was built from: refuse another (with --rebuild too), so that
    indexing a second folder with the same model never replaces the first folder's index."""
    try:
        if current_generation(index_dir) is None:
            return
        built_from = read_manifest(index_dir).root
    except IndexError_:
        return  # a damaged index: _load_previous says so (and --rebuild replaces it)
    if built_from != str(root):
        raise InputError(
            f"{index_dir}: this index belongs to {printable(built_from)}, not {printable(str(root))};"
            " pass --index indexes/NEW_NAME to index this folder separately"
        )


def _load_previous(index_dir: Path, embedder: Embedder, cfg: IndexConfig) -> Generation | None:
    """The live generation to update, or None (none yet, or --rebuild)."""
    if cfg.rebuild:
        remove_stale_generations(index_dir)
        return None
    if current_generation(index_dir) is None:
        return None
    old = load_generation(index_dir, load_index=False)  # a damaged one: the error says how to rebuild
    if old.manifest.encoder_sha256 != embedder.sha256:
        raise EncoderMismatchError(
            f"{index_dir}: built with encoder {old.manifest.encoder_sha256[:12]}"
            f" ({old.manifest.encoder_path}),"
            f" not {cfg.model} ({embedder.sha256[:12]}); pass --rebuild to re-embed everything"
        )
    remove_stale_generations(index_dir)
    return old


def _init_distributed(device: str) -> tuple[Dist, bool]:
    """Join the torchrun process group when WORLD_SIZE > 1 (moco.distributed: gloo on CPU, nccl on CUDA), and
    whether this call created it (and so must destroy it): a group the caller already set up is left alone."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist(), False
    import torch
    import torch.distributed as tdist

    if tdist.is_initialized():
        return Dist(tdist.get_rank(), tdist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0"))), False
    use_cuda = device in ("auto", "cuda") and torch.cuda.is_available()
    dist = init_distributed("cuda" if use_cuda else "cpu")  # on CUDA, cuda:LOCAL_RANK becomes the current device
    logger.debug("rank %d of %d joined (%s)", dist.rank, dist.world, tdist.get_backend())
    return dist, True


def _broadcast(obj: Any) -> Any:
    import torch.distributed as tdist

    box = [obj]
    tdist.broadcast_object_list(box, src=0)
    return box[0]


def _gather(rows: list[Row], dist: Dist) -> list[list[Row]]:
    import torch.distributed as tdist

    out: list[list[Row]] | None = [[] for _ in range(dist.world)] if dist.rank == 0 else None
    tdist.gather_object(rows, out, dst=0)
    return out or []


__all__ = ["IndexConfig", "IndexReport", "index_folder"]
