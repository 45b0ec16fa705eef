"""The k nearest neighbours of every indexed vector at once (a k-NN self-join), for dedup at scale.

Dedup needs each file's neighbours, i.e. one query per indexed vector. Searching an approximate index
(HNSW, IVF) once per vector does this one query at a time: at 1M vectors that is about 1.7 ms of CPU per
query for HNSW on hard (random) data. The self-join instead partitions the vectors into cells (k-means on
a sample, spherical), lets every vector probe its `nprobe` nearest cells, and computes each cell's
similarities as one matrix product: (vectors probing the cell) x (vectors living in it)^T, through BLAS.
The work is the same as IVF's (N x nprobe x cell size dot products) but at matrix-multiply speed, and
each vector's running top-k is merged with numpy.

A pair (a, b) is found when b's cell is among a's probed cells or a's among b's; `choose_nprobe` picks
the smallest nprobe at which probes planted at the threshold's cosine are found that way.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

logger = logging.getLogger(__name__)

CELL_SIZE = 512  # vectors per cell on average: nlist = N / CELL_SIZE
KMEANS_ITERATIONS = 10
KMEANS_POINTS_PER_CELL = 64  # training sample per cell
QUERY_CHUNK = 4096  # rows of one similarity block, bounding scratch memory to QUERY_CHUNK x cell size
ASSIGN_CHUNK = 65_536
NPROBES = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512)
PAIR_RECALL = 0.99  # share of planted pairs at the threshold's cosine the join must find (either way)
BACKGROUND_RECALL = 0.90  # share of each sampled file's true r nearest neighbours it must find
TUNING_SAMPLE = 1000


@dataclass(frozen=True)
class KnnTable:
    """Each row's k nearest rows (itself included), most similar first; -1 / -inf pad short lists.

    Quacks like the FAISS index `dedup.find_groups` searches (d, ntotal), answering by row id."""

    D: np.ndarray  # (N, K) float32 cosine
    I: np.ndarray  # noqa: E741  (N, K) row ids
    d: int
    nlist: int
    nprobe: int

    @property
    def ntotal(self) -> int:
        return int(self.I.shape[0])

    def search_rows(self, rows: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(B, k) similarities and ids of `rows`' neighbours (k beyond the table's width is padded)."""
        D, I = self.D[rows, :k], self.I[rows, :k].astype(np.int64)  # noqa: E741
        if k > D.shape[1]:
            pad = k - D.shape[1]
            D = np.pad(D, ((0, 0), (0, pad)), constant_values=-np.inf)
            I = np.pad(I, ((0, 0), (0, pad)), constant_values=-1)  # noqa: E741
        return D, I


@dataclass(frozen=True)
class Cells:
    """A spherical k-means partition: `centroids` (nlist, d), searched by inner product."""

    centroids: np.ndarray

    @property
    def nlist(self) -> int:
        return int(self.centroids.shape[0])

    def nearest(self, x: np.ndarray, nprobe: int) -> np.ndarray:
        """(N, nprobe) int32: each row's nearest cells, nearest first (chunked; `x` may be a memmap)."""
        import faiss

        q = faiss.IndexFlatIP(self.centroids.shape[1])
        q.add(self.centroids)
        nprobe = min(nprobe, self.nlist)
        out = np.empty((x.shape[0], nprobe), dtype=np.int32)
        for s in range(0, x.shape[0], ASSIGN_CHUNK):
            _, I = q.search(np.ascontiguousarray(x[s : s + ASSIGN_CHUNK], dtype=np.float32), nprobe)  # noqa: E741
            out[s : s + I.shape[0]] = I
        return out


def train_cells(x: np.ndarray, nlist: int | None = None, seed: int = 0) -> Cells:
    """k-means cells over a sample of the rows of `x` (N, d); nlist defaults to N / CELL_SIZE."""
    import faiss

    n, d = x.shape
    nlist = max(1, min(n, nlist if nlist is not None else round(n / CELL_SIZE)))
    if nlist == 1:
        return Cells(np.ascontiguousarray(x[:1], dtype=np.float32))
    rng = np.random.default_rng(seed)
    m = min(n, nlist * KMEANS_POINTS_PER_CELL)
    sample = np.ascontiguousarray(x[np.sort(rng.choice(n, size=m, replace=False))], dtype=np.float32)
    km = faiss.Kmeans(
        d,
        nlist,
        niter=KMEANS_ITERATIONS,
        seed=seed,
        spherical=True,
        verbose=False,
        max_points_per_centroid=KMEANS_POINTS_PER_CELL,
        min_points_per_centroid=1,
    )
    km.train(sample)
    return Cells(np.ascontiguousarray(km.centroids, dtype=np.float32))


def self_join(
    x: np.ndarray,
    k: int,
    cells: Cells,
    nprobe: int,
    *,
    floor_rank: int | None = None,
    min_similarity: float = -np.inf,
) -> KnnTable:
    """Every row's k nearest rows among those living in its `nprobe` nearest cells (itself included).

    Only what dedup reads is kept, which lets most of each similarity block be skipped with one comparison:
    entries below `min_similarity`, and entries below the row's `floor_rank`-th largest similarity found so
    far (0-based; None: the k-th, i.e. the top-k alone), are dropped. Dropped entries could not be among the
    row's `floor_rank + 1` nearest, so those stay exact (as far as the probed cells go)."""
    n, d = x.shape
    k = max(1, min(k, n))
    floor_col = k - 1 if floor_rank is None else min(floor_rank, k - 1)
    best_dtype = np.int32 if n < 2**31 else np.int64
    probe = cells.nearest(x, nprobe)  # (N, P)
    home = probe[:, 0]
    members = np.argsort(home, kind="stable").astype(best_dtype)  # rows grouped by home cell
    m_bounds = np.searchsorted(home[members], np.arange(cells.nlist + 1))
    flat = probe.ravel()  # (N * P,) the cell of each (row, probe) pair
    by_cell = np.argsort(flat, kind="stable")
    queries = (by_cell // probe.shape[1]).astype(best_dtype)  # rows grouped by the cells they probe
    q_bounds = np.searchsorted(flat[by_cell], np.arange(cells.nlist + 1))
    del flat, by_cell, probe, home
    best_d = np.full((n, k), -np.inf, dtype=np.float32)  # (N, k) unordered running lists
    best_i = np.full((n, k), -1, dtype=best_dtype)
    floor = np.full(n, min_similarity, dtype=np.float32)  # (N,) nothing below this can matter any more
    for c in range(cells.nlist):
        m = members[m_bounds[c] : m_bounds[c + 1]]  # (M,)
        if m.size == 0:
            continue
        xm_t = np.ascontiguousarray(x[m], dtype=np.float32).T  # (d, M)
        qs = queries[q_bounds[c] : q_bounds[c + 1]]
        for s in range(0, qs.size, QUERY_CHUNK):
            q = qs[s : s + QUERY_CHUNK]  # (Q,)
            sims = np.asarray(x[q], dtype=np.float32) @ xm_t  # (Q, M)
            keep = sims >= floor[q][:, None]  # (Q, M)
            hit = np.flatnonzero(keep.any(axis=1))
            if hit.size == 0:
                continue
            cand_d, cand_i = _top(np.where(keep[hit], sims[hit], -np.inf), m, k)  # (R, k')
            rows = q[hit]
            _merge(best_d, best_i, rows, cand_d, cand_i, k)
            kth = -np.partition(-best_d[rows], floor_col, axis=1)[:, floor_col]  # (R,)
            floor[rows] = np.maximum(floor[rows], kth)
    for s in range(0, n, ASSIGN_CHUNK):  # most similar first, in place and in chunks (bounded scratch)
        order = np.argsort(-best_d[s : s + ASSIGN_CHUNK], axis=1, kind="stable")
        best_d[s : s + ASSIGN_CHUNK] = np.take_along_axis(best_d[s : s + ASSIGN_CHUNK], order, 1)
        best_i[s : s + ASSIGN_CHUNK] = np.take_along_axis(best_i[s : s + ASSIGN_CHUNK], order, 1)
    return KnnTable(best_d, best_i, d, cells.nlist, min(nprobe, cells.nlist))


def _top(sims: np.ndarray, ids: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Each row's k largest similarities (unordered) and their ids (-1 where -inf): (Q, min(k, M))."""
    if sims.shape[1] <= k:
        top_d, top_i = sims, np.broadcast_to(ids, sims.shape)
    else:
        part = np.argpartition(sims, sims.shape[1] - k, axis=1)[:, -k:]  # (Q, k)
        top_d, top_i = np.take_along_axis(sims, part, 1), ids[part]
    return top_d, np.where(np.isneginf(top_d), -1, top_i)


def _merge(best_d: np.ndarray, best_i: np.ndarray, rows: np.ndarray, d: np.ndarray, i: np.ndarray, k: int) -> None:
    """Fold candidates (R, k') into the running top-k of `rows` (distinct rows, so no write conflicts)."""
    all_d = np.concatenate([best_d[rows], d], axis=1)  # (R, k + k')
    all_i = np.concatenate([best_i[rows], i.astype(best_i.dtype)], axis=1)
    keep = np.argpartition(all_d, all_d.shape[1] - k, axis=1)[:, -k:]  # (R, k)
    best_d[rows] = np.take_along_axis(all_d, keep, 1)
    best_i[rows] = np.take_along_axis(all_i, keep, 1)


def choose_nprobe(
    x: np.ndarray,
    cells: Cells,
    threshold: float,
    background_rank: int = 0,
    *,
    values: Sequence[int] = NPROBES,
    sample: int = TUNING_SAMPLE,
    seed: int = 0,
) -> tuple[int, float, float]:
    """The smallest nprobe at which the join finds PAIR_RECALL of the pairs that just reach `threshold` and,
    with background_rank r > 0, BACKGROUND_RECALL of the sampled rows' true r nearest neighbours.

    Probes: sampled rows moved to exactly the cosine at which a pair scores `threshold` (plain cosine; with
    r > 0 the normalised score against the row's true background b: cosine b + t (1 - b)). A probe pair
    counts as found as the join finds pairs: either one's home cell among the other's probed cells.
    Returns (nprobe, pair recall, background recall) at the chosen value."""
    n = x.shape[0]
    rng = np.random.default_rng(seed)
    rows = np.sort(rng.choice(n, size=min(n, sample), replace=False))  # (S,)
    v = np.ascontiguousarray(x[rows], dtype=np.float32)  # (S, d)
    t = float(np.clip(threshold, -1.0, 1.0))
    cos = np.full(rows.size, t, dtype=np.float32)  # (S,) cosine of each probe to its row
    neighbour_home = None
    if background_rank > 0 and n > 1:
        nb_cos, nb_ids = _true_neighbours(x, v, rows, background_rank)  # (S, r)
        b = nb_cos[:, -1]
        cos = np.clip(b + t * (1.0 - b), -1.0, 1.0).astype(np.float32)
        neighbour_home = cells.nearest(x[nb_ids.ravel()], 1)[:, 0].reshape(nb_ids.shape)  # (S, r)
    noise = rng.standard_normal(v.shape).astype(np.float32)
    noise -= np.einsum("sd,sd->s", noise, v)[:, None] * v  # orthogonal to v
    noise /= np.maximum(np.linalg.norm(noise, axis=1, keepdims=True), 1e-12)
    probes = cos[:, None] * v + np.sqrt(1.0 - cos**2)[:, None] * noise  # (S, d)
    tries = sorted({min(p, cells.nlist) for p in values} | {cells.nlist})
    top = tries[-1]
    row_cells, probe_cells = cells.nearest(v, top), cells.nearest(probes, top)  # (S, top), nearest first
    chosen = (top, 0.0, 0.0)
    for p in tries:
        pair = (probe_cells[:, :1] == row_cells[:, :p]).any(1) | (row_cells[:, :1] == probe_cells[:, :p]).any(1)
        bg = (
            1.0
            if neighbour_home is None
            else float((neighbour_home[:, :, None] == row_cells[:, None, :p]).any(2).mean())
        )
        chosen = (p, float(pair.mean()), bg)
        if chosen[1] >= PAIR_RECALL and bg >= BACKGROUND_RECALL:
            break
    return chosen


def _true_neighbours(x: np.ndarray, v: np.ndarray, rows: np.ndarray, r: int) -> tuple[np.ndarray, np.ndarray]:
    """(S, r) cosines and ids of the exact r nearest other rows of each sampled row (brute force over x in
    chunks); a row with fewer others repeats its last."""
    import faiss

    n = x.shape[0]
    kk = min(n, r + 1)
    best_d = np.full((v.shape[0], kk), -np.inf, dtype=np.float32)
    best_i = np.full((v.shape[0], kk), -1, dtype=np.int64)
    for s in range(0, n, ASSIGN_CHUNK * 4):
        block = np.ascontiguousarray(x[s : s + ASSIGN_CHUNK * 4], dtype=np.float32)
        D, I = faiss.knn(v, block, min(kk, block.shape[0]), metric=faiss.METRIC_INNER_PRODUCT)  # noqa: E741
        all_d, all_i = np.concatenate([best_d, D], 1), np.concatenate([best_i, I + s], 1)
        keep = np.argsort(-all_d, axis=1, kind="stable")[:, :kk]
        best_d, best_i = np.take_along_axis(all_d, keep, 1), np.take_along_axis(all_i, keep, 1)
    other = (best_i != rows[:, None]) & (best_i >= 0)  # (S, kk)
    pick = np.stack([np.resize(np.flatnonzero(o), r) for o in other])  # (S, r) column of each neighbour
    return np.take_along_axis(best_d, pick, 1), np.take_along_axis(best_i, pick, 1)
