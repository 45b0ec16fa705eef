"""CPU bf16 autocast: the capability read from cpuinfo flags, the selection per device and purpose, and bf16
against fp32 training on a tiny model at equal steps (bf16 forced by faking an AMX CPU)."""

from __future__ import annotations

import dataclasses

import pytest
import torch

import moco.devices
from moco.checkpoint import load_checkpoint
from moco.config import TrainConfig
from moco.devices import amp_dtype, cpu_bf16_kind
from moco.train import fit, train_amp
from tests.moco.tiny import make_images, tiny_config

AMX = "flags : fpu sse2 avx512f avx512_bf16 amx_bf16 amx_tile amx_int8"
AVX512_BF16 = "flags : fpu sse2 avx2 avx512f avx512bw avx512_bf16"
PLAIN = "flags : fpu sse2 avx2 avx512f"


def test_bf16_kind_is_read_from_the_cpu_flags():
    assert cpu_bf16_kind(AMX) == "amx"
    assert cpu_bf16_kind(AVX512_BF16) == "avx512_bf16"
    assert cpu_bf16_kind(PLAIN) == ""
    assert cpu_bf16_kind("") == ""  # no /proc/cpuinfo (macOS, Windows): full precision


def test_cpu_autocasts_to_bf16_for_training_only_on_cpus_with_bf16_units():
    cpu = torch.device("cpu")
    assert amp_dtype(cpu, train=True, cpu_kind="amx") == torch.bfloat16
    assert amp_dtype(cpu, train=True, cpu_kind="avx512_bf16") == torch.bfloat16
    assert amp_dtype(cpu, train=True, cpu_kind="") is None
    assert amp_dtype(cpu, train=False, cpu_kind="amx") is None  # index/query time stays fp32
    assert amp_dtype(torch.device("mps"), train=True, cpu_kind="amx") is None


def _loss_history(cfg: TrainConfig) -> list[float]:
    fit(cfg)
    return [loss for _, loss in load_checkpoint(cfg.out_dir / "checkpoint.pt")["loss_history"]]


def _small_run(tmp_path, name: str, amp: bool) -> list[float]:
    model = {"stem": "cifar", "width": 8, "bn_splits": 1}
    cfg = tiny_config(tmp_path / "imgs", tmp_path / name, model, crop_size=16, epochs=3, amp=amp, lr=0.3)
    return _loss_history(cfg)


def test_bf16_training_follows_the_fp32_loss_curve_at_equal_steps(tmp_path, monkeypatch):
    make_images(tmp_path / "imgs", 40, size=20)
    fp32 = _small_run(tmp_path, "fp32", amp=False)
    monkeypatch.setattr(moco.devices, "cpu_bf16_kind", lambda cpuinfo=None: "")  # a CPU without bf16
    fp32_forced = _small_run(tmp_path, "fp32b", amp=True)
    monkeypatch.setattr(moco.devices, "cpu_bf16_kind", lambda cpuinfo=None: "amx")
    bf16 = _small_run(tmp_path, "bf16", amp=True)
    assert fp32 == fp32_forced  # fp32 runs are bit-identical: the difference below is bf16's alone
    assert len(bf16) == len(fp32) == 15
    diffs = [abs(a - b) for a, b in zip(bf16, fp32, strict=True)]
    assert max(diffs) > 0  # bf16 really ran
    assert max(diffs) < 0.05 * max(fp32)  # and tracks fp32 step by step
    assert bf16[-1] == pytest.approx(fp32[-1], rel=0.05)


@pytest.mark.parametrize(
    ("stem", "size", "local_crops", "local_size", "amp"),
    [
        ("imagenet", 64, 0, 0, True),  # 64 px crops: layer4 at 2x2
        ("imagenet", 48, 0, 0, True),  # 48 / 32 rounds up to 2
        ("imagenet", 32, 0, 0, False),  # layer4 at 1x1: below the margin over the kernel that reads 1x1 maps
        ("imagenet", 64, 4, 0, False),  # 32 px local views reach 1x1
        ("imagenet", 128, 4, 0, True),  # 64 px local views: 2x2
        ("cifar", 16, 0, 0, True),  # stride 8: 2x2
        ("cifar", 32, 2, 8, False),  # 8 px local views: 1x1
    ],
)
def test_cpu_training_keeps_fp32_when_a_view_reaches_the_last_map_at_1x1(stem, size, local_crops, local_size, amp):
    # the map sides are checked against real forward passes in test_backbone_stems.py
    cfg = tiny_config("imgs", "out", {"stem": stem}, crop_size=size, local_crops=local_crops, local_size=local_size)
    assert train_amp(cfg, torch.device("cpu")) is amp
    assert train_amp(dataclasses.replace(cfg, amp=False), torch.device("cpu")) is False
    assert train_amp(cfg, torch.device("cuda")) is True  # GPUs autocast whatever the view size


def test_views_too_small_for_cpu_bf16_train_exactly_as_fp32(tmp_path, monkeypatch):
    """On a CPU with bf16 units, a run whose views reach layer4 at 1x1 (32 px, imagenet stem) is fp32 bit for bit."""
    make_images(tmp_path / "imgs", 24, size=36)

    def run(name: str, amp: bool) -> list[float]:
        return _loss_history(tiny_config(tmp_path / "imgs", tmp_path / name, {"bn_splits": 1}, amp=amp))

    monkeypatch.setattr(moco.devices, "cpu_bf16_kind", lambda cpuinfo=None: "avx512_bf16")
    assert run("amp", amp=True) == run("fp32", amp=False)
