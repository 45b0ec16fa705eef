"""--init: read backbone weights trained elsewhere, in any of the layouts people have on disk.

Accepted, each reduced to one torchvision ResNet state dict without its classifier (`conv1.weight`,
`layer1.0.bn1.running_mean`, ...):
- an official MoCo v1/v2 checkpoint (`main_moco.py`'s `.pth.tar`): `{"state_dict": {"module.encoder_q.*",
  "module.encoder_k.*", "module.queue", ...}, "optimizer": ..., "epoch": ..., "arch": ...}`; the query
  encoder is taken, its head (`fc` in v1, `fc.0`/`fc.2` in v2) and the key encoder are dropped;
- a torchvision ResNet state dict (`.pth`/`.pt`, or `.safetensors`), with or without `fc.*`;
- our own exported encoder: a run folder or its `encoder.safetensors` (`encoder.backbone.net.*`).

Pickle files are read with `torch.load(..., weights_only=True)` only: a file that needs any other object
unpickled is refused, and its payload never runs. The file's projection head is never used: ours sits on
GeM-pooled features and is trained afresh first (moco.init.warm_start).
"""

from __future__ import annotations

import logging
import pickle
import re
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch

from moco.backbone import BASE_WIDTH, build_backbone
from moco.checkpoint import first_line
from moco.config import ARCHS
from moco.model import MoCo
from plumbing.errors import InputError

logger = logging.getLogger(__name__)

START_WITHOUT_INIT = "to start afresh, leave out --init"

PICKLE_SUFFIXES = (".pth", ".pt", ".tar", ".bin", ".ckpt")
_PREFIXES = (
    "module.encoder_q.",  # official MoCo checkpoint
    "encoder_q.backbone.net.",  # our checkpoint.pt
    "encoder.backbone.net.",  # our encoder.safetensors
    "net.",
    "module.",  # a torchvision model saved under DataParallel
    "",  # a torchvision state dict
)


def read_init_backbone(path: Path) -> dict[str, torch.Tensor]:
    """The torchvision-layout backbone tensors (no `fc.*`) held by the file or run folder at `path`."""
    file = path / "encoder.safetensors" if path.is_dir() else path
    if not file.is_file():
        raise InputError(f"{path}: no weights file found")
    raw = _read_safetensors(file) if file.suffix == ".safetensors" else _read_pickle(file)
    state = raw.get("state_dict", raw.get("model", raw)) if isinstance(raw, dict) else None
    if not isinstance(state, dict) or not state:
        raise InputError(f"{file}: holds no state dict of tensors")
    backbone = _torchvision_keys(state)
    if not backbone:
        raise InputError(f"{file}: no ResNet weights found (looked for module.encoder_q.*, conv1.*, layer1.*)")
    return backbone


@dataclass(frozen=True)
class Network:
    """What a set of backbone weights is: architecture, stem and base width (moco.backbone.build_backbone)."""

    arch: str
    stem: str = "imagenet"
    width: int = BASE_WIDTH


def infer_network(backbone: dict[str, torch.Tensor], file: Path) -> Network:
    """The network the tensors fill exactly (names and shapes): the stem from the first conv's kernel, the
    width from its output channels, the depth by trying each architecture."""
    conv1 = backbone.get("conv1.weight")
    if conv1 is not None and conv1.dim() == 4:
        stem, width = ("cifar" if conv1.shape[-1] == 3 else "imagenet"), int(conv1.shape[0])
        got = _shapes(backbone)
        for arch in ARCHS:
            try:
                net = build_backbone(arch, stem=stem, width=width).net
            except ValueError:
                break
            if _shapes(net.state_dict()) == got:
                return Network(arch, stem, width)
    raise InputError(f"{file}: weights are not a {' or '.join(ARCHS)} backbone")


def init_network(source: str) -> Network:
    """The network an `--init` value holds (a name's, or read from the file)."""
    from moco.init.pretrained import PRETRAINED

    if source in PRETRAINED:
        return Network(PRETRAINED[source].arch)
    path = Path(source).expanduser()
    return infer_network(read_init_backbone(path), path)


def load_init_weights(model: MoCo, path: Path) -> None:
    """Copy the backbone weights at `path` into both encoders (query and key start identical)."""
    backbone = read_init_backbone(path)
    if _shapes(model.encoder_q.backbone.net.state_dict()) != _shapes(backbone):
        n, c = infer_network(backbone, path), model.cfg
        raise InputError(
            f"{path}: holds a {n.arch} ({n.stem} stem, width {n.width}), the run trains a {c.arch} ({c.stem} stem, "
            f"width {c.width}); leave out --arch/--stem/--width to follow the weights"
        )
    model.encoder_q.backbone.net.load_state_dict(backbone)
    model.encoder_k.backbone.net.load_state_dict(backbone)
    logger.info("initialised the %s backbone from %s", model.cfg.arch, path)


def _shapes(state: dict[str, torch.Tensor]) -> dict[str, torch.Size]:
    return {k: v.shape for k, v in state.items()}


def _read_pickle(file: Path) -> object:
    try:
        with warnings.catch_warnings():  # torch warns (two lines) about the pickle protocol of foreign files
            warnings.simplefilter("ignore", UserWarning)
            return torch.load(file, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        if "weights only" in str(e).lower():
            found = re.search(r"GLOBAL ([\w.]+)", str(e))
            what = f"{found.group(1)}, not only tensors" if found else "objects other than tensors"
            raise InputError(
                f"{file}: refused as unsafe: loading it would unpickle {what}; {START_WITHOUT_INIT}"
            ) from None
        raise InputError(f"{file}: unreadable weights file ({first_line(e)}); {START_WITHOUT_INIT}") from None
    except Exception as e:  # torch raises RuntimeError, EOFError, ... for damaged or foreign files
        raise InputError(
            f"{file}: unreadable weights file ({type(e).__name__}: {first_line(e)}); {START_WITHOUT_INIT}"
        ) from None


def _read_safetensors(file: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    try:
        return load_file(str(file))
    except Exception as e:
        raise InputError(f"{file}: unreadable safetensors file ({first_line(e)}); {START_WITHOUT_INIT}") from None


def _torchvision_keys(state: dict) -> dict[str, torch.Tensor]:
    """The tensors under the first prefix that holds a ResNet stem, renamed to torchvision keys, `fc.*` dropped."""
    for prefix in _PREFIXES:
        if not isinstance(state.get(f"{prefix}conv1.weight"), torch.Tensor):
            continue
        sub = {k[len(prefix) :]: v for k, v in state.items() if isinstance(k, str) and k.startswith(prefix)}
        return {k: v for k, v in sub.items() if isinstance(v, torch.Tensor) and not k.startswith("fc.")}
    return {}
