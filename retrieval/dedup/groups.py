"""Exact and near duplicate groups over an indexed folder.

Input: the catalog's `FileRecord`s (ids 0..N-1, the rows of the vectors) and float32 (N, D)
L2-normalised embeddings, so the inner product of two rows is their cosine similarity.

1. Exact stage: records with the same `content_hash` form one group (score 1.0, kind "exact").
   Each hash keeps one representative (its best record by the keeper rule) for stage 2.
2. Near stage (`retrieval.dedup.candidates.near_pairs`): one batched FAISS k-nearest-neighbour pass over the
   representatives gives each one's background (for normalised scores) and its candidate edges with
   score >= threshold (never an N x N matrix). Scores are recomputed exactly from the vectors, so an
   approximate index passed in only limits recall (and, for normalised scores, approximates the
   backgrounds), never the reported scores.
3. Grouping is a greedy *star* clustering, so groups never chain: representatives are visited in
   keeper order (best keeper first); each one not yet assigned becomes a centre and claims its
   unassigned neighbours. Edges are symmetric, so a better-ranked neighbour would already have
   claimed the centre: the centre is always the group's keeper, and every duplicate's score is its
   cosine to the keeper, >= threshold. With local-feature verification, a member that another centre
   could claim too, one before it in keeper order, then joins the centre it shares more keypoint inliers
   with (a crop of a photo claimed first by a burst shot of the same scene goes back to its original).

With verification (`checks`), every near pair is decided by `retrieval.dedup.verify.rule` against its pictures:
a duplicate on its evidence, else perhaps *similar* (a different shot of one scene, a different drawing of one
template), which `find_groups(similar=...)` gathers into groups of their own (kind "similar"), never duplicates.

Two records that name the same underlying file (the same path after normalisation; with `root`,
the same (st_dev, st_ino): hard links, symlinks) are never reported as duplicates of each other.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import posixpath
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np

from plumbing.errors import InputError
from retrieval.dedup.candidates.near_pairs import near_pairs, normalised_scores, pair_cosines
from retrieval.dedup.verify.pair_reads import GeometryCheck, GeometryEvidence, PairCheck, PartnerSource
from retrieval.dedup.verify.rule import (
    BYTES,
    MIN_CONTAINED,
    SCORE,
    Evidence,
    Verdicts,
    candidate_floor,
    decide,
    overlap_agrees,
)
from retrieval.records import FileRecord

if TYPE_CHECKING:
    import faiss

log = logging.getLogger(__name__)

# Normalised scores: each image's background is its cosine to its BACKGROUND_RANK-th nearest neighbour (see
# `normalised_scores`). The threshold presets, and parsing the person's text: `retrieval.dedup.threshold`.
BACKGROUND_RANK = 5
NEIGHBOURS = 32  # k: neighbours searched per file
SCORE_NOISE = 1e-4  # two embeddings of the same bytes differ by float noise

DuplicateKind = Literal["exact", "near", "similar"]


@dataclass(frozen=True)
class Duplicate:
    record: FileRecord
    score: float  # cosine similarity to the group's keeper (1.0 for exact copies)
    kind: DuplicateKind
    alignment: float | None = None  # with verification, when the pair was verified (`retrieval.dedup.verify.align`)
    evidence: Evidence | None = None  # what the pair to the keeper was decided on (`retrieval.dedup.verify.rule`)


@dataclass(frozen=True)
class Group:
    keep: FileRecord
    duplicates: tuple[Duplicate, ...]

    @property
    def records(self) -> tuple[FileRecord, ...]:
        """The keeper first, then the duplicates."""
        return (self.keep, *(d.record for d in self.duplicates))


@dataclass(frozen=True)
class PairChecks:
    """What verification reads from the pictures (`retrieval.dedup.verify.pair_reads`): `verify` (alignment and
    plainness), `geometry` (local features) and `partners` (pairs proposed by keypoint votes), each optional
    after `verify`."""

    verify: PairCheck
    geometry: GeometryCheck | None = None
    partners: PartnerSource | None = None


# ---------------------------------------------------------------------------------------------------
# Keeper rule


def _most_pixels(r: FileRecord) -> int:
    return -r.pixels


def _largest_file(r: FileRecord) -> int:
    return -r.size


def _oldest(r: FileRecord) -> int:
    return r.mtime_ns


def _newest(r: FileRecord) -> int:
    return -r.mtime_ns


def _shortest_path(r: FileRecord) -> int:
    return len(r.path)


# name -> key, smaller sorts first (= better keeper)
KEEPER_KEYS: dict[str, Callable[[FileRecord], int]] = {
    "pixels": _most_pixels,
    "size": _largest_file,
    "oldest": _oldest,
    "newest": _newest,
    "shortest_path": _shortest_path,
}
DEFAULT_KEEPER_KEYS: tuple[str, ...] = ("pixels", "size", "oldest", "shortest_path")


@dataclass(frozen=True)
class KeeperRule:
    """Which copy of a group to keep: keys applied in order, then the path, for a total order."""

    keys: tuple[str, ...] = DEFAULT_KEEPER_KEYS

    def __post_init__(self) -> None:
        keys = (self.keys,) if isinstance(self.keys, str) else tuple(self.keys)
        object.__setattr__(self, "keys", keys)
        if not keys:
            raise InputError("keeper rule: give at least one of " + ", ".join(KEEPER_KEYS))
        unknown = [k for k in keys if k not in KEEPER_KEYS]
        if unknown:
            raise InputError(f"keeper rule: unknown key {unknown[0]!r}; expected {', '.join(KEEPER_KEYS)}")
        if len(set(keys)) != len(keys):
            raise InputError(f"keeper rule: a key is repeated in {','.join(keys)}")
        if {"oldest", "newest"} <= set(keys):
            raise InputError("keeper rule: 'oldest' and 'newest' contradict each other")

    @classmethod
    def parse(cls, text: str) -> KeeperRule:
        """From a comma-separated option value like "pixels,size,oldest,shortest_path"."""
        return cls(tuple(part.strip() for part in text.split(",") if part.strip()))

    def sort_key(self, record: FileRecord) -> tuple[int | str, ...]:
        return (*(KEEPER_KEYS[k](record) for k in self.keys), record.path, record.id)

    def order(self, records: Iterable[FileRecord]) -> list[FileRecord]:
        """Best keeper first."""
        return sorted(records, key=self.sort_key)

    def best(self, records: Iterable[FileRecord]) -> FileRecord:
        return min(records, key=self.sort_key)


def with_keeper(group: Group, path: str) -> Group:
    """`group` with the member at `path` kept instead; every other member becomes a duplicate of it. Scores
    stay those measured against the rule's keeper (the swapped pair's score is the same either way)."""
    if path == group.keep.path:
        return group
    chosen = next((d for d in group.duplicates if d.record.path == path), None)
    if chosen is None:
        raise InputError("That file is not in this group; choose one from the list.")
    kind: DuplicateKind = "exact" if chosen.kind == "exact" else chosen.kind
    old = Duplicate(group.keep, chosen.score, kind, chosen.alignment, chosen.evidence)
    rest = [d for d in group.duplicates if d is not chosen]
    rest = [
        dataclasses.replace(d, kind="exact", evidence=BYTES)
        if d.record.content_hash == chosen.record.content_hash
        else d
        for d in rest
    ]
    return Group(chosen.record, (old, *rest))


# ---------------------------------------------------------------------------------------------------
# Same underlying file


def normalise_path(path: str) -> str:
    """POSIX form of a catalog path: `./a//b/../c.jpg` -> `a/c.jpg`."""
    return posixpath.normpath(path.replace("\\", "/"))


def file_identity(record: FileRecord, root: Path | None = None) -> tuple[object, ...]:
    """A key equal for two records exactly when they name the same underlying file.

    With `root` and an existing file: (st_dev, st_ino) after following symlinks, which makes hard
    links, symlinks and one file reached by two paths equal. Otherwise the normalised path.
    """
    rel = normalise_path(record.path)
    if root is not None:
        try:
            st = os.stat(root / rel)
        except OSError:
            pass
        else:
            if st.st_ino:  # some filesystems report 0: no usable inode
                return ("inode", st.st_dev, st.st_ino)
    return ("path", rel)


def same_file(a: FileRecord, b: FileRecord, root: Path | None = None) -> bool:
    return file_identity(a, root) == file_identity(b, root)


class _Identities:
    """file_identity() per record id, computed lazily (only records that meet a candidate)."""

    def __init__(self, records: Sequence[FileRecord], root: Path | None) -> None:
        self._records = records
        self._root = root
        self._cache: dict[int, tuple[object, ...]] = {}

    def of(self, i: int) -> tuple[object, ...]:
        key = self._cache.get(i)
        if key is None:
            key = self._cache[i] = file_identity(self._records[i], self._root)
        return key

    def same(self, i: int, j: int) -> bool:
        return self.of(i) == self.of(j)


# ---------------------------------------------------------------------------------------------------
# Grouping


def _by_id(records: Sequence[FileRecord], n: int) -> list[FileRecord]:
    if len(records) != n:
        raise ValueError(f"{len(records)} records but {n} vectors")
    out: list[FileRecord | None] = [None] * n
    for r in records:
        if not 0 <= r.id < n or out[r.id] is not None:
            raise ValueError(f"record ids must be 0..{n - 1}, each once; got id {r.id} ({r.path})")
        out[r.id] = r
    return out  # type: ignore[return-value]  # every slot filled: n distinct ids in range


def _as_matrix(vectors: np.ndarray) -> np.ndarray:
    xb = np.ascontiguousarray(vectors, dtype=np.float32)  # (N, D), no copy when already so
    if xb.ndim != 2:
        raise ValueError(f"vectors must be (N, D), got shape {xb.shape}")
    return xb


@dataclass
class _ExactStage:
    rep_of: np.ndarray  # (N,) id of the representative of each record's hash
    reps: np.ndarray  # (R,) representative ids, ascending
    copies: dict[int, list[int]]  # representative -> its other copies (distinct files), keeper order


def _exact_stage(records: list[FileRecord], keeper: KeeperRule, ident: _Identities) -> _ExactStage:
    n = len(records)
    by_hash: dict[str, list[int]] = {}
    for r in records:
        by_hash.setdefault(r.content_hash, []).append(r.id)
    rep_of = np.arange(n, dtype=np.int64)
    is_rep = np.ones(n, dtype=bool)
    copies: dict[int, list[int]] = {}
    for ids in by_hash.values():
        if len(ids) == 1:
            continue
        ids.sort(key=lambda i: keeper.sort_key(records[i]))
        rep = ids[0]
        seen = {ident.of(rep)}
        rest: list[int] = []
        for i in ids[1:]:
            rep_of[i] = rep
            is_rep[i] = False
            key = ident.of(i)
            if key in seen:
                log.debug("%s is the same file as another record; not a duplicate", records[i].path)
                continue
            seen.add(key)
            rest.append(i)
        if rest:
            copies[rep] = rest
    return _ExactStage(rep_of=rep_of, reps=np.flatnonzero(is_rep), copies=copies)


# (member, centres (C,), its scores to them (C,)) -> (C,) how strongly the member matches each centre
Strength = Callable[[int, np.ndarray, np.ndarray], np.ndarray]


def _by_geometry(geometry: GeometryCheck) -> Strength:
    """Strength = local-feature inliers (0 unless one frame lies inside the other and the overlap agrees), the
    score breaking ties."""

    def strength(member: int, centres: np.ndarray, scores: np.ndarray) -> np.ndarray:
        g = GeometryEvidence.of(geometry(np.full(centres.size, member, dtype=centres.dtype), centres), centres.size)
        ok = (g.contained >= MIN_CONTAINED) & overlap_agrees(g)
        inliers = np.where(ok, np.maximum(g.inliers, 0), 0)
        return inliers + (np.clip(scores, -1.0, 1.0) + 1.0) / 4  # the score term stays under one inlier

    return strength


def _star_groups(
    src: np.ndarray,
    dst: np.ndarray,
    sim: np.ndarray,
    records: list[FileRecord],
    keeper: KeeperRule,
    ident: _Identities,
    strength: Strength | None = None,
) -> list[tuple[int, dict[int, float]]]:
    """Greedy star clustering: (centre, {member: score to centre}); the centre is the best keeper. With
    `strength`, a member that a centre earlier in keeper order than itself could claim too then joins the one
    it matches best (`_best_centres`)."""
    if src.size == 0:
        return []
    a = np.concatenate([src, dst])  # (2E,) symmetrise: kNN lists are not symmetric
    b = np.concatenate([dst, src])  # (2E,)
    s = np.concatenate([sim, sim])  # (2E,)
    perm = np.argsort(a, kind="stable")
    a, b, s = a[perm], b[perm], s[perm]
    nodes, starts = np.unique(a, return_index=True)  # (M,) nodes with at least one edge
    ends = np.append(starts[1:], a.size)
    order = sorted(range(nodes.size), key=lambda t: keeper.sort_key(records[int(nodes[t])]))
    assigned = np.zeros(len(records), dtype=bool)
    stars: dict[int, dict[int, float]] = {}  # every centre, with or without members
    for t in order:
        c = int(nodes[t])
        if assigned[c]:
            continue
        assigned[c] = True
        nb, sc = b[starts[t] : ends[t]], s[starts[t] : ends[t]]
        free = ~assigned[nb]
        members: dict[int, float] = {}
        for j, sj in zip(nb[free].tolist(), sc[free].tolist(), strict=True):
            if j in members or ident.same(c, j):
                continue
            members[j] = sj
        if members:
            assigned[list(members)] = True
        stars[c] = members
    if strength is not None:
        rank = {int(nodes[t]): r for r, t in enumerate(order)}  # keeper order
        _best_centres(stars, (nodes, starts, ends, b, s), ident, strength, rank)
    return [(c, m) for c, m in stars.items() if m]


def _best_centres(
    stars: dict[int, dict[int, float]],
    lists: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray],
    ident: _Identities,
    strength: Strength,
    rank: dict[int, int],
) -> None:
    """Move each member that another centre could claim to the centre it matches best (in place); only to a
    centre before it in keeper order (`rank`), so a group's centre stays its best keeper. `lists`: each
    node's neighbours and scores (nodes, starts, ends, neighbour, score) as `_star_groups` holds them."""
    nodes, starts, ends, b, s = lists
    where = {int(n): t for t, n in enumerate(nodes.tolist())}
    for m, c in [(m, c) for c, members in stars.items() for m in members]:
        t = where[m]
        nb, sc = b[starts[t] : ends[t]], s[starts[t] : ends[t]]
        rival = np.array(
            [j in stars and j != c and rank[j] < rank[m] and not ident.same(j, m) for j in nb.tolist()], dtype=bool
        )
        if not rival.any():
            continue
        cands = np.concatenate([[c], nb[rival]])  # (C,) the centre it joined first, then the others
        scores = np.concatenate([[stars[c][m]], sc[rival]])
        best = int(np.argmax(strength(m, cands, scores)))  # ties: the first, the centre it joined
        if best > 0:
            del stars[c][m]
            stars[int(cands[best])][m] = float(scores[best])


def _sorted_group(keep: FileRecord, duplicates: Iterable[Duplicate]) -> Group:
    dups = sorted(duplicates, key=lambda d: (-d.score, d.record.path, d.record.id))
    return Group(keep=keep, duplicates=tuple(dups))


def _with_partners(
    src: np.ndarray,
    dst: np.ndarray,
    score: np.ndarray,
    proposed: tuple[np.ndarray, np.ndarray],
    xb: np.ndarray,
    background: np.ndarray | None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The candidate edges plus the proposed pairs not among them (scored exactly), and (E,) which edges
    were proposed."""
    p_src, p_dst = (np.asarray(x, dtype=np.int64) for x in proposed)
    n = np.int64(xb.shape[0])
    have = np.minimum(src, dst).astype(np.int64) * n + np.maximum(src, dst)  # (E,) pair keys
    want = np.minimum(p_src, p_dst) * n + np.maximum(p_src, p_dst)  # (P,)
    new = ~np.isin(want, have)
    a, b = p_src[new], p_dst[new]
    s = pair_cosines(xb, a, b)
    if background is not None:
        s = normalised_scores(s, background[a], background[b])
    voted = np.concatenate([np.isin(have, want), np.ones(a.size, dtype=bool)])
    log.debug("keypoint votes: %d proposed pairs, %d not candidates by their score", want.size, a.size)
    return (
        np.concatenate([src, a.astype(src.dtype)]),
        np.concatenate([dst, b.astype(dst.dtype)]),
        np.concatenate([score, s.astype(np.float32)]),
        voted,
    )


@dataclass(frozen=True)
class GroupingConfig:
    """How `find_groups` groups: `threshold` (None: exact copies only) on the score, the cosine or with
    `background_rank` r > 0 the normalised score of `normalised_scores` (background: each image's cosine to its
    r-th nearest neighbour); `keeper`; up to `k` neighbours searched per file (a cluster larger than k may come
    back split in two), in batches of `batch_size` queries; with `similar`, similar pairs gathered too."""

    threshold: float | None
    keeper: KeeperRule = KeeperRule()
    k: int = NEIGHBOURS
    batch_size: int = 4096
    background_rank: int = BACKGROUND_RANK
    similar: bool = False

    def floor(self, verified: bool) -> float | None:
        """The lowest score a candidate pair can have (`rule.candidate_floor`); None for exact copies only. The
        neighbour search is sized by it (`retrieval.dedup.run.neighbour_table`) and the grouping reads it."""
        return None if self.threshold is None else candidate_floor(self.threshold, verified)

    def __post_init__(self) -> None:
        if self.k < 1 or self.batch_size < 1:
            raise ValueError(f"k and batch_size must be >= 1, got k={self.k}, batch_size={self.batch_size}")
        if self.background_rank < 0:
            raise ValueError(f"background_rank must be >= 0, got {self.background_rank}")


@dataclass(frozen=True)
class Grouping:
    """What `find_groups` found: duplicate groups, and with `GroupingConfig.similar` the similar groups (each
    member kind "similar" to its centre; a file may be in both)."""

    groups: list[Group]
    similar: list[Group]


def find_groups(
    records: Sequence[FileRecord],
    vectors: np.ndarray,
    config: GroupingConfig,
    *,
    index: faiss.Index | None = None,
    root: Path | None = None,
    checks: PairChecks | None = None,
) -> list[Group]:
    """Duplicate groups: exact (same content hash) first, then near. Groups: largest first, then by keeper path.
    `find_grouping` with the similar groups too."""
    return find_grouping(records, vectors, config, index=index, root=root, checks=checks).groups


def find_grouping(
    records: Sequence[FileRecord],
    vectors: np.ndarray,
    config: GroupingConfig,
    *,
    index: faiss.Index | None = None,
    root: Path | None = None,
    checks: PairChecks | None = None,
) -> Grouping:
    """Exact groups (same content hash), then near ones: without `checks`, score >= threshold to the keeper;
    with them, every pair scoring >= threshold - VERIFY_BELOW is decided by `retrieval.dedup.verify.rule` against
    its pictures, and each duplicate carries its evidence.

    `index` is an optional FAISS index over the same rows (ids = record ids); it is only used to find candidates
    and backgrounds, scores are always exact cosines (normalised against them). Without it, an exact flat index
    over one copy of each distinct file is searched. With `root`, records that are the same file on disk (hard
    links, symlinks) are never paired. With `checks.partners` (and geometry), the pairs it proposes among the
    representatives (keypoint votes: `retrieval.dedup.candidates.feature_votes`) are candidates too, whatever
    their score.
    """
    threshold = config.threshold
    xb = _as_matrix(vectors)
    recs = _by_id(records, xb.shape[0])
    ident = _Identities(recs, root)
    stage = _exact_stage(recs, config.keeper, ident)

    def exact_copies(rep: int) -> list[Duplicate]:
        return [Duplicate(recs[i], 1.0, "exact", evidence=BYTES) for i in stage.copies.get(rep, [])]

    groups: list[Group] = []
    similar: list[Group] = []
    grouped: set[int] = set()
    if threshold is not None and stage.reps.size > 1:
        floor = candidate_floor(threshold, checks is not None)  # as config.floor, which sized the neighbour search
        pairs = near_pairs(
            xb,
            stage.reps,
            stage.rep_of,
            floor,
            k=config.k,
            background_rank=config.background_rank,
            batch_size=config.batch_size,
            index=index,
        )
        background = pairs.background
        log.debug("%d candidate edges at score %.4f", pairs.src.size, floor)
        src, dst, score = pairs.src, pairs.dst, pairs.score
        evidence_of: Callable[[int, int], Evidence] = lambda a, b: SCORE  # noqa: E731
        strength = None
        if checks is not None:
            voted = None
            if checks.geometry is not None and checks.partners is not None:
                src, dst, score, voted = _with_partners(src, dst, score, checks.partners(stage.reps), xb, background)
            verdicts = decide(src, dst, score, threshold, checks.verify, checks.geometry, voted)
            evidence_of = _evidence_lookup(verdicts)
            if config.similar:
                s = verdicts.similar
                for c, members in _star_groups(
                    verdicts.src[s], verdicts.dst[s], verdicts.score[s], recs, config.keeper, ident
                ):
                    dups = [
                        Duplicate(recs[m], sc, "similar", evidence=evidence_of(c, m))
                        for m in members
                        for sc in [members[m]]
                    ]
                    similar.append(_sorted_group(recs[c], dups))
            d = verdicts.duplicate
            src, dst, score = verdicts.src[d], verdicts.dst[d], verdicts.score[d]
            strength = None if checks.geometry is None else _by_geometry(checks.geometry)
        for c, members in _star_groups(src, dst, score, recs, config.keeper, ident, strength):
            dups = exact_copies(c)
            for m, score_m in members.items():
                ev = evidence_of(c, m)
                verified = ev.check in ("alignment", "keypoints")  # 0.0: verified on keypoints, no alignment made
                alignment_m = (0.0 if ev.alignment is None else ev.alignment) if verified else None
                dups.append(Duplicate(recs[m], score_m, "near", alignment_m, ev))
                for i in stage.copies.get(m, []):
                    if ident.same(c, i):
                        continue
                    s_copy = float(np.dot(xb[c], xb[i]))  # the same bytes embed the same, up to noise
                    if background is not None:
                        s_copy = float(normalised_scores(np.float32(s_copy), background[c], background[m]))
                    if s_copy >= min(floor, score_m) - SCORE_NOISE:  # the same bytes as m, which made it
                        dups.append(Duplicate(recs[i], s_copy, "near", alignment_m, ev))
                grouped.add(m)
            grouped.add(c)
            groups.append(_sorted_group(recs[c], dups))
    for rep in stage.copies:
        if rep not in grouped:
            groups.append(_sorted_group(recs[rep], exact_copies(rep)))
    groups.sort(key=lambda g: (-len(g.duplicates), g.keep.path, g.keep.id))
    similar.sort(key=lambda g: (-len(g.duplicates), g.keep.path, g.keep.id))
    log.info(
        "%d duplicate groups, %d duplicates among %d files; %d similar groups",
        len(groups),
        sum(len(g.duplicates) for g in groups),
        len(recs),
        len(similar),
    )
    return Grouping(groups, similar)


def _evidence_lookup(verdicts: Verdicts) -> Callable[[int, int], Evidence]:
    """(a, b) -> the evidence of the verdict on that pair (either order), its matches as (xa, ya, xb, yb)."""
    where = {(a, b): e for e, (a, b) in enumerate(zip(verdicts.src.tolist(), verdicts.dst.tolist(), strict=True))}

    def lookup(a: int, b: int) -> Evidence:
        e = where.get((a, b))
        if e is not None:
            return verdicts.evidence(e)
        ev = verdicts.evidence(where[(b, a)])
        return ev if ev.matches is None else dataclasses.replace(ev, matches=ev.matches[:, [2, 3, 0, 1]])

    return lookup


# ---------------------------------------------------------------------------------------------------
# Calibration (`--calibrate`)


def nearest_neighbour_similarities(
    vectors: np.ndarray,
    k: int = 1,
    batch_size: int = 4096,
    *,
    index: faiss.Index | None = None,
) -> np.ndarray:
    """(N, min(k, N-1)) cosine of each row to its k nearest other rows, nearest first.

    Exact copies count (they show up as 1.0); the row itself does not. NaN where an approximate
    `index` returned fewer neighbours.
    """
    import faiss

    if k < 1 or batch_size < 1:
        raise ValueError(f"k and batch_size must be >= 1, got k={k}, batch_size={batch_size}")
    xb = _as_matrix(vectors)
    n, d = xb.shape
    k_eff = min(k, n - 1)
    if k_eff <= 0:
        return np.empty((n, 0), dtype=np.float32)
    if index is None:
        index = faiss.IndexFlatIP(d)
        index.add(xb)
    kk = k_eff + 1
    out = np.empty((n, k_eff), dtype=np.float32)
    for start in range(0, n, batch_size):
        q = xb[start : start + batch_size]  # (B, D)
        D, I = index.search(q, kk)  # noqa: E741  (B, kk)
        own = I == np.arange(start, start + q.shape[0])[:, None]  # (B, kk) the query itself
        own[~own.any(axis=1), -1] = True  # self not returned (ties): drop the farthest instead
        D = np.where(I >= 0, D, np.nan)
        out[start : start + q.shape[0]] = D[~own].reshape(q.shape[0], k_eff)
    return out


def calibration_histogram(sims: np.ndarray, bins: int = 20) -> list[tuple[float, float, int]]:
    """(low, high, count) bins over [floor(min), 1.0] of the given similarities (NaN ignored)."""
    if bins < 1:
        raise ValueError(f"bins must be >= 1, got {bins}")
    x = np.asarray(sims, dtype=np.float64).ravel()
    x = np.clip(x[~np.isnan(x)], -1.0, 1.0)
    if x.size == 0:
        return []
    low = max(-1.0, math.floor(float(x.min()) * 20) / 20)
    if low >= 1.0:
        low = 0.95
    counts, edges = np.histogram(x, bins=bins, range=(low, 1.0))
    return [(float(edges[b]), float(edges[b + 1]), int(counts[b])) for b in range(bins)]
