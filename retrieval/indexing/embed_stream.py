"""Step 4 of `index_folder`: decode the files to embed on a thread pool, overlapping the batched forward
pass, and persist the rows to the work cache as they come."""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from plumbing.hashing import content_hash
from plumbing.images import BadImageError, image_size, load_image
from plumbing.progress import Progress, report
from retrieval.indexing.rows import Row, Todo

if TYPE_CHECKING:
    import torch

    from retrieval.embed import Embedder
    from retrieval.indexing.resume_cache import WorkCache

logger = logging.getLogger(__name__)

# Every forward batch is persisted to the work cache as soon as it is embedded, so a kill loses at most
# the batch in flight. Rows of bad files (no forward pass) are persisted with the next batch, or after
# FLUSH_ROWS of them or FLUSH_SECONDS, whichever comes first.
FLUSH_ROWS = 256
FLUSH_SECONDS = 2.0


@dataclass
class _Decoded:
    todo: Todo
    content_hash: str | None = None
    width: int = 0
    height: int = 0
    x: torch.Tensor | None = None  # (3, H, W)
    error: str | None = None


def _decode(todo: Todo, embedder: Embedder) -> _Decoded:
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


def _decoded_stream(todo: Sequence[Todo], embedder: Embedder, workers: int, window: int) -> Iterator[_Decoded]:
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


def embed_all(
    todo: Sequence[Todo],
    embedder: Embedder,
    work: WorkCache,
    *,
    batch_size: int,
    workers: int,
    progress: Progress | None = None,
) -> list[Row]:
    """Decode (threads) overlapping the batched forward (this thread); persist results as they come."""
    if not todo:
        return []
    import torch

    rows: list[Row] = []
    batch: list[_Decoded] = []
    unsaved: list[Row] = []
    last_flush = time.monotonic()
    window = max(2 * batch_size, 4 * max(workers, 1))
    done = 0

    def advance(n: int) -> None:
        nonlocal done
        done += n
        report(progress, "embedding", done, len(todo))

    pin = embedder.device.type == "cuda"

    def forward() -> None:
        x = torch.stack([d.x for d in batch])  # (B, 3, H, W)
        if pin:
            x = x.pin_memory()  # lets the copy to the GPU run asynchronously
        z = embedder.encode_tensors(x)  # (B, D) float32, L2-normalised
        for d, v in zip(batch, z, strict=True):
            t = d.todo
            row = Row(t.path, t.size, t.mtime_ns, d.content_hash, d.width, d.height, vector=v)
            rows.append(row)
            unsaved.append(row)
        advance(len(batch))
        batch.clear()
        flush()

    def flush() -> None:
        nonlocal last_flush
        work.save(unsaved)
        unsaved.clear()
        last_flush = time.monotonic()

    stream = _decoded_stream(todo, embedder, workers, window)
    try:
        for d in stream:
            if d.error is not None:
                logger.warning("skipping %s: %s", d.todo.abspath, d.error)
                t = d.todo
                row = Row(t.path, t.size, t.mtime_ns, d.content_hash, error=d.error)
                rows.append(row)
                unsaved.append(row)
                advance(1)
            else:
                batch.append(d)
                if len(batch) == batch_size:
                    forward()
            if unsaved and (len(unsaved) >= FLUSH_ROWS or time.monotonic() - last_flush > FLUSH_SECONDS):
                flush()
        if batch:
            forward()
    finally:
        stream.close()  # cancel decodes still queued, wait for those running
        work.save(unsaved)  # also on Ctrl-C or an error: the next run resumes from here
    return rows
