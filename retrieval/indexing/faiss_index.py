"""FAISS indexes in memory: choose a kind, build it, tune it to a target recall, search it exactly or not.

Kinds: `flat` (exact), `hnsw`, `ivf` and `ivfpq` (approximate, tuned with held-out rows to reach
TARGET_RECALL recall@10). Storing an index on disk is retrieval.indexing.generations.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import faiss
import numpy as np

from retrieval.errors import InputError

logger = logging.getLogger(__name__)

KINDS = ("auto", "flat", "hnsw", "ivf", "ivfpq")

# `auto` uses exact Flat while one query's scan, n * dim multiply-adds, stays within this: one exact query
# costs ~0.47 ms per million n * dim on one core of the 2-core dev machine (measured with faiss 1.15.1,
# IndexFlatIP, k=10, one query per call: 50k x 128 3.2 ms, 200k x 128 12.2 ms, 100k x 512 22 ms p50), so
# this bound (65,536 x 128 or 16,384 x 512) keeps exact search near 4 ms, inside the 5 ms p50 goal.
FLAT_MAX_SCAN = 65_536 * 128
TARGET_RECALL = 0.96  # approximate kinds are tuned (efSearch / nprobe) to reach this recall@10 on held-out rows:
# 0.01 above the 0.95 promised, as 1000 tuning queries measured 0.9586 where unseen ones got 0.9499 (1M x 512)
HNSW_M = 32
HNSW_EF_CONSTRUCTION = 80
HNSW_EF_SEARCH = (16, 32, 64, 128, 256, 512, 1024)
PQ_RERANK = 8  # IVF-PQ: re-score 8 * k compressed candidates exactly from vectors.npy
RECALL_QUERIES = 1000
_ADD_CHUNK = 65_536
_EXACT_CHUNK = 16_384


# ============================================================================================ building


@dataclass(frozen=True)
class BuiltIndex:
    """A FAISS index over rows 0..n-1 of some vectors, with the parameters it was tuned to."""

    index: faiss.Index
    kind: str  # flat | hnsw | ivf | ivfpq
    params: Mapping[str, int] = field(default_factory=dict)
    recall_at_10: float | None = None  # None when there are no vectors to measure on


def default_ram_budget() -> int:
    """Bytes of vectors we are willing to hold in RAM: half the physical memory (8 GiB if unknown)."""
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") // 2
    except (AttributeError, ValueError, OSError):
        return 8 << 30


def choose_kind(n: int, dim: int, ram_budget_bytes: int | None = None) -> str:
    """`auto`: exact Flat while one exact query is cheap (n * dim <= FLAT_MAX_SCAN), HNSW while the raw
    vectors fit the RAM budget, else IVF-PQ."""
    if n * dim <= FLAT_MAX_SCAN:
        return "flat"
    budget = default_ram_budget() if ram_budget_bytes is None else ram_budget_bytes
    if n * dim * 4 > budget:
        return "ivfpq"
    return "hnsw"


def build_index(
    vectors: np.ndarray,
    kind: str = "auto",
    *,
    ram_budget_bytes: int | None = None,
    target_recall: float = TARGET_RECALL,
    seed: int = 0,
) -> BuiltIndex:
    """Build an inner-product index over `vectors` (n, d) float32 (ids = row numbers). Approximate kinds
    have their search parameter tuned, and recall@10 measured against exact search, on held-out rows."""
    if kind not in KINDS:
        raise InputError(f"unknown index kind {kind!r}; choose one of {', '.join(KINDS)}")
    if vectors.ndim != 2:
        raise ValueError(f"vectors must be (n, d), got shape {vectors.shape}")
    n, d = vectors.shape
    if kind == "auto":
        kind = choose_kind(n, d, ram_budget_bytes)
    if n == 0 and kind != "flat":
        logger.info("no vectors to train a %s index on; using flat", kind)
        kind = "flat"
    rng = np.random.default_rng(seed)
    if kind == "flat":
        return _build_flat(vectors, rng)
    held, rest = _split_held_out(n, rng)
    if kind == "hnsw":
        return _build_hnsw(vectors, held, rest, target_recall)
    return _build_ivf(vectors, kind, held, rest, rng, target_recall)


def _build_flat(vectors: np.ndarray, rng: np.random.Generator) -> BuiltIndex:
    """Exact search: recall@10 is 1 (measured on a sample of the vectors, so ties are checked too)."""
    n, d = vectors.shape
    index = faiss.index_factory(d, "Flat", faiss.METRIC_INNER_PRODUCT)
    _add(index, vectors)
    sample = np.sort(rng.choice(n, size=min(n, RECALL_QUERIES), replace=False))
    queries = np.ascontiguousarray(vectors[sample], dtype=np.float32)  # (q, d)
    return BuiltIndex(index, "flat", {}, measure_recall(index, vectors, queries) if n else None)


def _split_held_out(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(held, rest), both sorted: a random sample of up to RECALL_QUERIES rows (at most a tenth of them)
    and the other rows.

    Recall measured with queries that are themselves in the index overstates what a new query gets: the
    query finds itself, and in HNSW its own node links straight to its neighbours (measured on clustered
    data, 150k x 128, efSearch 16 / 32: 0.944 / 0.979 for indexed queries vs 0.852 / 0.944 for unseen
    ones). Excluding the self-match only removes the first part (0.935 / 0.977). So approximate indexes are
    built from `rest` first, tuned and measured with the `held` rows as queries (unseen by the index and by
    IVF / PQ training, from the same distribution as the corpus: 0.850 / 0.947 in the same test), and only
    then are the held rows added. The recall is that of an index of n - len(held) vectors: at most a tenth
    fewer (0.1% at 1M), and recall at a fixed efSearch / nprobe falls only slowly with n."""
    h = 0 if n < 2 else min(RECALL_QUERIES, max(1, n // 10))
    held = np.sort(rng.choice(n, size=h, replace=False))
    return held, np.setdiff1d(np.arange(n), held, assume_unique=True)


def _build_hnsw(vectors: np.ndarray, held: np.ndarray, rest: np.ndarray, target_recall: float) -> BuiltIndex:
    """HNSW over `rest`, efSearch tuned on `held`, then `held` added; entries renumbered to row order."""
    d = vectors.shape[1]
    index = faiss.index_factory(d, f"HNSW{HNSW_M}", faiss.METRIC_INNER_PRODUCT)
    index.hnsw.efConstruction = HNSW_EF_CONSTRUCTION
    _add_rows(index, vectors, rest, with_ids=False)  # HNSW ids are insertion positions: id j == rest[j]
    params = {"M": HNSW_M, "efConstruction": HNSW_EF_CONSTRUCTION}
    value, recall = _tune(index, "hnsw", params, "efSearch", HNSW_EF_SEARCH, vectors, held, rest, target_recall)
    if held.size:
        _add_rows(index, vectors, held, with_ids=False)
        # entry j holds row order[j]; renumber so that FAISS id i == row i (copies the graph and the
        # vectors once, briefly: about n * (4 d + 8 M) bytes more at the peak)
        index.permute_entries(np.argsort(np.concatenate([rest, held])))
    return BuiltIndex(index, "hnsw", {**params, "efSearch": value}, recall)


def _build_ivf(
    vectors: np.ndarray,
    kind: str,
    held: np.ndarray,
    rest: np.ndarray,
    rng: np.random.Generator,
    target_recall: float,
) -> BuiltIndex:
    """IVF-Flat or IVF-PQ trained and filled with `rest`, nprobe tuned on `held`, then `held` added."""
    d = vectors.shape[1]
    n = rest.size  # what training sees
    nlist = _nlist(n)
    if kind == "ivf":
        index = faiss.index_factory(d, f"IVF{nlist},Flat", faiss.METRIC_INNER_PRODUCT)
        params = {"nlist": nlist}
        train_n = min(n, max(64 * nlist, 1))
    else:  # ivfpq: m sub-quantizers of nbits each; m divides d, about 4 dims per code byte
        m = _pq_subquantizers(d)
        nbits = max(1, min(8, int(math.log2(max(n // 39, 2)))))  # >= 39 training points per code
        index = faiss.index_factory(d, f"IVF{nlist},PQ{m}x{nbits}np", faiss.METRIC_INNER_PRODUCT)
        params = {"nlist": nlist, "m": m, "nbits": nbits, "rerank": PQ_RERANK}
        train_n = min(n, max(64 * nlist, 64 * 2**nbits))
    train_rows = np.sort(rng.choice(rest, size=min(train_n, 262_144), replace=False))
    index.train(np.ascontiguousarray(vectors[train_rows], dtype=np.float32))
    _add_rows(index, vectors, rest, with_ids=True)  # IVF stores the ids given: id == row
    nprobes = tuple(p for p in (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024) if p < nlist) + (nlist,)
    value, recall = _tune(index, kind, params, "nprobe", nprobes, vectors, held, None, target_recall)
    _add_rows(index, vectors, held, with_ids=True)
    return BuiltIndex(index, kind, {**params, "nprobe": value}, recall)


class Reranked:
    """A compressed (PQ) index whose top `rerank * k` candidates are re-scored exactly with the raw
    vectors (memory-mapped `vectors.npy`, read only for those rows) and re-sorted: exact cosines out."""

    def __init__(self, index: faiss.Index, vectors: np.ndarray, rerank: int) -> None:
        self.index = index
        self.vectors = vectors
        self.rerank = max(1, int(rerank))

    @property
    def ntotal(self) -> int:
        return int(self.index.ntotal)

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        _, cand = self.index.search(queries, min(self.ntotal, k * self.rerank))  # (q, k')
        valid = cand >= 0
        rows = np.asarray(self.vectors[np.where(valid, cand, 0).ravel()], dtype=np.float32)
        D = np.einsum("qkd,qd->qk", rows.reshape(*cand.shape, -1), queries)  # (q, k') exact cosines
        D = np.where(valid, D, -np.inf).astype(np.float32)
        order = np.argsort(-D, axis=1, kind="stable")[:, :k]
        D = np.take_along_axis(D, order, axis=1)
        ids = np.take_along_axis(cand, order, axis=1)
        return np.where(np.isfinite(D), D, -np.inf).astype(np.float32), np.where(np.isfinite(D), ids, -1)


def searcher(index: faiss.Index, kind: str, params: Mapping[str, int], vectors: np.ndarray) -> faiss.Index:
    """What answers `.search(Q, k)` for an index of this kind: the index itself, or Reranked for PQ."""
    if kind == "ivfpq":
        return Reranked(index, vectors, params.get("rerank", PQ_RERANK))
    return index


def _add(index: faiss.Index, vectors: np.ndarray) -> None:
    for start in range(0, vectors.shape[0], _ADD_CHUNK):
        index.add(np.ascontiguousarray(vectors[start : start + _ADD_CHUNK], dtype=np.float32))


def _add_rows(index: faiss.Index, vectors: np.ndarray, rows: np.ndarray, *, with_ids: bool) -> None:
    """Add `vectors[rows]` in chunks; with their row numbers as ids, or (HNSW) at the next positions."""
    for start in range(0, rows.size, _ADD_CHUNK):
        ids = rows[start : start + _ADD_CHUNK]
        x = np.ascontiguousarray(vectors[ids], dtype=np.float32)
        if with_ids:
            index.add_with_ids(x, ids)
        else:
            index.add(x)


class _RowsOf:
    """Answers `.search` of an index whose ids are positions in `rows` with the row numbers themselves."""

    def __init__(self, index: faiss.Index, rows: np.ndarray) -> None:
        self.index = index
        self.rows = rows

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        D, I = self.index.search(queries, k)  # noqa: E741
        return D, np.where(I >= 0, self.rows[np.maximum(I, 0)], -1)


def _nlist(n: int) -> int:
    """About 4 sqrt(n) lists, with at least 39 training points each."""
    return int(max(1, min(round(4 * math.sqrt(n)), n // 39)))


def _pq_subquantizers(d: int) -> int:
    target = max(1, d // 4)
    return max(m for m in range(1, target + 1) if d % m == 0)


def _tune(
    index: faiss.Index,
    kind: str,
    params: dict[str, int],
    name: str,
    values: Sequence[int],
    vectors: np.ndarray,
    held: np.ndarray,
    positions: np.ndarray | None,
    target_recall: float,
) -> tuple[int, float]:
    """The smallest value of search parameter `name` whose recall@10 on the held-out rows (not in `index`)
    reaches the target (else the largest), and that recall. `positions[j]` is the row of FAISS id j
    when ids are not rows (HNSW)."""
    if held.size == 0:  # a single vector: any search finds it
        apply_search_params(index, kind, {name: values[0]})
        return values[0], 1.0
    queries = np.ascontiguousarray(vectors[held], dtype=np.float32)  # (h, d)
    k = min(10, int(index.ntotal))
    exact = exact_search(vectors, queries, k, skip=held)  # the truth among the indexed rows only
    search_with = searcher(index, kind, params, vectors)
    if positions is not None:
        search_with = _RowsOf(search_with, positions)
    recall = 0.0
    value = values[-1]
    for value in values:
        apply_search_params(index, kind, {name: value})
        recall = measure_recall(search_with, vectors, queries, k, exact=exact)
        logger.debug("%s %s=%d: recall@10 %.4f on %d held-out queries", kind, name, value, recall, held.size)
        if recall >= target_recall:
            break
    return value, recall


def apply_search_params(index: faiss.Index, kind: str, params: Mapping[str, int]) -> None:
    """Set the query-time parameters (efSearch, nprobe) that the manifest records."""
    if kind == "hnsw" and "efSearch" in params:
        faiss.downcast_index(index).hnsw.efSearch = int(params["efSearch"])
    elif kind in ("ivf", "ivfpq") and "nprobe" in params:
        faiss.extract_index_ivf(index).nprobe = int(params["nprobe"])


def exact_search(
    vectors: np.ndarray, queries: np.ndarray, k: int, skip: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Brute-force inner-product top-k, in chunks so it also works on memory-mapped vectors; rows in
    `skip` (sorted) are left out.

    Returns D (q, k) float32 scores, descending, and I (q, k) int64 row ids.
    """
    q = queries.shape[0]
    n = vectors.shape[0]
    k = min(k, n)
    best_d = np.full((q, 0), -np.inf, dtype=np.float32)
    best_i = np.zeros((q, 0), dtype=np.int64)
    for start in range(0, n, _EXACT_CHUNK):
        chunk = np.asarray(vectors[start : start + _EXACT_CHUNK], dtype=np.float32)  # (c, d)
        scores = queries @ chunk.T  # (q, c)
        if skip is not None:
            lo, hi = np.searchsorted(skip, (start, start + chunk.shape[0]))
            scores[:, skip[lo:hi] - start] = -np.inf
        ids = np.broadcast_to(np.arange(start, start + chunk.shape[0], dtype=np.int64), scores.shape)
        all_d = np.concatenate([best_d, scores], axis=1)  # (q, k + c)
        all_i = np.concatenate([best_i, ids], axis=1)
        keep = np.argpartition(-all_d, k - 1, axis=1)[:, :k] if all_d.shape[1] > k else None
        if keep is not None:
            all_d = np.take_along_axis(all_d, keep, axis=1)
            all_i = np.take_along_axis(all_i, keep, axis=1)
        best_d, best_i = all_d, all_i
    order = np.lexsort((best_i, -best_d), axis=1) if q else np.zeros((0, k), dtype=np.int64)
    return np.take_along_axis(best_d, order, axis=1), np.take_along_axis(best_i, order, axis=1)


def measure_recall(
    index: faiss.Index,
    vectors: np.ndarray,
    queries: np.ndarray,
    k: int = 10,
    exact: tuple[np.ndarray, np.ndarray] | None = None,
) -> float:
    """recall@k of `index` against exact search: the share of the returned top-k whose true score is at
    least the exact k-th best score (so ties between duplicate images are not counted as misses)."""
    n = vectors.shape[0]
    k = min(k, n)
    if k == 0 or queries.shape[0] == 0:
        return 1.0
    d_ref, _ = exact if exact is not None else exact_search(vectors, queries, k)
    kth = d_ref[:, k - 1 : k]  # (q, 1)
    _, ids = index.search(queries, k)  # (q, k)
    valid = ids >= 0
    rows = np.asarray(vectors[np.where(valid, ids, 0).ravel()], dtype=np.float32).reshape(*ids.shape, -1)
    true_scores = np.einsum("qkd,qd->qk", rows, queries)  # (q, k)
    hits = valid & (true_scores >= kth - 1e-5)
    return float(hits.sum() / (queries.shape[0] * k))
