"""#25 item 7 at the library: `manifest.json` carries its own checksum (an edited root or kind is reported, a
manifest written before the field existed still loads), every size it gives is bounded, and the `.lock` of a
run is gone after it, whether it succeeded or failed, while a lock left by a killed process never blocks."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from retrieval.errors import IndexError_, InputError
from retrieval.indexing import generations
from retrieval.indexing.generations import LOCK, SELF_CHECKSUM, load_generation, read_manifest, write_lock
from tests.retrieval.indexing.test_generations import _random_vectors, _write

REPO = Path(__file__).resolve().parents[3]


def _manifest_path(index_dir: Path) -> Path:
    return index_dir / (index_dir / "CURRENT").read_text().strip() / "manifest.json"


def _edit(index_dir: Path, edit, *, resign: bool = False) -> None:
    """Change the live manifest with `edit(data)`; with `resign`, recompute its own checksum as the program would
    (an edit that passes the checksum, so that the bounds are what refuses it)."""
    path = _manifest_path(index_dir)
    data = json.loads(path.read_text())
    edit(data)
    if resign:
        body = {k: v for k, v in data.items() if k != SELF_CHECKSUM}
        canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
        data[SELF_CHECKSUM] = hashlib.sha256(canonical.encode()).hexdigest()
    path.write_text(json.dumps(data, indent=2))


@pytest.fixture
def index_dir(tmp_path) -> Path:
    _write(tmp_path / "idx", _random_vectors(40, 8, seed=0))
    return tmp_path / "idx"


# ------------------------------------------------------------------------------------------ checksum


@pytest.mark.parametrize(
    "edit",
    [
        lambda d: d.__setitem__("root", "/somewhere/else"),
        lambda d: d["index"].__setitem__("kind", "hnsw"),
        lambda d: d["encoder"].__setitem__("path", "/runs/other"),
        lambda d: d.__setitem__("recall_at_10", 0.5),
    ],
    ids=["root", "kind", "encoder path", "recall"],
)
def test_an_edited_manifest_is_reported_by_every_reader(index_dir, edit):
    before = _manifest_path(index_dir).read_text()
    _edit(index_dir, edit)
    assert _manifest_path(index_dir).read_text() != before
    for read in (load_generation, read_manifest):
        with pytest.raises(IndexError_, match=r"manifest\.json: manifest checksum mismatch") as info:
            read(index_dir)
        assert "\n" not in str(info.value)


def test_layout_of_the_json_does_not_count(index_dir):
    """Key order, indentation and spacing are not edits: the checksum is over canonical JSON."""
    path = _manifest_path(index_dir)
    data = json.loads(path.read_text())
    path.write_text(json.dumps(dict(reversed(list(data.items()))), separators=(", ", ": ")))
    assert load_generation(index_dir).manifest.root == "/photos"


def test_a_manifest_written_before_the_checksum_still_loads(index_dir):
    path = _manifest_path(index_dir)
    data = json.loads(path.read_text())
    assert SELF_CHECKSUM in data  # written now: it has one
    del data[SELF_CHECKSUM]  # as the program wrote it before #25
    path.write_text(json.dumps(data, indent=2))
    gen = load_generation(index_dir)
    assert gen.manifest.n_ok == 40 and gen.index is not None


# ------------------------------------------------------------------------------------------ bounds


@pytest.mark.parametrize(
    ("edit", "needle"),
    [
        (lambda d: d["counts"].__setitem__("ok", 10**12), "counts.ok 1000000000000 is outside"),
        (lambda d: d["counts"].__setitem__("bad", -1), "counts.bad -1 is outside"),
        (lambda d: d.__setitem__("dim", 10**9), "dim 1000000000 is outside"),
        (lambda d: d.__setitem__("dim", 0), "dim 0 is outside"),
        (lambda d: d["index"]["params"].__setitem__("efSearch", 10**12), "index.params.efSearch"),
        (lambda d: d["index"].__setitem__("kind", "lsh"), "index kind 'lsh'"),
        (lambda d: d["counts"].__setitem__("ok", float("inf")), "OverflowError"),
    ],
    ids=["ok", "bad", "huge dim", "zero dim", "efSearch", "kind", "infinite"],
)
def test_sizes_in_a_manifest_are_bounded(index_dir, edit, needle):
    _edit(index_dir, edit, resign=True)  # passes the checksum: the bounds refuse it
    for read in (load_generation, read_manifest):
        with pytest.raises(IndexError_, match="manifest.json: damaged manifest") as info:
            read(index_dir)
        assert needle in str(info.value) and "\n" not in str(info.value)


# ------------------------------------------------------------------------------------------ lock


def test_the_lock_file_is_gone_after_a_run_that_succeeded_or_failed(tmp_path):
    index_dir = tmp_path / "idx"
    with write_lock(index_dir):
        assert (index_dir / LOCK).is_file()
        _write(index_dir, _random_vectors(10, 8, seed=0))
    assert not (index_dir / LOCK).exists()
    before = sorted(p.name for p in index_dir.iterdir())
    with pytest.raises(RuntimeError), write_lock(index_dir):
        raise RuntimeError("the run failed")
    assert not (index_dir / LOCK).exists()
    assert sorted(p.name for p in index_dir.iterdir()) == before


def test_a_failed_first_run_leaves_no_folder(tmp_path):
    with pytest.raises(RuntimeError), write_lock(tmp_path / "new" / "idx"):
        raise RuntimeError("the model is missing")
    assert not (tmp_path / "new" / "idx").exists()


def test_a_second_writer_is_refused_while_the_first_holds_the_lock(tmp_path):
    index_dir = tmp_path / "idx"
    with write_lock(index_dir):
        with pytest.raises(InputError, match="another `retrieval index` run is writing") as info, write_lock(index_dir):
            pass
        assert str(index_dir) in str(info.value)
        assert (index_dir / LOCK).is_file()  # the refused taker did not remove the holder's lock
    assert not (index_dir / LOCK).exists()


_HOLDER = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from retrieval.indexing.generations import write_lock
    with write_lock(Path(sys.argv[1])):
        print("holding", flush=True)
        time.sleep(120)
    """
)


@pytest.mark.skipif(sys.platform == "win32", reason="flock")
def test_a_lock_left_by_a_killed_process_does_not_block_the_next_run(tmp_path):
    index_dir = tmp_path / "idx"
    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLDER, str(index_dir)], cwd=REPO, stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout.readline().strip() == "holding"
        with pytest.raises(InputError, match="another"), write_lock(index_dir):  # alive: refused
            pass
    finally:
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait()
    assert (index_dir / LOCK).exists()  # the killed holder could not remove its file
    with write_lock(index_dir):  # the kernel released its lock with the process: the file does not block
        _write(index_dir, _random_vectors(10, 8, seed=0))
    assert not (index_dir / LOCK).exists()
    assert load_generation(index_dir).manifest.n_ok == 10


def test_no_manifest_field_is_left_unchecked():
    """Every number the manifest gives goes through check_bounds (a new count added later must join it)."""
    m = generations.Manifest(
        generation="gen-0001",
        root="/r",
        encoder_sha256="e" * 64,
        encoder_path="/m",
        dim=8,
        kind="flat",
        params={},
        recall_at_10=None,
        n_ok=1,
        n_bad=0,
        checksums={},
        created="now",
    )
    ints = {k for k, v in vars(m).items() if isinstance(v, int) and k != "format_version"}
    assert ints == {"dim", "n_ok", "n_bad"}
    m.check_bounds(Path("manifest.json"))  # in range: no error
