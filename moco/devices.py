"""Device choice and mixed precision: CUDA (bf16/fp16 autocast, channels_last), MPS, CPU (bf16 where it pays)."""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator
from pathlib import Path

import torch

from plumbing.errors import InputError


def resolve_device(name: str = "auto") -> torch.device:
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise InputError("--device cuda: no CUDA GPU is available here")
    if name == "mps" and not torch.backends.mps.is_available():
        raise InputError("--device mps: Apple MPS is not available here")
    if name not in ("cpu", "cuda", "mps"):
        raise InputError(f"--device {name}: choose auto, cpu, cuda or mps")
    return torch.device(name)


# CPU bf16 kinds on which training autocasts to bf16. AMX tiles run a ResNet-18 MoCo step 2.3x (64 px) to 4.5x
# (128 px) faster than fp32 (issue 14). AVX512-BF16 without AMX: on an Intel Xeon 1.35-2.0x per step
# (bench/training/step_speed.py) and 1.26-1.35x the pairs of fp32 in real training; on an AMD EPYC level with fp32
# (762 against 770 steps in 20 minutes, bench/results/learning_curve.md). At equal steps the loss follows fp32 within
# 1% and kNN and emoji recall stay within the seed spread (bench/results/bf16_equal_steps_seeds.json). One kernel is
# wrong on both: the bf16 weight gradient of layer4's strided conv reading a 1x1 map returns garbage (non-finite
# values, or up to 1e38 between identical runs; reading 2x2 and 4x4 maps it is exact: bench.training.bf16_conv_check).
# Training keeps fp32 unless every view reaches the last feature map at CPU_BF16_MIN_MAP or more (that conv then
# reads 3x3 or more: a margin over the 2x2 measured exact); moco.train.train_amp.
CPU_BF16_TRAIN = ("amx", "avx512_bf16")
CPU_BF16_MIN_MAP = 2  # smallest side of the last feature map at which CPU training autocasts to bf16


def cpu_bf16_kind(cpuinfo: str | None = None) -> str:
    """ "amx" when the CPU has AMX-BF16 tiles, "avx512_bf16" when it has AVX512-BF16 only, "" otherwise.
    Read from the flags in /proc/cpuinfo (Linux); `cpuinfo` gives that text instead (tests)."""
    flags = set((_proc_cpuinfo() if cpuinfo is None else cpuinfo).split())
    if "amx_bf16" in flags:
        return "amx"
    if "avx512_bf16" in flags:
        return "avx512_bf16"
    return ""


@functools.cache
def _proc_cpuinfo() -> str:
    try:
        return Path("/proc/cpuinfo").read_text()
    except OSError:  # not Linux: no bf16 detection, full precision
        return ""


def amp_dtype(device: torch.device, train: bool = False, cpu_kind: str | None = None) -> torch.dtype | None:
    """bf16 where the GPU supports it, else fp16; on CPU, bf16 for training where the CPU's bf16 kind is in
    CPU_BF16_TRAIN (`cpu_kind` overrides the detected one); None (full precision) elsewhere and on MPS."""
    if device.type == "cpu" and train:
        return torch.bfloat16 if (cpu_bf16_kind() if cpu_kind is None else cpu_kind) in CPU_BF16_TRAIN else None
    if device.type != "cuda":
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def uses_channels_last(device: torch.device) -> bool:
    """Channels-last memory for convolutions: faster on CUDA and on CPU (measured on CPU: MoCo step 1.19x
    at 96 px, ~1x at 64; inference 1.1x at 64 px, 1.5x at 224 px); left alone on MPS."""
    return device.type in ("cuda", "cpu")


@contextlib.contextmanager
def autocast(device: torch.device, enabled: bool = True, train: bool = False) -> Iterator[None]:
    dtype = amp_dtype(device, train)
    if not enabled or dtype is None:
        yield
        return
    with torch.autocast(device_type=device.type, dtype=dtype):
        yield
