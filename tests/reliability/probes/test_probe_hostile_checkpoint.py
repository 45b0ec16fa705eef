"""Probe 6 (issue 12): a hostile checkpoint.pt (a pickle with a `__reduce__` payload) was refused, but with
torch's multi-line message suggesting `weights_only=False`. Now: one line naming the file, saying it is
refused as unsafe and how to start afresh; the same for `--init` files. The payload never runs."""

from __future__ import annotations

import io
import pickle

import pytest
import torch

from tests.reliability.conftest import make_image, one_line_error, run_cli


class Payload:
    """Unpickling this creates `marker`: the proof that code ran."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def hostile_bytes(marker: str, how: str) -> bytes:
    state = {"version": 1, "step": 3, "payload": Payload(marker)}
    if how == "pickle":
        return pickle.dumps(state)
    buf = io.BytesIO()
    torch.save(state, buf)
    return buf.getvalue()


@pytest.fixture
def photos(tmp_path):
    for i in range(12):
        make_image(tmp_path / "photos" / f"{i}.png", seed=i)
    return tmp_path / "photos"


TRAIN = ("--device", "cpu", "--image-size", "32", "--batch-size", "4", "--epochs", "1", "--workers", "0")


# A warning from this code path would print more lines on the person's terminal; garbage that earlier tests left
# (sockets, event loops) may be collected during the test and is not this code path's.
no_warnings = pytest.mark.filterwarnings(
    "error", "ignore::pytest.PytestUnraisableExceptionWarning", "ignore::ResourceWarning"
)


@no_warnings
@pytest.mark.parametrize("how", ["torch.save", "pickle"])
def test_a_hostile_checkpoint_is_one_line_and_never_runs(tmp_path, photos, monkeypatch, capsys, how):
    marker = tmp_path / "payload-ran"
    run = tmp_path / "run"
    run.mkdir()
    (run / "checkpoint.pt").write_bytes(hostile_bytes(str(marker), how))
    code, _, err = run_cli(monkeypatch, capsys, "train", str(photos), "--out", str(run), *TRAIN)
    one_line_error(code, err, str(run / "checkpoint.pt"), "refused as unsafe", "--no-resume")
    assert "weights_only" not in err
    assert not marker.exists()


@no_warnings
@pytest.mark.parametrize(
    ("name", "reason"), [("weights.pt", "refused as unsafe"), ("weights.safetensors", "unreadable")]
)
def test_a_hostile_init_file_is_one_line_and_never_runs(tmp_path, photos, monkeypatch, capsys, name, reason):
    marker = tmp_path / "payload-ran"
    init = tmp_path / name
    init.write_bytes(hostile_bytes(str(marker), "torch.save"))
    code, _, err = run_cli(
        monkeypatch, capsys, "train", str(photos), "--out", str(tmp_path / "run"), "--init", str(init), *TRAIN
    )
    one_line_error(code, err, str(init), reason, "leave out --init")
    assert not marker.exists()
