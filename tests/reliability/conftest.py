"""Shared by the probe regression tests: the real CLI entry with every command registered (tests.cli_runner),
the tiny random encoder and image maker of tests/retrieval, and a check of the one-line error promise."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from cli.commands import register_all
from tests import cli_runner
from tests.retrieval.conftest import encoder, make_image, one_thread  # noqa: F401  (shared fixtures)


@pytest.fixture(autouse=True)
def _one_thread(one_thread):  # noqa: F811
    yield


def run_cli(monkeypatch, capsys, *args: str) -> tuple[int, str, str]:
    """Run `retrieval ARGS...` through cli.main with every command registered: (exit code, stdout, stderr)."""
    return cli_runner.run_cli(monkeypatch, capsys, register_all, *args)


def one_line_error(code: int, err: str, *needles: str) -> None:
    """The promise for bad input: exit 2 and a single `error: ...` line naming what went wrong."""
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2, err
    assert "Traceback" not in err, err
    assert lines and lines[-1].startswith("error: "), err
    assert len([line for line in lines if line.startswith("error: ")]) == 1, err
    for needle in needles:
        assert needle in lines[-1], lines[-1]


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def snapshot(folder: Path) -> dict[str, str]:
    """{relative path: sha256} of every regular file (not through symlinks) under `folder`."""
    return {
        p.relative_to(folder).as_posix(): sha(p)
        for p in sorted(folder.rglob("*"))
        if p.is_file() and not p.is_symlink()
    }


REPO = Path(__file__).resolve().parents[2]


def cli_subprocess(*args: str) -> tuple[int, str, str, list[str]]:
    """`python -m cli ARGS...` in a fresh process, with logging and progress bars as a person gets
    them: (exit code, stdout, stderr, stderr lines as a terminal shows them, i.e. after the last \\r)."""
    proc = subprocess.run([sys.executable, "-m", "cli", *args], capture_output=True, text=True, cwd=REPO, timeout=300)
    shown = [line.rsplit("\r", 1)[-1] for line in proc.stderr.split("\n")]
    return proc.returncode, proc.stdout, proc.stderr, shown


def edited_encoder(source: Path, tmp_path: Path, edit) -> Path:
    """A copy of the encoder folder `source` whose encoder.json went through `edit` (a dict -> dict function)."""
    run = tmp_path / "edited"
    shutil.copytree(source, run)
    spec = json.loads((run / "encoder.json").read_text())
    (run / "encoder.json").write_text(json.dumps(edit(spec)))
    return run


HUGE = {  # issue 25 item 5: an encoder.json size that would allocate without bound, by the field that holds it
    "embed_size": lambda s: {**s, "embed_size": 100_000},
    "width": lambda s: {**s, "width": 1_000_000},
    "head_dim": lambda s: {**s, "head_dim": 10**9},
    "embedding_dim": lambda s: {**s, "layer": "backbone", "head_dim": 0, "embedding_dim": 10**9},
    "test_time_scales": lambda s: {**s, "embed_size": 512, "test_time_scales": [4.0]},
}
