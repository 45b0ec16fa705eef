"""Shared by the probe regression tests: the real CLI entry run in-process, a tiny random encoder, and
small image folders."""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import retrieval.cli as cli
from moco.export import save_random_encoder


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def run_cli(monkeypatch, capsys, *args: str) -> tuple[int, str, str]:
    """Run `retrieval ARGS...` through cli.main with every command registered: (exit code, stdout, stderr)."""
    import typer

    app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False)
    with monkeypatch.context() as m:
        m.setattr(cli, "app", app)
        m.setattr(sys, "argv", ["retrieval", *args])
        code = 0
        try:
            cli.main()
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
    out, err = capsys.readouterr()
    return code, out, err


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


def make_image(path: Path, seed: int, size: tuple[int, int] = (48, 40)) -> Path:
    """A distinct blocky colour pattern per seed."""
    blocks = np.random.default_rng(seed).integers(0, 256, (4, 5, 3), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(blocks).resize(size, Image.Resampling.NEAREST).save(path)
    return path


@pytest.fixture(scope="module")
def encoder(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("runs") / "tiny"
    save_random_encoder(out, arch="resnet18", image_size=32, dim=16, seed=0)
    return out
