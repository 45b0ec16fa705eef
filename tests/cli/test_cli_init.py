"""`retrieval train --init` and `retrieval export-init` through the real entry point: a hostile pickle and
an offline download end in one `error:` line with exit 2; a named checkpoint is fetched from a local server
with its licence printed, and the exported encoder holds the file's query encoder exactly."""

from __future__ import annotations

import dataclasses

import torch

import moco.init.pretrained as pretrained
from cli.commands import export_init as export_init_cmd
from cli.commands import train as train_cmd
from moco.export import load_encoder
from tests import cli_runner
from tests.cli.test_cli_train import TINY, error_line
from tests.moco.init.official_layout import hostile_checkpoint, tiny_official_checkpoint
from tests.moco.init.test_download import server, unreachable_url  # noqa: F401 (server is a fixture)
from tests.moco.tiny import make_images


def run_cli(monkeypatch, capsys, *args: str) -> tuple[int, str, str]:
    """`retrieval ARGS...` on an app holding train and export-init."""
    return cli_runner.run_cli(
        monkeypatch, capsys, lambda app: [train_cmd.register(app), export_init_cmd.register(app)], *args
    )


def test_train_refuses_a_hostile_init_and_never_runs_it(tmp_path, monkeypatch, capsys):
    make_images(tmp_path / "photos", 12)
    marker = tmp_path / "payload-ran"
    evil = tmp_path / "moco_v2_800ep_pretrain.pth.tar"
    hostile_checkpoint(evil, marker)
    for args in (
        ["train", str(tmp_path / "photos"), "--out", str(tmp_path / "run"), "--init", str(evil), *TINY],
        ["export-init", str(evil), "--out", str(tmp_path / "enc")],
    ):
        code, _, err = run_cli(monkeypatch, capsys, *args)
        line = error_line(err)
        assert code == 2 and str(evil) in line and "refused as unsafe" in line
        assert not marker.exists()
    assert not (tmp_path / "run" / "checkpoint.pt").exists() and not (tmp_path / "enc").exists()


def test_offline_named_init_says_where_to_fetch_it(tmp_path, monkeypatch, capsys):
    url = unreachable_url()
    monkeypatch.setenv(pretrained.WEIGHTS_DIR_ENV, str(tmp_path / "weights"))
    monkeypatch.setitem(
        pretrained.PRETRAINED, "moco-v2-800ep", dataclasses.replace(pretrained.PRETRAINED["moco-v2-800ep"], url=url)
    )
    make_images(tmp_path / "photos", 12)
    code, out, err = run_cli(
        monkeypatch,
        capsys,
        "train",
        str(tmp_path / "photos"),
        "--out",
        str(tmp_path / "run"),
        "--init",
        "moco-v2-800ep",
        *TINY,
    )
    line = error_line(err)
    assert code == 2 and url in line and "--init FILE" in line and out == ""
    assert not list((tmp_path / "weights").glob("*.pth.tar"))


def test_export_init_of_a_named_checkpoint_downloads_prints_licence_and_converts(
    tmp_path,
    monkeypatch,
    capsys,
    server,  # noqa: F811 (the fixture)
):
    served = tmp_path / "served.pth.tar"
    state = tiny_official_checkpoint(served)
    server.payload = served.read_bytes()
    url = f"http://127.0.0.1:{server.server_address[1]}/moco_v2_800ep_pretrain.pth.tar"
    monkeypatch.setenv(pretrained.WEIGHTS_DIR_ENV, str(tmp_path / "weights"))
    entry = dataclasses.replace(pretrained.PRETRAINED["moco-v2-800ep"], url=url, md5_prefix="", arch="resnet18")
    monkeypatch.setitem(pretrained.PRETRAINED, "moco-v2-800ep", entry)
    out = tmp_path / "runs" / "moco"
    code, stdout, err = run_cli(
        monkeypatch, capsys, "export-init", "moco-v2-800ep", "--out", str(out), "--image-size", "32"
    )
    assert code == 0, err
    assert "licence of moco-v2-800ep: MIT" in err and "CC-BY-NC 4.0" in err and url in err
    assert "written to" in stdout
    assert (tmp_path / "weights" / "moco_v2_800ep_pretrain.pth.tar").read_bytes() == server.payload
    encoder, spec = load_encoder(out)
    assert spec.arch == "resnet18" and spec.embed_size == 32 and spec.trained["init"] == "moco-v2-800ep"
    ours = encoder.encoder.backbone.net.state_dict()
    for k, v in ours.items():
        assert torch.equal(v, state[f"module.encoder_q.{k}"]), k
    with torch.no_grad():
        assert encoder(torch.zeros(2, 3, 32, 32)).shape == (2, 512)
