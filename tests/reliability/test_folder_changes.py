"""Issue 18: folder changes between incremental index runs, as a Hypothesis state machine.

Files are added, edited (same size new bytes; same mtime new size), renamed, deleted and chmodded; after
each `index_folder` run the catalog holds exactly the folder's files with their content hashes (the oracle:
the folder hashed by brute force), only bytes never indexed before are embedded (so a chmod alone embeds
nothing), a hash keeps the vector it was first embedded with, and a missing root deletes nothing."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)
from PIL import Image

from plumbing.hashing import content_hash
from retrieval.errors import InputError
from retrieval.indexing.generations import current_generation, load_generation
from retrieval.indexing.run import IndexConfig, index_folder


def _bmp(path: Path, seed: int, width: int) -> None:
    """An uncompressed BMP: its size depends only on `width` (so 'same size, new bytes' is exact)."""
    pixels = np.random.default_rng(seed).integers(0, 256, (24, width, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path, format="BMP")


def _brute_force(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): content_hash(p) for p in sorted(root.rglob("*.bmp"))}


class FolderChanges(RuleBasedStateMachine):
    encoder: Path  # set by the test before the machine runs

    def __init__(self) -> None:
        super().__init__()
        self.tmp = Path(tempfile.mkdtemp(prefix="folder-changes-"))
        self.root = self.tmp / "photos"
        self.root.mkdir()
        self.cfg = IndexConfig(self.root, self.encoder, self.tmp / "idx", batch_size=4, workers=0, device="cpu")
        self.seed = 0
        self.names = 0
        self.vector_of: dict[str, np.ndarray] = {}  # content hash -> the vector it was first embedded with
        self.indexed: dict[str, str] = {}  # path -> hash in the live generation
        self.only_chmods = True  # since the last run

    def teardown(self) -> None:
        shutil.rmtree(self.tmp, ignore_errors=True)

    def _files(self) -> list[str]:
        return sorted(p.name for p in self.root.glob("*.bmp"))

    def _changed(self) -> None:
        self.only_chmods = False

    def _new_seed(self) -> int:
        self.seed += 1
        return self.seed

    @initialize()
    def first_run(self) -> None:
        for _ in range(3):
            self.add()
        self.run_index()

    @rule()
    def add(self) -> None:
        self.names += 1
        _bmp(self.root / f"f{self.names}.bmp", self._new_seed(), width=16 + self.names % 3)
        self._changed()

    @precondition(lambda self: self._files())
    @rule(data=st.data())
    def edit_same_size(self, data: st.DataObject) -> None:
        path = self.root / data.draw(st.sampled_from(self._files()))
        before = path.stat()
        _bmp(path, self._new_seed(), width=Image.open(path).width)
        assert path.stat().st_size == before.st_size
        os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns + 1_000_000_000))  # a clock tick later
        self._changed()

    @precondition(lambda self: self._files())
    @rule(data=st.data())
    def edit_same_mtime_new_size(self, data: st.DataObject) -> None:
        path = self.root / data.draw(st.sampled_from(self._files()))
        before = path.stat()
        _bmp(path, self._new_seed(), width=Image.open(path).width + 1)
        os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
        assert path.stat().st_size != before.st_size
        self._changed()

    @precondition(lambda self: self._files())
    @rule(data=st.data())
    def rename(self, data: st.DataObject) -> None:
        path = self.root / data.draw(st.sampled_from(self._files()))
        self.names += 1
        path.rename(self.root / f"f{self.names}.bmp")
        self._changed()

    @precondition(lambda self: len(self._files()) > 1)
    @rule(data=st.data())
    def delete(self, data: st.DataObject) -> None:
        (self.root / data.draw(st.sampled_from(self._files()))).unlink()
        self._changed()

    @precondition(lambda self: self._files())
    @rule(data=st.data(), mode=st.sampled_from([0o444, 0o600, 0o644]))
    def chmod(self, data: st.DataObject, mode: int) -> None:
        (self.root / data.draw(st.sampled_from(self._files()))).chmod(mode)

    @rule()
    def run_index(self) -> None:
        truth = _brute_force(self.root)
        new_bytes = {h for h in truth.values() if h not in self.vector_of}
        only_chmods = self.only_chmods
        report = index_folder(self.cfg)
        assert report.embedded == len(new_bytes), (report, new_bytes)
        if only_chmods:
            assert report.embedded == 0
        gen = load_generation(self.cfg.index, load_index=False)
        got = {r.path: r.content_hash for r in gen.records}
        assert got == truth
        for r in gen.records:
            v = np.array(gen.vectors[r.id])
            known = self.vector_of.setdefault(r.content_hash, v)
            np.testing.assert_array_equal(v, known, err_msg=r.path)
        self.indexed = got
        self.only_chmods = True

    @precondition(lambda self: self.indexed)
    @rule()
    def root_missing(self) -> None:
        live = current_generation(self.cfg.index)
        away = self.tmp / "unmounted"
        self.root.rename(away)
        try:
            with pytest.raises(InputError, match="does not exist|no images"):
                index_folder(self.cfg)
            self.root.mkdir()  # an empty mount point
            with pytest.raises(InputError, match="no images found"):
                index_folder(self.cfg)
            self.root.rmdir()
        finally:
            away.rename(self.root)
        assert current_generation(self.cfg.index) == live
        assert {r.path: r.content_hash for r in load_generation(self.cfg.index).records} == self.indexed

    @invariant()
    def index_loads(self) -> None:
        if self.indexed:
            assert current_generation(self.cfg.index) is not None


def test_catalog_follows_the_folder_through_any_changes(encoder):
    FolderChanges.encoder = encoder
    run_state_machine_as_test(
        FolderChanges,
        settings=settings(
            max_examples=10,
            stateful_step_count=8,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow],
            derandomize=True,
        ),
    )
