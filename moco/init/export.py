"""`retrieval export-init`: an encoder folder straight from weights trained elsewhere, with no training,
so that `retrieval index --model` can use those features at once."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from moco.backbone import feature_dim
from moco.export import EncoderSpec, export_encoder
from moco.init.pretrained import resolve_init
from moco.init.weights import infer_network, read_init_backbone
from plumbing.progress import Progress


@dataclass(frozen=True)
class InitExportConfig:
    source: str  # a weights file, a run folder, or a name in moco.init.pretrained
    out: str
    image_size: int = 224  # index/query input side: the ImageNet checkpoints were trained on 224 px crops
    gem_p: float = 3.0

    def __post_init__(self) -> None:
        if self.image_size < 16:
            raise ValueError(f"Illegal image_size {self.image_size}: must be >= 16")
        if self.gem_p < 1.0:
            raise ValueError(f"Illegal gem_p {self.gem_p}: must be >= 1")


def export_init(cfg: InitExportConfig, progress: Progress | None = None) -> EncoderSpec:
    """Write `encoder.safetensors` + `encoder.json` for the backbone in `cfg.source` (GeM-pooled, no head)."""
    path = resolve_init(cfg.source, progress)
    backbone = read_init_backbone(path)
    net = infer_network(backbone, path)
    spec = EncoderSpec(
        arch=net.arch,
        embedding_dim=feature_dim(net.arch, net.width),
        stem=net.stem,
        width=net.width,
        image_size=cfg.image_size,
        gem_p=cfg.gem_p,
        trained={"init": cfg.source, "steps": 0},
    )
    return export_encoder({f"net.{k}": v for k, v in backbone.items()}, None, spec, Path(cfg.out))
