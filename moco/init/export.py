"""`retrieval export-init`: an encoder folder straight from weights trained elsewhere, with no training,
so that `retrieval index --model` can use those features at once."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from moco.backbone import feature_dim
from moco.export import MAX_IMAGE_SIZE, MIN_IMAGE_SIZE, EncoderSpec, export_encoder
from moco.init.pretrained import resolve_init
from moco.init.weights import infer_network, read_init_backbone
from plumbing.errors import InputError
from plumbing.progress import Progress

RUN_FILES = ("encoder.json", "encoder.safetensors", "checkpoint.pt")  # a folder holding one of these holds a run


@dataclass(frozen=True)
class InitExportConfig:
    source: str  # a weights file, a run folder, or a name in moco.init.pretrained
    out: str
    embed_size: int = 224  # index/query input side: the ImageNet checkpoints were trained on 224 px crops
    gem_p: float = 3.0
    force: bool = False  # replace the encoder of a folder that already holds a run (its indexes then refuse it)

    def __post_init__(self) -> None:
        if not MIN_IMAGE_SIZE <= self.embed_size <= MAX_IMAGE_SIZE:
            raise ValueError(
                f"Illegal embed_size {self.embed_size}: must be between {MIN_IMAGE_SIZE} and {MAX_IMAGE_SIZE} px"
            )
        if self.gem_p < 1.0:
            raise ValueError(f"Illegal gem_p {self.gem_p}: must be >= 1")


def check_destination(out: Path, force: bool = False) -> None:
    """InputError (one line) unless `out` may receive an encoder: it is a folder or does not exist yet, and it
    holds no run (a trained encoder replaced there makes every index built with it refuse to search) unless
    `force`. Called before anything is fetched or written."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise InputError(f"{out}: not a folder; give --out a folder for the encoder")
    held = [name for name in RUN_FILES if (out / name).exists()]
    if held and not force:
        raise InputError(
            f"{out}: already holds a run ({', '.join(held)}); its indexes need that encoder."
            " Give --out a new folder, or pass --force to replace it"
        )


def export_init(cfg: InitExportConfig, progress: Progress | None = None) -> EncoderSpec:
    """Write `encoder.safetensors` + `encoder.json` for the backbone in `cfg.source` (GeM-pooled, no head).
    Refuses an `out` that holds a run unless `cfg.force`; a source that cannot be read leaves `out` untouched."""
    check_destination(Path(cfg.out), cfg.force)
    path = resolve_init(cfg.source, progress)
    backbone = read_init_backbone(path)
    net = infer_network(backbone, path)
    spec = EncoderSpec(
        arch=net.arch,
        embedding_dim=feature_dim(net.arch, net.width),
        stem=net.stem,
        width=net.width,
        embed_size=cfg.embed_size,
        gem_p=cfg.gem_p,
        trained={"init": cfg.source, "steps": 0},
    )
    return export_encoder({f"net.{k}": v for k, v in backbone.items()}, None, spec, Path(cfg.out))
