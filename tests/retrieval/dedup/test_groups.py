"""dedup: exact + near groups, keeper rule, no chaining, no self pairs, calibration, output formats."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import math
import os

import faiss
import numpy as np
import pytest

from plumbing.errors import InputError
from retrieval.dedup.formats import format_histogram, groups_to_csv, groups_to_json, groups_to_table
from retrieval.dedup.groups import (
    Duplicate,
    Group,
    KeeperRule,
    calibration_histogram,
    file_identity,
    nearest_neighbour_similarities,
    normalised_scores,
    same_file,
)
from retrieval.dedup.threshold import THRESHOLD_PRESETS
from retrieval.records import FileRecord
from tests.retrieval.dedup.grouping import groups_of


def rec(i, path=None, *, size=1000, mtime=0, content=None, w=100, h=100) -> FileRecord:
    content = f"file-{i}" if content is None else content
    digest = hashlib.sha256(content.encode()).hexdigest()
    return FileRecord(i, path or f"img{i:03d}.jpg", size, mtime, digest, w, h)


def unit(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def as_sets(groups: list[Group]) -> set[tuple[str, frozenset[str]]]:
    return {(g.keep.path, frozenset(d.record.path for d in g.duplicates)) for g in groups}


def assert_keeper_invariant(groups, records, vectors, threshold, keeper=KeeperRule()):
    """Every duplicate's score is its cosine to the keeper, >= threshold; the keeper is the rule's best."""
    for g in groups:
        assert g.keep == keeper.best(g.records)
        for d in g.duplicates:
            cos = float(vectors[g.keep.id] @ vectors[d.record.id])
            if d.kind == "exact":
                assert d.record.content_hash == g.keep.content_hash and d.score == 1.0
            else:
                assert d.score == pytest.approx(cos, abs=1e-5)
                assert d.score >= threshold
    seen = [r.id for g in groups for r in g.records]
    assert len(seen) == len(set(seen)), "a file is in two groups"


# --- keeper rule -------------------------------------------------------------------------------------


def test_keeper_rule_default_order_each_key_decides():
    rule = KeeperRule()
    # pixels beat a bigger file
    assert rule.best([rec(0, size=9000, w=50, h=50), rec(1, size=10, w=100, h=100)]).id == 1
    # equal pixels: the larger file
    assert rule.best([rec(0, size=10), rec(1, size=20)]).id == 1
    # equal pixels and size: the oldest
    assert rule.best([rec(0, mtime=5), rec(1, mtime=3)]).id == 1
    # all equal: the shortest path, then the path lexicographically
    assert rule.best([rec(0, "deep/dir/x.jpg"), rec(1, "zz.jpg")]).id == 1
    assert rule.best([rec(0, "b.jpg"), rec(1, "a.jpg")]).id == 1
    order = rule.order([rec(0, "b.jpg", mtime=1), rec(1, "a.jpg", mtime=1), rec(2, "c.jpg", mtime=0)])
    assert [r.id for r in order] == [2, 1, 0]


def test_keeper_rule_is_configurable_and_validated():
    old_small = rec(0, mtime=1, w=10, h=10)
    new_big = rec(1, mtime=2, w=100, h=100)
    assert KeeperRule().best([old_small, new_big]) == new_big
    assert KeeperRule(["oldest", "pixels"]).best([old_small, new_big]) == old_small
    assert KeeperRule.parse("newest, size").best([old_small, new_big]) == new_big
    assert KeeperRule.parse("shortest_path").keys == ("shortest_path",)
    for bad in (["pixels", "colour"], ["size", "size"], [], ["oldest", "newest"]):
        with pytest.raises(InputError, match="keeper rule"):
            KeeperRule(bad)


# --- grouping ----------------------------------------------------------------------------------------


def test_chain_is_not_one_group():
    # A~B and B~C at cos 0.92, A~C at cos 2*0.92^2-1 = 0.69: below 0.9, so A and C never share a group
    theta = math.acos(0.92)
    v = unit([[1, 0], [math.cos(theta), math.sin(theta)], [math.cos(2 * theta), math.sin(2 * theta)]])
    a, b, c = rec(0, "a.jpg", w=300, h=300), rec(1, "b.jpg", w=200, h=200), rec(2, "c.jpg")
    groups = groups_of([a, b, c], v, 0.9)
    assert as_sets(groups) == {("a.jpg", frozenset({"b.jpg"}))}
    assert groups[0].duplicates[0].score == pytest.approx(0.92, abs=1e-6)
    assert_keeper_invariant(groups, [a, b, c], v, 0.9)

    # when B is the best keeper, A and C are both within 0.9 of it: one star around B is correct
    a, b, c = rec(0, "a.jpg", w=200, h=200), rec(1, "b.jpg", w=300, h=300), rec(2, "c.jpg")
    groups = groups_of([a, b, c], v, 0.9)
    assert as_sets(groups) == {("b.jpg", frozenset({"a.jpg", "c.jpg"}))}
    assert_keeper_invariant(groups, [a, b, c], v, 0.9)

    # when C is the best keeper: {C, B}; A is left alone
    a, b, c = rec(0, "a.jpg"), rec(1, "b.jpg", w=200, h=200), rec(2, "c.jpg", w=300, h=300)
    groups = groups_of([a, b, c], v, 0.9)
    assert as_sets(groups) == {("c.jpg", frozenset({"b.jpg"}))}


def planted_clusters(rng: np.random.Generator, sizes: list[int], dim: int = 16, noise: float = 0.05):
    centres = unit(rng.standard_normal((len(sizes), dim)))
    rows, labels = [], []
    for c, size in enumerate(sizes):
        rows.append(unit(centres[c] + noise * rng.standard_normal((size, dim))))
        labels += [c] * size
    perm = rng.permutation(len(labels))
    vectors = np.concatenate(rows)[perm]
    labels = np.array(labels)[perm]
    records = [
        rec(
            i,
            f"dir{i % 3}/p{i:03d}.jpg",
            size=int(rng.integers(1000, 5000)),
            w=int(rng.integers(10, 40)),
            h=30,
        )
        for i in range(len(labels))
    ]
    return records, vectors, labels


def test_find_groups_matches_bruteforce_components_on_planted_clusters():
    rng = np.random.default_rng(0)
    sizes = [1, 2, 3, 5, 8, 1, 4, 2, 6, 1]
    records, vectors, labels = planted_clusters(rng, sizes)
    t = 0.9
    S = vectors @ vectors.T  # (N, N) brute-force oracle
    same = labels[:, None] == labels[None, :]
    assert S[same].min() > t + 0.01 and S[~same].max() < t - 0.1  # well separated: clusters = groups
    rule = KeeperRule()
    expected = set()
    for c in range(len(sizes)):
        members = [records[i] for i in np.flatnonzero(labels == c)]
        if len(members) > 1:
            keep = rule.best(members)
            expected.add((keep.path, frozenset(m.path for m in members if m != keep)))
    groups = groups_of(records, vectors, t, k=8, batch_size=7)
    assert as_sets(groups) == expected
    for g in groups:
        for d in g.duplicates:
            assert d.score == pytest.approx(float(S[g.keep.id, d.record.id]), abs=1e-5)
    assert_keeper_invariant(groups, records, vectors, t)
    # sorted: largest group first, duplicates by descending score
    assert [len(g.duplicates) for g in groups] == sorted((len(g.duplicates) for g in groups), reverse=True)
    for g in groups:
        assert [d.score for d in g.duplicates] == sorted((d.score for d in g.duplicates), reverse=True)


def bruteforce_star(records, vectors, t, rule, scores=None):
    """The grouping spec on a dense N x N matrix (cosines, or the given scores): visit in keeper order,
    claim unassigned >= t."""
    S = vectors @ vectors.T if scores is None else scores  # (N, N)
    assigned, groups = set(), set()
    for c in rule.order(records):
        if c.id in assigned:
            continue
        assigned.add(c.id)
        members = [r for r in records if r.id not in assigned and S[c.id, r.id] >= t]
        if members:
            assigned.update(r.id for r in members)
            groups.add((c.path, frozenset(r.path for r in members)))
    return groups


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_find_groups_matches_dense_star_oracle_where_chains_exist(seed):
    # random walks make chains (each step close to the last, the ends far apart)
    rng = np.random.default_rng(seed)
    walks = []
    for _ in range(6):
        x = unit(rng.standard_normal(8))
        for _ in range(int(rng.integers(1, 7))):
            walks.append(x)
            x = unit(x + 0.35 * rng.standard_normal(8))
    vectors = np.stack(walks)
    records = [rec(i, size=int(rng.integers(1, 4)), mtime=int(rng.integers(0, 3))) for i in range(len(walks))]
    t = 0.85
    S = vectors @ vectors.T
    assert np.abs(S - t).min() > 1e-4  # nothing on the boundary, float order cannot flip a pair
    groups = groups_of(records, vectors, t, k=len(records), batch_size=5)
    assert as_sets(groups) == bruteforce_star(records, vectors, t, KeeperRule())
    assert_keeper_invariant(groups, records, vectors, t)
    chained = any(S[g.keep.id, d.record.id] < t for g in groups for d in g.duplicates)
    assert not chained


@pytest.mark.parametrize("seed", [4, 5])
def test_find_groups_normalised_matches_dense_star_oracle(seed):
    # planted near copies and small tight clusters among random rows; scores normalised against each row's
    # 5th nearest neighbour, from the dense matrix
    rng = np.random.default_rng(seed)
    x = unit(rng.standard_normal((160, 12)))
    x[20:40] = unit(x[:20] + 0.3 * unit(rng.standard_normal((20, 12))))
    x[40:64] = unit(np.repeat(x[40:46], 4, axis=0) + 0.2 * unit(rng.standard_normal((24, 12))))
    records = [rec(i, size=int(rng.integers(1, 5)), w=int(rng.integers(50, 60))) for i in range(len(x))]
    S = x @ x.T
    np.fill_diagonal(S, -np.inf)
    b = -np.sort(-S, axis=1)[:, 4]
    scores = normalised_scores(S, b[:, None], b[None, :])
    np.fill_diagonal(scores, -np.inf)
    t = 0.35
    assert np.abs(scores - t).min() > 1e-4  # nothing on the boundary
    groups = groups_of(records, x, t, background_rank=5, batch_size=33)
    assert len(groups) > 10
    assert as_sets(groups) == bruteforce_star(records, x, t, KeeperRule(), scores)
    for g in groups:
        for d in g.duplicates:
            assert d.score == pytest.approx(float(scores[g.keep.id, d.record.id]), abs=1e-4)


def test_exact_groups_by_hash():
    records = [
        rec(0, "a/one.jpg", content="X", mtime=5),
        rec(1, "b/one.jpg", content="X", mtime=1),  # oldest copy of X: the keeper
        rec(2, "c.jpg", content="X", mtime=9),
        rec(3, "d.jpg", content="Y"),
        rec(4, "e.jpg", content="Y", size=2000),  # larger file of Y: the keeper
        rec(5, "f.jpg", content="Z"),
    ]
    vectors = unit(np.random.default_rng(0).standard_normal((6, 8)))  # unrelated: hashes alone decide
    groups = groups_of(records, vectors, None)
    assert as_sets(groups) == {
        ("b/one.jpg", frozenset({"a/one.jpg", "c.jpg"})),
        ("e.jpg", frozenset({"d.jpg"})),
    }
    assert groups[0].keep.path == "b/one.jpg"  # the larger group first
    assert all(d.kind == "exact" and d.score == 1.0 for g in groups for d in g.duplicates)
    # a threshold of 1.0 with unrelated vectors finds the same groups (exact stage first)
    assert as_sets(groups_of(records, vectors, 1.0)) == as_sets(groups)


def test_exact_copies_collapse_into_the_near_group():
    v0, v1 = unit([1, 0, 0]), unit([0.95, 0.3122, 0])
    records = [
        rec(0, "a.jpg", content="A", w=300, h=300),
        rec(1, "a_copy.jpg", content="A", w=300, h=300),
        rec(2, "b.jpg", content="B"),
        rec(3, "b_copy.jpg", content="B"),
        rec(4, "far.jpg", content="F"),
    ]
    vectors = np.stack([v0, v0, v1, v1, unit([0, 0, 1])])
    groups = groups_of(records, vectors, 0.9)
    assert len(groups) == 1
    g = groups[0]
    assert g.keep.path == "a.jpg"
    kinds = {d.record.path: (d.kind, round(d.score, 4)) for d in g.duplicates}
    cos = round(float(v0 @ v1), 4)
    assert kinds == {"a_copy.jpg": ("exact", 1.0), "b.jpg": ("near", cos), "b_copy.jpg": ("near", cos)}
    assert_keeper_invariant(groups, records, vectors, 0.9)


def test_batching_and_a_given_index_do_not_change_groups():
    rng = np.random.default_rng(7)
    records, vectors, _ = planted_clusters(rng, [3, 4, 1, 5, 2, 2])
    # plant exact copies: same hash, same vector
    copies = [records[0], records[5]]
    for j, r in enumerate(copies):
        records.append(FileRecord(len(records), f"copy{j}.jpg", r.size, 0, r.content_hash, r.width, r.height))
        vectors = np.concatenate([vectors, vectors[r.id : r.id + 1]])
    ref = groups_of(records, vectors, 0.9, batch_size=4096)
    assert ref
    assert as_sets(groups_of(records, vectors, 0.9, batch_size=1)) == as_sets(ref)
    index = faiss.IndexFlatIP(vectors.shape[1])
    index.add(vectors)
    assert as_sets(groups_of(records, vectors, 0.9, index=index, k=6)) == as_sets(ref)


def test_records_must_match_vector_rows():
    v = unit(np.eye(3))
    with pytest.raises(ValueError, match="records"):
        groups_of([rec(0), rec(1)], v, 0.9)
    with pytest.raises(ValueError, match="ids"):
        groups_of([rec(0), rec(1), rec(1)], v, 0.9)
    assert groups_of([], np.zeros((0, 4), np.float32), 0.9) == []


# --- never pair a file with itself ------------------------------------------------------------------


def test_same_file_helper(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "a.jpg").write_bytes(b"pixels")
    (tmp_path / "copy.jpg").write_bytes(b"pixels")
    os.link(tmp_path / "a.jpg", tmp_path / "hard.jpg")
    os.symlink(tmp_path / "a.jpg", tmp_path / "sub" / "sym.jpg")
    a = rec(0, "a.jpg")
    assert same_file(a, rec(1, "./a.jpg"))  # path normalisation, no filesystem needed
    assert same_file(a, rec(1, "sub/../a.jpg"))
    assert not same_file(a, rec(1, "hard.jpg"))  # without root only the paths count
    assert same_file(a, rec(1, "hard.jpg"), tmp_path)
    assert same_file(a, rec(1, "sub/sym.jpg"), tmp_path)
    assert not same_file(a, rec(1, "copy.jpg"), tmp_path)  # equal bytes, different file
    assert file_identity(rec(1, "missing.jpg"), tmp_path) == ("path", "missing.jpg")


def test_self_pairs_are_never_reported(tmp_path):
    (tmp_path / "a.jpg").write_bytes(b"pixels")
    (tmp_path / "copy.jpg").write_bytes(b"pixels")
    os.link(tmp_path / "a.jpg", tmp_path / "hard.jpg")
    os.symlink("a.jpg", tmp_path / "sym.jpg")
    v = unit(np.ones((1, 4)))

    def found(paths, root):
        records = [rec(i, p, content="same") for i, p in enumerate(paths)]
        return groups_of(records, np.repeat(v, len(paths), axis=0), 0.9, root=root)

    assert found(["a.jpg", "a.jpg"], None) == []  # the same path twice
    assert found(["a.jpg", "./a.jpg"], None) == []
    assert found(["a.jpg", "hard.jpg"], tmp_path) == []  # a hard link
    assert found(["a.jpg", "sym.jpg"], tmp_path) == []  # a symlink
    # a real copy next to the aliases: one group, the aliases collapse to one member
    groups = found(["a.jpg", "hard.jpg", "sym.jpg", "copy.jpg"], tmp_path)
    assert as_sets(groups) == {("a.jpg", frozenset({"copy.jpg"}))}


def test_near_stage_never_pairs_a_file_with_itself(tmp_path):
    # a stale catalog: the two names of one inode carry different hashes and near vectors
    (tmp_path / "a.jpg").write_bytes(b"pixels")
    os.link(tmp_path / "a.jpg", tmp_path / "hard.jpg")
    records = [rec(0, "a.jpg", content="old"), rec(1, "hard.jpg", content="new")]
    vectors = unit([[1, 0], [0.99, 0.141]])
    assert len(groups_of(records, vectors, 0.9)) == 1  # by path alone they look like a pair
    assert groups_of(records, vectors, 0.9, root=tmp_path) == []


# --- calibration -------------------------------------------------------------------------------------


def test_nearest_neighbour_similarities_match_bruteforce():
    rng = np.random.default_rng(3)
    vectors = unit(rng.standard_normal((23, 8)))
    vectors[5] = vectors[9]  # an exact copy counts as a neighbour at 1.0
    S = vectors @ vectors.T
    np.fill_diagonal(S, -np.inf)
    expected = -np.sort(-S, axis=1)[:, :3]  # (N, 3) nearest other rows
    got = nearest_neighbour_similarities(vectors, k=3, batch_size=7)
    np.testing.assert_allclose(got, expected, atol=1e-5)
    assert got[5, 0] == pytest.approx(1.0, abs=1e-5)
    assert nearest_neighbour_similarities(vectors[:1], k=1).shape == (1, 0)


def test_calibration_histogram_and_text():
    sims = np.array([-0.05, 0.05, 0.2, 0.5, 0.97, 1.0000001, np.nan])
    hist = calibration_histogram(sims, bins=10)
    assert len(hist) == 10
    assert sum(count for _, _, count in hist) == 6  # NaN ignored, 1.0000001 clipped into the top bin
    assert hist[0][0] == pytest.approx(-0.05) and hist[-1][1] == pytest.approx(1.0)
    assert hist[-1][2] == 2  # [0.895, 1.0]: 0.97 and 1.0
    text = format_histogram(hist)
    lines = text.splitlines()
    assert len(lines) == 10
    for name in ("strict", "default", "loose"):  # each preset is marked in its bin
        assert f"{name} {THRESHOLD_PRESETS[name]:.2f}" in text
    assert "#" in lines[-1]
    assert calibration_histogram(np.array([])) == []


# --- output formats ----------------------------------------------------------------------------------


def sample_groups() -> list[Group]:
    a, b, c, d = rec(0, "a.jpg"), rec(1, "b.jpg"), rec(2, "c.jpg"), rec(3, "x/d.jpg")
    return [
        Group(a, (Duplicate(b, 1.0, "exact"), Duplicate(c, 0.9312345678, "near"))),
        Group(d, (Duplicate(rec(4, "x/e.jpg"), 0.91, "near"),)),
    ]


def test_groups_to_json_schema_is_exact():
    out = groups_to_json(sample_groups(), 0.9)
    assert json.loads(json.dumps(out)) == out  # plain JSON types
    assert set(out) == {"format", "format_version", "threshold", "groups"}  # + "index" when given (a plan)
    assert (out["format"], out["format_version"]) == ("retrieval-dedup-plan", 1)
    assert out["threshold"] == 0.9
    a, b, c = (r.content_hash for r in sample_groups()[0].records)
    assert out["groups"][0] == {
        "keep": "a.jpg",
        "keep_sha256": a,
        "duplicates": [
            {"path": "b.jpg", "sha256": b, "score": 1.0, "kind": "exact", "check": "bytes", "move": True},
            {"path": "c.jpg", "sha256": c, "score": 0.931235, "kind": "near", "check": "score", "move": True},
        ],
    }
    for g in out["groups"]:
        assert set(g) == {"keep", "keep_sha256", "duplicates"}
        for d in g["duplicates"]:
            assert set(d) == {"path", "sha256", "score", "kind", "check", "move"} and d["kind"] in ("exact", "near")
    assert groups_to_json([], None)["groups"] == [] and groups_to_json([], None)["threshold"] is None
    assert groups_to_json([], None, index={"generation": "gen-0001"})["index"] == {"generation": "gen-0001"}


def test_groups_to_csv_and_table():
    rows = list(csv.DictReader(io.StringIO(groups_to_csv(sample_groups()))))
    assert [tuple(r.values()) for r in rows] == [
        ("1", "keep", "a.jpg", "", ""),
        ("1", "duplicate", "b.jpg", "1.000000", "exact"),
        ("1", "duplicate", "c.jpg", "0.931235", "near"),
        ("2", "keep", "x/d.jpg", "", ""),
        ("2", "duplicate", "x/e.jpg", "0.910000", "near"),
    ]
    assert list(rows[0]) == ["group", "role", "path", "score", "kind"]
    table = groups_to_table(sample_groups())
    assert "group 1: keep a.jpg" in table and "0.9312  near" in table and "x/e.jpg" in table
    assert table.splitlines()[-1].startswith("2 groups, 3 duplicates")
    assert groups_to_table([]) == "No duplicates found."


def test_normalised_scores_hand_computed():
    from retrieval.dedup.groups import normalised_scores

    # b = (0.5 + 0.7) / 2 = 0.6: cosine 0.8 is halfway from 0.6 to 1 -> 0.5; cosine 0.6 -> 0; 1.0 -> 1
    cos = np.array([0.8, 0.6, 1.0], np.float32)
    got = normalised_scores(cos, np.full(3, 0.5, np.float32), np.full(3, 0.7, np.float32))
    np.testing.assert_allclose(got, [0.5, 0.0, 1.0], atol=1e-6)


def test_background_rank_separates_a_pair_in_a_dense_region_from_a_real_copy():
    # A dense cluster of 8 similar-but-distinct images (cosine ~0.95 to each other) and, far away, an image
    # with one real copy (cosine 0.93). Raw cosine 0.9 groups the whole cluster; normalised against each
    # image's 5th neighbour, only the copy pair stands out.
    rng = np.random.default_rng(0)
    d = 32
    centre = rng.normal(size=d)
    cluster = centre + 0.25 * rng.normal(size=(8, d)) * np.linalg.norm(centre) / np.sqrt(d)
    others = rng.normal(size=(6, d))
    copy = others[0] + 0.38 * rng.normal(size=d) * np.linalg.norm(others[0]) / np.sqrt(d)
    v = np.vstack([cluster, others, copy[None]]).astype(np.float32)
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    records = [rec(i) for i in range(len(v))]
    pair = {8, 14}
    assert float(v[8] @ v[14]) > 0.85
    raw = groups_of(records, v, 0.85)
    assert any(len(g.records) > 2 for g in raw)  # the dense cluster is grouped on raw cosine
    norm = groups_of(records, v, 0.5, background_rank=5)
    assert [{r.id for r in g.records} for g in norm] == [pair]
    (dup,) = norm[0].duplicates
    assert 0.5 <= dup.score <= 1.0
