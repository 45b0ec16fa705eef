"""`retrieval train` on bad input, through the real entry point (cli.main.main): exit code 2, one
`error:` line naming the problem, and nothing left behind that looks like a finished run."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from cli.commands import train as train_cmd
from moco.measure.metrics_log import epoch_records, read_metrics
from tests import cli_runner
from tests.moco.tiny import make_images

REPO = Path(__file__).resolve().parents[2]


def run_cli(monkeypatch, capsys, *args: str) -> tuple[int, str, str]:
    """`retrieval train ARGS...` in-process via cli.main, on an app holding only the train command."""
    return cli_runner.run_cli(monkeypatch, capsys, train_cmd.register, "train", *args)


def error_line(err: str) -> str:
    """The one error line: it must be there exactly once, be the last thing printed, with no traceback."""
    assert "Traceback" not in err, err
    lines = [line for line in err.replace("\r", "\n").splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error:")]
    assert len(errors) == 1, err
    assert lines[-1] == errors[0], err
    return errors[0]


def assert_no_finished_run(out: Path) -> None:
    for name in ("encoder.json", "encoder.safetensors", "checkpoint.pt", "loss.png"):
        assert not (out / name).exists(), name


TINY = ["--device", "cpu", "--image-size", "32", "--epochs", "1", "--workers", "0"]


def test_missing_folder(tmp_path, monkeypatch, capsys):
    code, _, err = run_cli(monkeypatch, capsys, str(tmp_path / "nope"), "--out", str(tmp_path / "run"), *TINY)
    assert code == 2
    line = error_line(err)
    assert str(tmp_path / "nope") in line and "does not exist" in line
    assert not (tmp_path / "run").exists()


def test_empty_folder(tmp_path, monkeypatch, capsys):
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    (tmp_path / "empty" / "readme.txt").write_text("no pictures here")
    code, _, err = run_cli(monkeypatch, capsys, str(tmp_path / "empty"), "--out", str(tmp_path / "run"), *TINY)
    assert code == 2
    line = error_line(err)
    assert str(tmp_path / "empty") in line and "no images" in line
    assert_no_finished_run(tmp_path / "run")


def test_fewer_images_than_a_batch(tmp_path, monkeypatch, capsys):
    make_images(tmp_path / "few", 3)
    (tmp_path / "few" / "broken.jpg").write_bytes(b"not a jpeg")  # 4 files, 3 readable
    out = tmp_path / "run"
    code, _, err = run_cli(monkeypatch, capsys, str(tmp_path / "few"), "--out", str(out), "--batch-size", "4", *TINY)
    assert code == 2
    line = error_line(err)
    assert "3 readable images" in line and "batch of 4" in line and "--batch-size" in line
    assert_no_finished_run(out)


def test_unknown_arch(tmp_path, monkeypatch, capsys):
    make_images(tmp_path / "photos", 3)
    out = tmp_path / "run"
    args = [str(tmp_path / "photos"), "--out", str(out), "--arch", "resnet34", *TINY]
    code, _, err = run_cli(monkeypatch, capsys, *args)
    assert code == 2
    line = error_line(err)
    assert "resnet34" in line and "resnet18" in line and "resnet50" in line
    assert not out.exists()


def test_unwritable_output(tmp_path, monkeypatch, capsys):
    make_images(tmp_path / "photos", 3)
    blocker = tmp_path / "somefile"
    blocker.write_text("a file where the run folder's parent should be")
    out = blocker / "run"
    code, _, err = run_cli(monkeypatch, capsys, str(tmp_path / "photos"), "--out", str(out), *TINY)
    assert code == 2
    line = error_line(err)
    assert str(out) in line and "not writable" in line
    assert blocker.read_text().startswith("a file")


def test_bad_input_with_no_resume_keeps_the_existing_checkpoint(tmp_path, monkeypatch, capsys):
    out = tmp_path / "run"
    out.mkdir()
    (out / "checkpoint.pt").write_bytes(b"an earlier run's state")
    make_images(tmp_path / "photos", 3)
    for args in (
        [str(tmp_path / "photos"), "--arch", "resnet34"],  # refused before anything runs
        [str(tmp_path / "nope")],  # no such folder
        [str(tmp_path / "photos"), "--batch-size", "8"],  # too few images
    ):
        code, _, err = run_cli(monkeypatch, capsys, *args, "--out", str(out), "--no-resume", *TINY)
        assert code == 2
        error_line(err)
        assert (out / "checkpoint.pt").read_bytes() == b"an earlier run's state", args


@pytest.mark.slow
def test_real_process_exit_code_and_stderr(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "cli",
            "train",
            str(tmp_path / "nope"),
            "--out",
            str(tmp_path / "run"),
            "--device",
            "cpu",
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 2, proc.stderr
    line = error_line(proc.stderr)
    assert str(tmp_path / "nope") in line
    assert proc.stdout == ""
    assert not (tmp_path / "run").exists()


def test_usage_error_is_one_line_and_exit_2(tmp_path, monkeypatch, capsys):
    code, _, err = run_cli(monkeypatch, capsys, str(tmp_path), "--no-such-option")
    assert code == 2
    assert "Traceback" not in err and "--no-such-option" in err


def test_a_finished_run_ends_with_its_verdict_and_the_options_reach_the_config(tmp_path, monkeypatch, capsys):
    import json

    from moco.checkpoint import load_checkpoint
    from moco.config import MoCoConfig
    from moco.measure.verdict import training_verdict

    make_images(tmp_path / "imgs", 20)
    out = tmp_path / "run"
    args = [str(tmp_path / "imgs"), "--out", str(out), *TINY, "--batch-size", "8", "--stem", "cifar", "--width", "8"]
    args += ["--patch-queries", "--lr-schedule", "linear", "--key-views", "2"]
    code, stdout, err = run_cli(monkeypatch, capsys, *args)
    assert code == 0, err
    state = load_checkpoint(out / "checkpoint.pt")
    model = state["model_config"]
    assert (model["stem"], model["width"], model["patch_queries"]) == ("cifar", 8, True)
    assert model["momentum"] == MoCoConfig().momentum  # not given: the library's default
    assert (model["key_views"], state["config"]["lr_schedule"]) == (2, "linear")
    assert json.loads((out / "encoder.json").read_text())["stem"] == "cifar"
    last = epoch_records(read_metrics(out))[-1]
    assert stdout.strip().splitlines()[-1] == training_verdict(last, model["queue_size"]).line
