"""Query images that arrive together are embedded together.

Under load many searches wait at once; each alone costs a whole forward pass of the encoder (two with the flip
average), and a small network pays much of it per call. A `QueryBatcher` keeps one worker thread: a handler
hands it a query (the engine's: a preprocessed image tensor, made in the handler's own thread) and waits; the
worker takes every query waiting at that moment (up to `max_batch`) and embeds them in one call. One query alone
waits for nothing. When a batch fails, each of its queries is embedded alone, so one bad query fails only its own
search.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from typing import Generic, TypeVar

import numpy as np

logger = logging.getLogger(__name__)

MAX_BATCH = 16  # images embedded in one call at most
BATCHES_KEPT = 1000  # sizes of the latest batches kept for reading (a server runs for months)

T = TypeVar("T")


class QueryBatcher(Generic[T]):
    """`embed(query)` -> (dim,) from a shared worker that embeds the waiting queries in one call of `embed_many`
    (a list of queries -> (N, dim) float32)."""

    def __init__(self, embed_many: Callable[[list[T]], np.ndarray], max_batch: int = MAX_BATCH) -> None:
        if max_batch < 1:
            raise ValueError(f"max_batch must be at least 1, got {max_batch}")
        self._embed_many = embed_many
        self._max_batch = max_batch
        self._waiting: queue.SimpleQueue[tuple[T, Future[np.ndarray]]] = queue.SimpleQueue()
        self._start = threading.Lock()
        self._worker: threading.Thread | None = None
        self.batches: deque[int] = deque(maxlen=BATCHES_KEPT)  # the sizes of the latest batches (tests read them)

    def embed(self, query: T) -> np.ndarray:
        """The query's embedding (dim,) float32; raises what embedding it alone raised."""
        done: Future[np.ndarray] = Future()
        self._waiting.put((query, done))
        self._ensure_worker()
        return done.result()

    def _ensure_worker(self) -> None:
        with self._start:
            if self._worker is None or not self._worker.is_alive():
                self._worker = threading.Thread(target=self._run, name="query-batcher", daemon=True)
                self._worker.start()

    def _run(self) -> None:
        while True:
            batch = [self._waiting.get()]
            while len(batch) < self._max_batch:
                try:
                    batch.append(self._waiting.get_nowait())
                except queue.Empty:
                    break
            self.batches.append(len(batch))
            self._embed_batch(batch)

    def _embed_batch(self, batch: list[tuple[T, Future[np.ndarray]]]) -> None:
        try:
            vectors = self._embed_many([q for q, _ in batch])
        except Exception as err:  # noqa: BLE001 - one query may be at fault: each alone below
            if len(batch) == 1:
                batch[0][1].set_exception(err)
                return
            logger.debug("a batch of %d queries failed; embedding each alone", len(batch))
            for item in batch:
                self._embed_batch([item])
            return
        for (_, done), v in zip(batch, vectors, strict=True):
            done.set_result(v)
