"""find_duplicates / undo on index generations written directly from synthetic vectors (no encoder):
every index kind gives the groups of a brute-force oracle, calibration, config validation, dry run."""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path

import numpy as np
import pytest

from retrieval.dedup.candidates import cell_join
from retrieval.dedup.groups import BACKGROUND_RANK, KeeperRule, normalised_scores
from retrieval.dedup.run import (
    DedupConfig,
    find_duplicates,
    nearest_neighbour_scores,
    threshold_marks,
    undo,
)
from retrieval.dedup.threshold import THRESHOLD_PRESETS, Threshold
from retrieval.errors import IndexError_, InputError
from retrieval.indexing.faiss_index import build_index
from retrieval.indexing.generations import write_generation
from retrieval.records import FileRecord
from retrieval.searching.searcher import SearchIndex
from tests.retrieval.dedup.grouping import groups_of

N, D = 300, 16
PLANTED = 20  # originals 0..19, each with one near copy at cosine ~0.97
THRESHOLD = Threshold(0.8)  # normalised scores: planted pairs >= 0.90, every other pair <= 0.63 (rank 5)


def unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


def synthetic(seed: int = 0) -> tuple[list[FileRecord], np.ndarray, set[frozenset[int]]]:
    """N random unit vectors; rows N-PLANTED.. are near copies of rows 0..PLANTED-1 (fewer pixels).
    Record i stands for a file holding the bytes of str(i)."""
    rng = np.random.default_rng(seed)
    x = unit(rng.standard_normal((N, D)))  # (N, D)
    for j in range(PLANTED):
        noise = unit(rng.standard_normal(D)) * 0.25
        x[N - PLANTED + j] = unit(x[j] + noise)  # cosine ~ 1/sqrt(1 + 0.25^2) = 0.97
    records = [
        FileRecord(
            i,
            f"img{i:04d}.jpg",
            len(str(i)),
            0,
            hashlib.sha256(str(i).encode()).hexdigest(),
            50 if i >= N - PLANTED else 100,
            100,
        )
        for i in range(N)
    ]
    truth = {frozenset({j, N - PLANTED + j}) for j in range(PLANTED)}
    return records, x, truth


def write_index(index_dir: Path, root: Path, kind: str, seed: int = 0) -> tuple[list[FileRecord], np.ndarray]:
    records, x, _ = synthetic(seed)
    root.mkdir(parents=True, exist_ok=True)
    write_generation(
        index_dir,
        root=root,
        encoder_sha256="0" * 64,
        encoder_path="/nowhere",
        records=records,
        bad=[],
        vectors=x,
        built=build_index(x, kind),
    )
    return records, x


def as_sets(groups) -> set[tuple[str, frozenset[str]]]:
    return {(g.keep.path, frozenset(d.record.path for d in g.duplicates)) for g in groups}


def brute_force_scores(x: np.ndarray, rank: int) -> np.ndarray:
    """(N, N) pair scores as dedup defines them, from the full similarity matrix (diagonal -inf)."""
    sims = x @ x.T  # (N, N)
    np.fill_diagonal(sims, -np.inf)
    if rank == 0:
        return sims
    b = -np.sort(-sims, axis=1)[:, rank - 1]  # (N,) cosine to the rank-th nearest other row
    scores = normalised_scores(sims, b[:, None], b[None, :])
    np.fill_diagonal(scores, -np.inf)
    return scores


@pytest.mark.parametrize("kind", ["flat", "hnsw", "ivf", "ivfpq"])
@pytest.mark.parametrize("cell_size", [512, 25])  # one cell (an exact join); about 12 cells
def test_every_index_kind_finds_the_oracle_groups(tmp_path, kind, cell_size, monkeypatch):
    monkeypatch.setattr(cell_join, "CELL_SIZE", cell_size)
    records, x = write_index(tmp_path / "idx", tmp_path / "photos", kind)
    result = find_duplicates(DedupConfig(index=tmp_path / "idx", threshold=THRESHOLD, verify=False))
    assert result.background_rank == BACKGROUND_RANK > 0
    oracle = groups_of(records, x, THRESHOLD.score, background_rank=BACKGROUND_RANK)  # exact k-NN
    _, _, truth = synthetic()
    assert as_sets(result.groups) == as_sets(oracle)
    assert {frozenset(r.id for r in g.records) for g in result.groups} == truth
    scores = brute_force_scores(x, BACKGROUND_RANK)
    for g in result.groups:
        assert g.keep.width == 100  # the original (more pixels) is kept
        (d,) = g.duplicates
        exact = float(scores[g.keep.id, d.record.id])
        assert d.kind == "near"
        if kind == "flat":
            assert d.score == pytest.approx(exact, abs=1e-4)
        else:  # backgrounds come from the approximate join: never above the exact ones, so never a lower score
            assert d.score >= exact - 1e-4
    assert (result.threshold, result.n_files, result.n_duplicates) == (0.8, N, PLANTED)
    assert result.plan is None and result.moved is None and result.histogram is None and result.dry_run


def test_background_rank_zero_thresholds_the_plain_cosine(tmp_path):
    records, x = write_index(tmp_path / "idx", tmp_path / "photos", "ivf")
    result = find_duplicates(
        DedupConfig(index=tmp_path / "idx", threshold=Threshold(0.95), background_rank=0, verify=False)
    )
    _, _, truth = synthetic()
    assert {frozenset(r.id for r in g.records) for g in result.groups} == truth
    for g in result.groups:
        for d in g.duplicates:
            assert d.score == pytest.approx(float(x[g.keep.id] @ x[d.record.id]), abs=1e-5)


def best_neighbour_scores(x: np.ndarray, rank: int) -> np.ndarray:
    """(N,) oracle for nearest_neighbour_scores: the best pair score among each row's max(1, rank)
    nearest rows by cosine."""
    sims = x @ x.T
    np.fill_diagonal(sims, -np.inf)
    near = np.argsort(-sims, axis=1, kind="stable")[:, : max(1, rank)]  # (N, r)
    return np.take_along_axis(brute_force_scores(x, rank), near, axis=1).max(axis=1)


@pytest.mark.parametrize("rank", [0, BACKGROUND_RANK])
def test_nearest_neighbour_scores_match_brute_force(tmp_path, rank):
    _, x = write_index(tmp_path / "idx", tmp_path / "photos", "flat")
    got = nearest_neighbour_scores(SearchIndex.open(tmp_path / "idx"), rank)  # (N,)
    np.testing.assert_allclose(got, best_neighbour_scores(x, rank), atol=1e-4)


def test_calibrate_histogram_counts_every_file_and_marks_presets(tmp_path):
    _, x = write_index(tmp_path / "idx", tmp_path / "photos", "flat")
    result = find_duplicates(DedupConfig(index=tmp_path / "idx", calibrate=True))
    assert result.groups == () and result.histogram is not None
    assert sum(n for _, _, n in result.histogram) == N
    nn = best_neighbour_scores(x, BACKGROUND_RANK)  # (N,) oracle
    high = sum(n for lo, _, n in result.histogram if lo >= 0.8 - 1e-9)
    assert high == int((nn >= 0.8).sum()) == 2 * PLANTED
    marks = threshold_marks(result.threshold)
    assert marks == {k: v for k, v in THRESHOLD_PRESETS.items() if v is not None}
    assert threshold_marks(0.42)["chosen"] == 0.42


def test_exact_threshold_gives_no_near_groups(tmp_path):
    write_index(tmp_path / "idx", tmp_path / "photos", "flat")
    result = find_duplicates(DedupConfig(index=tmp_path / "idx", threshold=Threshold.preset("exact")))
    assert result.threshold is None and result.groups == ()


def test_dry_run_plans_but_moves_nothing(tmp_path):
    root = tmp_path / "photos"
    records, _ = write_index(tmp_path / "idx", root, "flat")
    for r in records:  # the catalog's hashes are of str(i), so these files pass the pre-move checks
        (root / r.path).write_bytes(str(r.id).encode())
    before = sorted(p.name for p in root.iterdir())
    result = find_duplicates(
        DedupConfig(index=tmp_path / "idx", threshold=THRESHOLD, move_to=tmp_path / "dups", verify=False)
    )
    assert result.plan is not None and result.moved is None and result.dry_run
    assert {m.source for m in result.plan.moves} == {f"img{i:04d}.jpg" for i in range(N - PLANTED, N)}
    assert sorted(p.name for p in root.iterdir()) == before
    assert not (tmp_path / "dups").exists()


def test_apply_then_undo(tmp_path):
    root = tmp_path / "photos"
    records, _ = write_index(tmp_path / "idx", root, "flat")
    for r in records:
        (root / r.path).write_bytes(str(r.id).encode())
    result = find_duplicates(
        DedupConfig(index=tmp_path / "idx", threshold=THRESHOLD, move_to=tmp_path / "dups", apply=True, verify=False)
    )
    assert result.moved is not None and not result.dry_run
    assert len(result.moved.moved) == PLANTED and not result.moved.skipped
    log = result.moved.log_path
    assert log.parent == tmp_path / "dups" and log.name.startswith("undo-") and log.suffix == ".jsonl"
    assert len(list(root.iterdir())) == N - PLANTED
    report = undo(log)
    assert report.ok and len(report.restored) == PLANTED
    assert len(list(root.iterdir())) == N


@pytest.mark.parametrize(
    "kwargs, needle",
    [
        ({"apply": True}, "move-to"),
        ({"apply": True, "move_to": Path("x"), "calibrate": True}, "calibrate"),
        ({"move_to": Path("x"), "calibrate": True}, "calibrate"),
        ({"k": 0}, "k"),
        ({"background_rank": -1}, "background_rank"),
    ],
)
def test_config_is_validated(kwargs, needle):
    with pytest.raises(InputError, match=needle):
        DedupConfig(index=Path("idx"), **kwargs)


@pytest.mark.parametrize(
    "kwargs",
    [{"threshold": "default"}, {"threshold": "0.5"}, {"threshold": 0.5}, {"threshold": None}, {"keeper": ("size",)}],
)
def test_config_takes_parsed_values_never_raw_text(kwargs):
    """The CLI and the app parse the person's text once (Threshold.parse, KeeperRule.parse); the config refuses
    anything else, so the library never parses again."""
    with pytest.raises(TypeError, match="Threshold|KeeperRule"):
        DedupConfig(index=Path("idx"), **kwargs)


def test_config_defaults():
    cfg = DedupConfig(index=Path("idx"))
    assert cfg.threshold == Threshold.parse("default") and cfg.threshold.score == THRESHOLD_PRESETS["default"]
    assert cfg.keeper == KeeperRule()
    assert (cfg.move_to, cfg.apply, cfg.calibrate, cfg.k) == (None, False, False, 32)
    assert cfg.background_rank == BACKGROUND_RANK


def test_missing_index_is_an_input_error(tmp_path):
    with pytest.raises(IndexError_, match="no such index"):
        find_duplicates(DedupConfig(index=tmp_path / "nowhere"))


def test_apply_never_moves_similar_pictures(tmp_path, monkeypatch):
    """Issue 27: with --similar, similar pictures come back as groups of their own; --apply moves the duplicates
    and leaves every similar picture where it is."""
    from retrieval.dedup import run as dedup_run
    from retrieval.dedup.groups import Duplicate, Group, Grouping

    root = tmp_path / "photos"
    records, _ = write_index(tmp_path / "idx", root, "flat")
    for r in records:
        (root / r.path).write_bytes(str(r.id).encode())
    real = dedup_run.find_grouping
    lone = [r for r in records if r.id < N - PLANTED][:2]  # two files no planted group holds

    def with_similar(recs, vectors, config, **kw):  # noqa: ANN001, ANN003, ANN202
        found = real(recs, vectors, dataclasses.replace(config, similar=False), **{**kw, "checks": None})
        return Grouping(found.groups, [Group(lone[0], (Duplicate(lone[1], 0.1, "similar"),))])

    monkeypatch.setattr(dedup_run, "find_grouping", with_similar)
    cfg = DedupConfig(index=tmp_path / "idx", threshold=THRESHOLD, move_to=tmp_path / "dups", apply=True, similar=True)
    result = find_duplicates(cfg)
    assert [g.keep for g in result.similar] == [lone[0]] and result.similar[0].duplicates[0].kind == "similar"
    moved = {m.source for m in result.moved.moved}
    assert moved == {f"img{i:04d}.jpg" for i in range(N - PLANTED, N)}
    assert all((root / r.path).exists() for r in lone)


def test_similar_needs_verification():
    with pytest.raises(InputError, match="similar"):
        DedupConfig(index=Path("idx"), similar=True, verify=False)
