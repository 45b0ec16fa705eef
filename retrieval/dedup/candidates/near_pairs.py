"""Candidate pairs for the near-duplicate stage of `dedup.find_groups`: one batched k-NN pass.

Every representative (one record per content hash) is searched once. Its neighbour list, mapped to
representatives, gives both its background (the similarity to its rank-th nearest other representative,
for normalised scores) and its candidate partners. Pairs are filtered on the index's own similarities
first (with a small slack, so no pair that the exact score keeps is dropped); only the survivors, a few
per file, get their cosine recomputed exactly from the vectors and compared with the threshold.

With a normalised score and a threshold t >= 0 only a few neighbours are needed: score >= t implies
cos >= (b_i + b_j) / 2 >= min(b_i, b_j), so the pair lies within the rank-th nearest neighbours of one of
its two files. Each file is searched `rank + RANK_SLACK` deep, and searched again `k` deep in the rare case
that even the last of those neighbours is as close as its background.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import faiss

# |similarity from the index - exact cosine| for float32 unit vectors is ~1e-6; pairs within this of the
# threshold on the index's similarity go on to the exact check.
SCORE_SLACK = 1e-4
RANK_SLACK = 3  # neighbours searched beyond the background rank before a file is searched k deep


@dataclass(frozen=True)
class NearPairs:
    """Pairs of representatives (src, dst) whose score (cosine, or normalised) is >= the threshold."""

    src: np.ndarray  # (E,) record ids
    dst: np.ndarray  # (E,) record ids
    score: np.ndarray  # (E,) float32
    background: np.ndarray | None  # (N,) per record: cosine to its rank-th neighbour; None for plain cosine


def search_width(k: int, background_rank: int, threshold: float) -> int:
    """Neighbours searched per file (besides itself and its exact copies) on the first pass."""
    if background_rank > 0 and threshold >= 0:
        return max(background_rank, min(k, background_rank + RANK_SLACK))
    return max(k, background_rank)


def pair_cosines(xb: np.ndarray, i: np.ndarray, j: np.ndarray, chunk: int = 1 << 15) -> np.ndarray:
    """Cosine of each pair (i[e], j[e]), gathered in chunks so scratch memory stays bounded."""
    out = np.empty(i.size, dtype=np.float32)  # (E,)
    for s in range(0, i.size, chunk):
        out[s : s + chunk] = np.einsum("ed,ed->e", xb[i[s : s + chunk]], xb[j[s : s + chunk]])
    return out


def normalised_scores(cos: np.ndarray, b_i: np.ndarray, b_j: np.ndarray) -> np.ndarray:
    """Score normalisation against background neighbours: where a pair's cosine lies between the
    typical close neighbour of its two images (their mean background similarity b, score 0) and an
    identical image (score 1). Dense regions of the embedding (plain backgrounds, one photo session)
    get a higher bar than sparse ones; the threshold becomes comparable across encoders and folders."""
    b = (b_i + b_j) / 2  # (E,)
    return ((cos - b) / np.maximum(1.0 - b, 1e-6)).astype(np.float32)


class _Lists:
    """Neighbour lists of representatives as representative ids: the searched index over all records
    (exact copies share a representative), or an exact flat index over the representatives only."""

    def __init__(self, xb: np.ndarray, reps: np.ndarray, rep_of: np.ndarray, index: faiss.Index | None) -> None:
        import faiss

        n, d = xb.shape
        self.xb, self.rep_of = xb, rep_of
        if index is None:
            full = reps.size == n
            index = faiss.IndexFlatIP(d)
            index.add(xb if full else xb[reps])
            self.id_map: np.ndarray | None = None if full else reps  # index row -> record id
            self.extra = 0
        else:
            if index.d != d or index.ntotal != n:
                raise ValueError(f"index holds {index.ntotal} x {index.d}-d vectors, expected {n} x {d}")
            self.id_map = None
            # exact copies can take neighbour slots; bounded, a huge copy set only costs recall
            self.extra = int(np.bincount(rep_of).max()) - 1
        self.ntotal = int(index.ntotal)
        by_rows = getattr(index, "search_rows", None)  # a precomputed k-NN table (cell_join.KnnTable)
        self.search = by_rows if by_rows is not None else lambda q_ids, kk: index.search(xb[q_ids], kk)

    def width(self, neighbours: int, k: int) -> int:
        """Results to ask for: the neighbours, the file itself and (bounded) its exact copies."""
        return min(neighbours + 1 + min(self.extra, 4 * k), self.ntotal)

    def of(self, q_ids: np.ndarray, kk: int, distinct: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(B, kk) similarities and representative ids (-1: none, or the query itself; with `distinct`, also
        a representative's exact copies after its first), and (B,) the similarity of the last result (-inf if
        none came back): the list may go on beyond kk below it."""
        D, I = self.search(q_ids, kk)  # noqa: E741  (B, kk)
        valid = I >= 0
        ids = I if self.id_map is None else self.id_map[np.where(valid, I, 0)]  # (B, kk) record ids
        J = np.where(valid, self.rep_of[np.where(valid, ids, 0)], -1)  # (B, kk) representatives
        J[J == q_ids[:, None]] = -1
        if distinct and self.extra > 0:
            J = _drop_repeats(J)
        last = np.where(valid[:, -1], D[:, -1], -np.inf).astype(np.float32)  # (B,)
        return np.where(J >= 0, D, -np.inf).astype(np.float32), J, last


def _drop_repeats(J: np.ndarray) -> np.ndarray:
    """Each row's repeated ids (after their first, most similar, occurrence) -> -1."""
    order = np.argsort(J, axis=1, kind="stable")  # (B, kk)
    Js = np.take_along_axis(J, order, axis=1)
    repeat = np.zeros_like(J, dtype=bool)
    repeat[:, 1:] = (Js[:, 1:] == Js[:, :-1]) & (Js[:, 1:] >= 0)
    out = J.copy()
    np.put_along_axis(out, order, np.where(repeat, -1, Js), axis=1)
    return out


def _rank_similarity(D: np.ndarray, J: np.ndarray, rank: int) -> np.ndarray:
    """(B,) the similarity of each row's rank-th neighbour; 0 where the row has fewer."""
    valid = J >= 0
    at = valid & (np.cumsum(valid, axis=1) == rank)  # (B, kk)
    return np.where(at.any(axis=1), D[np.arange(D.shape[0]), at.argmax(axis=1)], 0.0).astype(np.float32)


def near_pairs(
    xb: np.ndarray,
    reps: np.ndarray,
    rep_of: np.ndarray,
    threshold: float,
    *,
    k: int,
    background_rank: int,
    batch_size: int,
    index: faiss.Index | None,
) -> NearPairs:
    """Pairs of representatives with score >= threshold among each one's k nearest (see the module doc)."""
    lists = _Lists(xb, reps, rep_of, index)
    rank = min(background_rank, reps.size - 1)
    normalised = background_rank > 0
    kk_first = lists.width(search_width(k, background_rank, threshold), k)
    kk_full = lists.width(max(k, background_rank), k)
    background = np.zeros(xb.shape[0], dtype=np.float32) if normalised else None
    kept: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []  # (src, dst, similarity from the index)
    for start in range(0, reps.size, batch_size):
        q_ids = reps[start : start + batch_size]  # (B,)
        D, J, last = lists.of(q_ids, kk_first, distinct=normalised)  # (B, kk), (B, kk), (B,)
        if normalised:
            b = _rank_similarity(D, J, rank)  # (B,)
            if threshold >= 0 and kk_first < kk_full:
                wider = np.flatnonzero(last >= b - SCORE_SLACK)  # the list may go on above b
                if wider.size:
                    D, J = _widen(D, J, lists.of(q_ids[wider], kk_full, distinct=True), wider)
                    b[wider] = _rank_similarity(D[wider], J[wider], rank)
            background[q_ids] = b  # type: ignore[index]  # normalised: an array
            floor = b[:, None] - SCORE_SLACK if threshold >= 0 else np.full((q_ids.size, 1), -np.inf)
        else:
            floor = np.full((q_ids.size, 1), threshold - SCORE_SLACK, dtype=np.float32)
        rows, cols = np.nonzero((J >= 0) & (D >= floor))
        pairs = (q_ids[rows], J[rows, cols], D[rows, cols])
        kept.append(pairs if normalised else _exact(xb, *pairs, threshold, None))
    src, dst, sim = (np.concatenate(parts) for parts in zip(*kept, strict=True)) if kept else _empty()
    if normalised:
        src, dst, sim = _exact(xb, src, dst, sim, threshold, background)
    idx_dtype = np.int32 if xb.shape[0] < 2**31 else np.int64
    return NearPairs(src.astype(idx_dtype), dst.astype(idx_dtype), sim.astype(np.float32), background)


def _widen(
    D: np.ndarray, J: np.ndarray, found: tuple[np.ndarray, np.ndarray, np.ndarray], rows: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """The batch's lists with `rows` replaced by their longer lists (the others padded with none)."""
    D2, J2, _ = found
    width = D2.shape[1]
    Dw = np.full((D.shape[0], width), -np.inf, dtype=np.float32)
    Jw = np.full((J.shape[0], width), -1, dtype=J.dtype)
    Dw[:, : D.shape[1]], Jw[:, : J.shape[1]] = D, J
    Dw[rows], Jw[rows] = D2, J2
    return Dw, Jw


def _exact(
    xb: np.ndarray,
    src: np.ndarray,
    dst: np.ndarray,
    sim: np.ndarray,
    threshold: float,
    background: np.ndarray | None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The pairs whose exact score (recomputed cosine, normalised when `background` is given) reaches the
    threshold; normalised pairs are first pre-filtered on the index's similarity `sim`."""
    if background is not None:
        b = (background[src] + background[dst]) / 2  # (E,)
        maybe = sim - b >= threshold * np.maximum(1.0 - b, 1e-6) - SCORE_SLACK
        src, dst = src[maybe], dst[maybe]
    s = pair_cosines(xb, src, dst)  # (E,) exact cosines
    if background is not None:
        s = normalised_scores(s, background[src], background[dst])
    keep = s >= threshold
    return src[keep], dst[keep], s[keep]


def _empty() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    none = np.empty(0, dtype=np.int64)
    return none, none, np.empty(0, dtype=np.float32)
