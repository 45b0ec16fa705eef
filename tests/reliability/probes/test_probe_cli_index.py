"""#25 items 4-7 through the real CLI: `export-init` never overwrites a run unless asked; every size read from
`encoder.json` or `manifest.json` is bounded; names with control characters are shown escaped everywhere a person
reads them; an edited manifest, a FIFO or device query, `train --workers -5` and a failed `index` each end in one
`error:` line with exit code 2, and nothing already written changes."""

from __future__ import annotations

import csv
import hashlib
import json
import os
import shutil
import signal
import sys
from pathlib import Path

import pytest

from moco.export import MAX_IMAGE_SIZE, read_spec, save_random_encoder
from plumbing.filenames import printable
from retrieval.indexing.generations import SELF_CHECKSUM
from tests.reliability.conftest import (
    HUGE,
    cli_subprocess,
    edited_encoder,
    make_image,
    one_line_error,
    run_cli,
    snapshot,
)

linux_only = pytest.mark.skipif(sys.platform != "linux", reason="names are bytes, FIFOs and /dev on Linux")

NEWLINE = "two\nlines.png"  # would add a fake row to the search table
TITLE = "\x1b]0;pwned\x07.png"  # would set the terminal's window title
CLEAR = "\x1b[2J\x1b[H.png"  # would clear the screen
LATIN1 = os.fsdecode(b"caf\xe9 \x1b[31m.png")  # an undecodable byte and an escape sequence
HOSTILE = (NEWLINE, TITLE, CLEAR, LATIN1)


def no_raw_controls(text: str) -> None:
    """Nothing in `text` that a terminal acts on, apart from the newlines that end its own lines."""
    bad = {c for c in text if (ord(c) < 0x20 and c != "\n") or 0x7F <= ord(c) <= 0x9F or 0xD800 <= ord(c) <= 0xDFFF}
    assert not bad, sorted(bad)


@pytest.fixture(scope="module")
def built(tmp_path_factory, encoder) -> dict[str, Path]:
    """photos/ with four hostile names among six pictures, indexed."""
    from retrieval.indexing.run import IndexConfig, index_folder

    base = tmp_path_factory.mktemp("cliindex")
    photos = base / "photos"
    for i, name in enumerate(HOSTILE):
        make_image(photos / name, seed=i)
    make_image(photos / "plain-1.png", seed=10)
    make_image(photos / "plain-2.png", seed=11)
    index_folder(IndexConfig(photos, encoder, base / "idx", batch_size=4, workers=0, device="cpu"))
    return {"base": base, "photos": photos, "index": base / "idx"}


def copy_index(built: dict[str, Path], tmp_path: Path) -> Path:
    copy = tmp_path / "idx"
    shutil.copytree(built["index"], copy)
    return copy


# ------------------------------------------------------------------------------- item 6: names shown escaped


@linux_only
def test_search_table_has_one_row_per_hit_and_no_raw_control_characters(built, monkeypatch, capsys):
    query = built["photos"] / NEWLINE
    code, out, err = run_cli(monkeypatch, capsys, "search", str(query), "--index", str(built["index"]), "-k", "6")
    assert code == 0, err
    no_raw_controls(out)
    lines = out.splitlines()
    assert len(lines) == 1 + 6  # the query line and six hits: no fake row
    assert lines[0] == printable(str(query)) and "two\\x0alines.png" in lines[0]
    shown = "\n".join(lines[1:])
    for name in HOSTILE:
        assert printable(name) in shown, name
    assert "caf\\xe9 \\x1b[31m.png" in shown  # an undecodable byte as \xNN, not \udcNN


@linux_only
def test_search_csv_has_one_record_per_hit_and_json_keeps_the_exact_names(built, monkeypatch, capsys):
    query = built["photos"] / TITLE
    args = ["search", str(query), "--index", str(built["index"]), "-k", "6", "--format"]
    code, out, err = run_cli(monkeypatch, capsys, *args, "csv")
    assert code == 0, err
    no_raw_controls(out)
    rows = list(csv.DictReader(out.splitlines()))
    assert len(rows) == 6 and len(out.splitlines()) == 7
    assert {r["path"] for r in rows} >= {printable(str(built["photos"] / n)) for n in HOSTILE}
    code, out, err = run_cli(monkeypatch, capsys, *args, "json")
    assert code == 0, err
    no_raw_controls(out)  # JSON escapes them itself
    assert {h["path"] for h in json.loads(out)[0]["results"]} >= {str(built["photos"] / n) for n in HOSTILE}


@linux_only
def test_an_error_naming_a_hostile_file_is_one_escaped_line(built, monkeypatch, capsys):
    missing = built["photos"] / os.fsdecode(b"gone\n\xff\x1b]0;x\x07.png")
    code, out, err = run_cli(monkeypatch, capsys, "search", str(missing), "--index", str(built["index"]))
    one_line_error(code, err, "gone\\x0a\\xff\\x1b]0;x\\x07.png", "no such file")
    no_raw_controls(err)
    assert "\\udc" not in err and out == ""


@linux_only
def test_info_shows_a_hostile_root_escaped(tmp_path, encoder, monkeypatch, capsys):
    from retrieval.indexing.run import IndexConfig, index_folder

    root = tmp_path / "ph\x1b[2Jotos\n"
    make_image(root / "a.png", seed=1)
    make_image(root / "b.png", seed=2)
    index_folder(IndexConfig(root, encoder, tmp_path / "idx", batch_size=4, workers=0, device="cpu"))
    code, out, err = run_cli(monkeypatch, capsys, "info", "--index", str(tmp_path / "idx"))
    assert code == 0, err
    no_raw_controls(out)
    assert len(out.splitlines()) == 6 and "ph\\x1b[2Jotos\\x0a" in out


@linux_only
def test_skipping_log_lines_show_hostile_names_escaped(tmp_path, encoder):
    """In a fresh process, with logging as a person gets it: the warning for a dangling symlink."""
    photos = tmp_path / "photos"
    make_image(photos / "a.png", seed=1)
    make_image(photos / "b.png", seed=2)
    (photos / TITLE).symlink_to(photos / "gone.png")
    code, _, err, _ = cli_subprocess(
        "index", str(photos), "--model", str(encoder), "--index", str(tmp_path / "idx"), "--workers", "0"
    )
    assert code == 0, err
    no_raw_controls(err.replace("\r", ""))
    skipping = [line for line in err.replace("\r", "\n").splitlines() if "skipping" in line]
    assert len(skipping) == 1 and "\\x1b]0;pwned\\x07.png" in skipping[0], err


# ------------------------------------------------------------------------ item 5: sizes read from files bounded

# That read_spec refuses each size in HUGE (tests/reliability/conftest.py), naming the file and the field, is
# checked with the other edited fields in test_probe_one_line.py; here, the commands that read such a file.


@pytest.mark.parametrize("field", ["embed_size", "width", "head_dim"])
def test_search_and_index_with_a_huge_encoder_size_are_one_line(built, encoder, tmp_path, monkeypatch, capsys, field):
    run = edited_encoder(encoder, tmp_path, HUGE[field])
    before = snapshot(built["index"])
    code, out, err = run_cli(monkeypatch, capsys, "search", str(built["photos"] / "plain-1.png"), "--index",
                             str(built["index"]), "--model", str(run))  # fmt: skip
    one_line_error(code, err, str(run / "encoder.json"), field)
    assert out == ""
    code, out, err = run_cli(monkeypatch, capsys, "index", str(built["photos"]), "--model", str(run),
                             "--index", str(built["index"]), "--rebuild")  # fmt: skip
    one_line_error(code, err, str(run / "encoder.json"), field)
    assert snapshot(built["index"]) == before  # nothing written


@pytest.mark.parametrize(
    ("edit", "needle"),
    [
        (lambda d: d["counts"].__setitem__("ok", 10**12), "counts.ok"),
        (lambda d: d.__setitem__("dim", 10**9), "dim"),
        (lambda d: d["index"]["params"].__setitem__("rerank", 10**12), "index.params.rerank"),
    ],
    ids=["count", "dim", "param"],
)
def test_a_huge_size_in_the_manifest_is_one_line(built, tmp_path, monkeypatch, capsys, edit, needle):
    index = copy_index(built, tmp_path)
    manifest = edit_manifest(index, edit, resign=True)
    before = snapshot(index)
    for args in (
        ["search", str(built["photos"] / "plain-1.png"), "--index", str(index)],
        ["info", "--index", str(index)],
    ):
        code, out, err = run_cli(monkeypatch, capsys, *args)
        one_line_error(code, err, str(manifest), "damaged manifest", needle)
        assert out == ""
    assert snapshot(index) == before


# ----------------------------------------------------------------- item 7: an edited manifest, FIFO, workers


def edit_manifest(index: Path, edit, *, resign: bool = False) -> Path:
    path = index / (index / "CURRENT").read_text().strip() / "manifest.json"
    data = json.loads(path.read_text())
    edit(data)
    if resign:  # as if the program had written it: only the bounds can tell
        body = {k: v for k, v in data.items() if k != SELF_CHECKSUM}
        canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
        data[SELF_CHECKSUM] = hashlib.sha256(canonical.encode()).hexdigest()
    path.write_text(json.dumps(data, indent=2))
    return path


@pytest.mark.parametrize("field", ["root", "kind"])
def test_an_edited_manifest_is_one_line_for_search_and_info(built, tmp_path, monkeypatch, capsys, field):
    index = copy_index(built, tmp_path)
    if field == "root":
        manifest = edit_manifest(index, lambda d: d.__setitem__("root", str(tmp_path / "elsewhere")))
    else:
        manifest = edit_manifest(index, lambda d: d["index"].__setitem__("kind", "hnsw"))
    before = snapshot(index)
    for args in (
        ["search", str(built["photos"] / "plain-1.png"), "--index", str(index)],
        ["info", "--index", str(index)],
    ):
        code, out, err = run_cli(monkeypatch, capsys, *args)
        one_line_error(code, err, str(manifest), "checksum mismatch")
        assert out == ""
    assert snapshot(index) == before


@pytest.fixture
def alarm():
    """Fail instead of hanging the suite if something opens a FIFO that has no writer."""

    def hung(*_):
        raise TimeoutError("blocked opening a FIFO")

    previous = signal.signal(signal.SIGALRM, hung)
    signal.alarm(60)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, previous)


@linux_only
@pytest.mark.parametrize("kind", ["fifo", "device"])
def test_a_fifo_or_device_query_is_not_a_regular_file(built, tmp_path, monkeypatch, capsys, alarm, kind):
    if kind == "fifo":
        query = tmp_path / "pipe.png"
        os.mkfifo(query)
    else:
        query = Path("/dev/null")
    code, out, err = run_cli(monkeypatch, capsys, "search", str(query), "--index", str(built["index"]))
    one_line_error(code, err, str(query), "not a regular file")
    assert out == ""


@linux_only
def test_a_fifo_is_never_opened_by_the_decoder(tmp_path, alarm):
    from plumbing.images import BadImageError, load_image, scan_images

    make_image(tmp_path / "a.png", seed=1)
    os.mkfifo(tmp_path / "pipe.png")
    with pytest.raises(BadImageError, match="not a regular file"):
        load_image(tmp_path / "pipe.png")
    files, skipped = scan_images(tmp_path)
    assert files == [tmp_path / "a.png"]
    assert [(s.path.name, s.reason) for s in skipped] == [("pipe.png", "not a regular file (a pipe, device or socket)")]


def test_train_refuses_negative_workers_in_one_line(tmp_path, monkeypatch, capsys):
    make_image(tmp_path / "photos" / "a.png", seed=1)
    out = tmp_path / "run"
    code, stdout, err = run_cli(monkeypatch, capsys, "train", str(tmp_path / "photos"), "--out", str(out),
                                "--workers", "-5", "--device", "cpu")  # fmt: skip
    one_line_error(code, err, "--workers", "greater than or equal to -1")
    assert stdout == "" and not out.exists()


@pytest.mark.parametrize(("option", "value"), [("--crop-size", "100000"), ("--embed-size", str(MAX_IMAGE_SIZE + 1))])
def test_train_refuses_a_size_its_encoder_could_not_be_read_with(tmp_path, monkeypatch, capsys, option, value):
    """Refused before the run, not after it: an encoder.json above MAX_IMAGE_SIZE would be refused on load."""
    make_image(tmp_path / "photos" / "a.png", seed=1)
    out = tmp_path / "run"
    code, stdout, err = run_cli(monkeypatch, capsys, "train", str(tmp_path / "photos"), "--out", str(out),
                                option, value, "--device", "cpu")  # fmt: skip
    one_line_error(code, err, f"{option[2:].replace('-', '_')} {value}", str(MAX_IMAGE_SIZE))
    assert stdout == "" and not out.exists()


def test_scan_lists_each_skipped_symlink_with_its_reason(tmp_path):
    from plumbing.images import scan_images

    make_image(tmp_path / "a.png", seed=1)
    (tmp_path / "dangling.png").symlink_to(tmp_path / "gone.png")
    (tmp_path / "twin.png").symlink_to(tmp_path / "a.png")
    (tmp_path / "sub").mkdir()
    (tmp_path / "folder.png").symlink_to(tmp_path / "sub", target_is_directory=True)
    files, skipped = scan_images(tmp_path)
    assert files == [tmp_path / "a.png"]
    reasons = {s.path.name: s.reason for s in skipped}
    assert set(reasons) == {"dangling.png", "twin.png", "folder.png"}
    assert "is missing" in reasons["dangling.png"] and "listed under its own name" in reasons["twin.png"]
    assert "is not a file" in reasons["folder.png"]


def test_bad_files_csv_lists_skipped_symlinks(tmp_path, monkeypatch, capsys):
    """A run too small to train still writes bad_files.csv first: the symlinks are in it with their reasons."""
    photos = tmp_path / "photos"
    for i in range(3):
        make_image(photos / f"{i}.png", seed=i)
    (photos / "dangling.png").symlink_to(photos / "gone.png")
    (photos / "twin.png").symlink_to(photos / "0.png")
    (photos / "broken.png").write_bytes(b"not an image")
    out = tmp_path / "run"
    code, _, err = run_cli(monkeypatch, capsys, "train", str(photos), "--out", str(out), "--device", "cpu",
                           "--image-size", "32", "--batch-size", "8", "--workers", "0")  # fmt: skip
    one_line_error(code, err, "fewer than one batch")
    with open(out / "bad_files.csv", newline="") as f:
        rows = {Path(r["path"]).name: r["reason"] for r in csv.DictReader(f)}
    assert set(rows) == {"dangling.png", "twin.png", "broken.png"}
    assert "symbolic link" in rows["dangling.png"] and "symbolic link" in rows["twin.png"]


# ------------------------------------------------------------------------------- item 7: a failed index, lock


def test_a_failed_index_leaves_no_lock_and_no_folder(built, tmp_path, monkeypatch, capsys):
    new = tmp_path / "new-index"
    code, _, err = run_cli(monkeypatch, capsys, "index", str(built["photos"]), "--model", str(tmp_path / "no-run"),
                           "--index", str(new))  # fmt: skip
    one_line_error(code, err, "encoder.json")
    assert not new.exists()
    index = copy_index(built, tmp_path)
    before = snapshot(index)
    code, _, err = run_cli(monkeypatch, capsys, "index", str(built["photos"]), "--model", str(tmp_path / "no-run"),
                           "--index", str(index))  # fmt: skip
    one_line_error(code, err, "encoder.json")
    assert not (index / ".lock").exists() and snapshot(index) == before


def test_a_stale_lock_file_does_not_block_the_next_index(built, encoder, tmp_path, monkeypatch, capsys):
    index = copy_index(built, tmp_path)
    (index / ".lock").write_bytes(b"")  # left by a run that was killed (no process holds it)
    code, out, err = run_cli(monkeypatch, capsys, "index", str(built["photos"]), "--model", str(encoder),
                             "--index", str(index))  # fmt: skip
    assert code == 0, err
    assert "unchanged" in out and not (index / ".lock").exists()


# ------------------------------------------------------------------------ item 4 and 5: export-init --out


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> Path:
    from tests.moco.init.official_layout import tiny_official_checkpoint

    path = tmp_path_factory.mktemp("weights") / "moco_v2_800ep_pretrain.pth.tar"
    tiny_official_checkpoint(path)
    return path


def test_export_init_refuses_an_out_that_holds_a_run(weights, tmp_path, monkeypatch, capsys):
    run = tmp_path / "runs" / "trained"
    save_random_encoder(run, embed_size=32, dim=16, seed=3)
    (run / "checkpoint.pt").write_bytes(b"a training checkpoint")
    before = snapshot(run)
    code, out, err = run_cli(monkeypatch, capsys, "export-init", str(weights), "--out", str(run), "--image-size", "32")
    one_line_error(code, err, str(run), "already holds a run", "--force")
    assert out == "" and snapshot(run) == before
    code, out, err = run_cli(monkeypatch, capsys, "export-init", str(weights), "--out", str(run), "--image-size", "32",
                             "--force")  # fmt: skip
    assert code == 0, err
    after = snapshot(run)
    assert after["encoder.json"] != before["encoder.json"] and after["checkpoint.pt"] == before["checkpoint.pt"]
    assert read_spec(run).trained["init"] == str(weights)


def test_export_init_into_a_new_or_empty_folder_needs_no_force(weights, tmp_path, monkeypatch, capsys):
    (tmp_path / "empty").mkdir()
    for out in (tmp_path / "empty", tmp_path / "new" / "enc"):
        code, _, err = run_cli(
            monkeypatch, capsys, "export-init", str(weights), "--out", str(out), "--image-size", "32"
        )
        assert code == 0, err
        assert read_spec(out).embed_size == 32


@pytest.mark.parametrize("size", ["0", "8", str(MAX_IMAGE_SIZE + 1), "100000"])
def test_export_init_refuses_an_image_size_out_of_range(weights, tmp_path, monkeypatch, capsys, size):
    out = tmp_path / "enc"
    code, stdout, err = run_cli(
        monkeypatch, capsys, "export-init", str(weights), "--out", str(out), "--image-size", size
    )
    one_line_error(code, err, f"embed_size {size}", str(MAX_IMAGE_SIZE))
    assert stdout == "" and not out.exists()


def test_export_init_of_an_unreadable_source_leaves_the_folder_as_it_was(tmp_path, monkeypatch, capsys):
    bad = tmp_path / "weights.pth"
    bad.write_bytes(b"not a checkpoint")
    out = tmp_path / "enc"
    code, _, err = run_cli(monkeypatch, capsys, "export-init", str(bad), "--out", str(out))
    one_line_error(code, err, str(bad))
    assert not out.exists()
