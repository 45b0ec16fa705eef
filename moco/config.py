"""Frozen configs for the MoCo model and for one training run; both are stored in the checkpoint."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

ARCHS = ("resnet18", "resnet50")
STEMS = ("imagenet", "cifar")
PRESETS = ("moco-v2", "copy-detection")
DEVICES = ("auto", "cpu", "cuda", "mps")
AUGMENT_ON = ("auto", "workers", "device")
# The largest input side in px that a run may train or embed at, and that encoder.json may ask for (moco.export):
# 4.6x the 224 px the ImageNet weights saw; one ResNet-50 search peaks at 1.2 GB here (1.1 GB at 224 px)
MAX_IMAGE_SIZE = 1024
LR_SCHEDULES = ("cosine", "linear")  # after warm-up: cosine decay, or linear decay to zero over the run


@dataclass(frozen=True)
class MoCoConfig:
    """The model: backbone, projection head, dictionary (queue) and contrastive loss."""

    arch: str = "resnet18"
    stem: str = "imagenet"  # "cifar": 3x3 stride-1 first conv, no max-pool (moco.backbone)
    width: int = 64  # channels of the first ResNet stage (64 is the standard network)
    dim: int = 128  # projection output size (the contrastive space)
    queue_size: int = 4096  # K: number of keys in the dictionary
    momentum: float = 0.99  # m: key encoder update theta_k <- m*theta_k + (1-m)*theta_q
    temperature: float = 0.2  # T
    symmetric: bool = False  # symmetric loss (both views act as query)
    patch_queries: bool = False  # Fast-MoCo: the query view as 2x2 patches; each pair's mean feature a query (6)
    bn_splits: int = 0  # ghost-BN groups on one device (emulates per-GPU BN); 0 = auto; 1 under DDP
    gem_p: float = 3.0  # GeM pooling exponent of the retrieval descriptor
    key_views: int = 1  # averaged keys (FastSiam): key views per image, their unit keys averaged into one target

    def __post_init__(self) -> None:
        if self.arch not in ARCHS:
            raise ValueError(f"unknown arch {self.arch!r}: choose one of {', '.join(ARCHS)}")
        if self.stem not in STEMS:
            raise ValueError(f"unknown stem {self.stem!r}: choose one of {', '.join(STEMS)}")
        if self.width < 8 or self.width % 8:
            raise ValueError(f"Illegal width {self.width}: must be a positive multiple of 8")
        if self.dim < 1:
            raise ValueError(f"Illegal dim {self.dim}: must be positive")
        if self.queue_size < 1:
            raise ValueError(f"Illegal queue_size {self.queue_size}: must be positive")
        if not 0.0 <= self.momentum < 1.0:
            raise ValueError(f"Illegal momentum {self.momentum}: must be in [0, 1)")
        if self.temperature <= 0.0:
            raise ValueError(f"Illegal temperature {self.temperature}: must be positive")
        if self.bn_splits < 0:
            raise ValueError(f"Illegal bn_splits {self.bn_splits}: must be >= 0 (0 = auto)")
        if self.gem_p < 1.0:
            raise ValueError(f"Illegal gem_p {self.gem_p}: must be >= 1")
        if self.key_views < 1 or (self.key_views > 1 and self.symmetric):
            raise ValueError(f"Illegal key_views {self.key_views}: must be >= 1, and 1 with the symmetric loss")


@dataclass(frozen=True)
class TrainConfig:
    """One `retrieval train` run. Paths are stored as strings so the config fits in a checkpoint."""

    images: str
    out: str
    model: MoCoConfig = MoCoConfig()
    crop_size: int = 64  # training: the side of the random crops the views are made of
    embed_size: int | None = None  # index and query: the side pictures are embedded at; None: the crop size
    epochs: int = 100
    time_budget_min: float = 0.0  # 0 = no budget; otherwise stop cleanly at the budget
    batch_size: int = 64
    lr: float = 0.06  # SGD learning rate for batch 256, scaled linearly with batch size
    lr_schedule: str = "cosine"  # after warm-up: "cosine" decay or "linear" decay to zero over the run
    progressive_from: int = 0  # progressive resolution (FFCV): views resized to this side at the start, growing to
    # crop_size over the run (moco.train.view_side); 0 = off, every step at crop_size
    weight_decay: float = 5e-4
    warmup_steps: int = 20
    preset: str = "moco-v2"
    crop_min_scale: float = 0.0  # smallest random crop (fraction of the image area); 0 = the preset's own
    colour_strength: float = 1.0  # scales the preset's colour jitter and grey (1 = MoCo v2's; 0 = none)
    local_crops: int = 0  # multi-crop: small views per image, extra queries against its key; 0 = off
    local_size: int = 0  # their size in px; 0 = half the training crop size
    local_max_scale: float = 0.14  # their largest area (fraction of the image; the smallest is 0.05)
    device: str = "auto"
    augment_on: str = "auto"  # "workers": PIL per image in the loader; "device": whole batches (moco.augment.batch)
    amp: bool = True  # autocast on CUDA (bf16 where supported)
    workers: int = -1  # data-loader workers; -1 = pick from the CPU count
    seed: int = 0
    val: str = ""  # labelled folder (class subfolders) for kNN top-1 each epoch
    init: str = ""  # backbone to start from: a weights file, a run folder, or a name in moco.init.pretrained
    init_head_steps: int = 100  # with init: steps in which only the new projection head learns
    init_lr_scale: float = 0.1  # with init: the backbone's learning rate relative to the head's
    checkpoint_every: int = 200  # steps between checkpoints (and one at the end)
    log_every: int = 10  # steps between metrics.jsonl records
    stop_after_steps: int = 0  # stop (with a checkpoint) after this many steps in total; 0 = never
    resume: bool = True

    def __post_init__(self) -> None:
        if self.embed_size is None:  # resolved here, so a built config always holds both sizes
            object.__setattr__(self, "embed_size", self.crop_size)
        for name, side in (("crop_size", self.crop_size), ("embed_size", self.embed_size)):
            if not isinstance(side, int) or not 16 <= side <= MAX_IMAGE_SIZE:
                raise ValueError(f"Illegal {name} {side}: must be between 16 and {MAX_IMAGE_SIZE} px")
        if self.batch_size < 2:
            raise ValueError(f"Illegal batch_size {self.batch_size}: must be >= 2")
        if self.epochs < 1:
            raise ValueError(f"Illegal epochs {self.epochs}: must be >= 1")
        if self.lr <= 0:
            raise ValueError(f"Illegal lr {self.lr}: must be positive")
        if self.time_budget_min < 0:
            raise ValueError(f"Illegal time budget {self.time_budget_min}: must be >= 0")
        if self.init_head_steps < 0 or not 0.0 < self.init_lr_scale <= 1.0:
            raise ValueError("Illegal init schedule: init_head_steps must be >= 0 and init_lr_scale in (0, 1]")
        if self.colour_strength < 0:
            raise ValueError(f"Illegal colour_strength {self.colour_strength}: must be >= 0")
        if self.local_crops < 0 or (self.local_size and self.local_size < 8):
            raise ValueError("Illegal multi-crop: local_crops must be >= 0 and local_size 0 (auto) or >= 8")
        if not 0.05 < self.local_max_scale <= 1.0:
            raise ValueError(f"Illegal local_max_scale {self.local_max_scale}: must be in (0.05, 1]")
        if self.preset not in PRESETS:
            raise ValueError(f"unknown preset {self.preset!r}: choose one of {', '.join(PRESETS)}")
        if self.device not in DEVICES:
            raise ValueError(f"unknown device {self.device!r}: choose one of {', '.join(DEVICES)}")
        if self.progressive_from and not 8 <= self.progressive_from < self.crop_size:
            raise ValueError(
                f"Illegal progressive_from {self.progressive_from}: 0 (off), or 8 to below crop_size {self.crop_size}"
            )
        if self.lr_schedule not in LR_SCHEDULES:
            raise ValueError(f"unknown lr_schedule {self.lr_schedule!r}: choose one of {', '.join(LR_SCHEDULES)}")
        if self.model.key_views > 1 and self.augment_on == "device":
            raise ValueError("averaged keys (key_views > 1) are made by the workers: augment_on 'workers' or 'auto'")
        if self.augment_on not in AUGMENT_ON:
            raise ValueError(f"unknown augment_on {self.augment_on!r}: choose one of {', '.join(AUGMENT_ON)}")

    @property
    def out_dir(self) -> Path:
        return Path(self.out)

    @property
    def local_side(self) -> int:
        """The multi-crop views' size in px."""
        return self.local_size or max(8, self.crop_size // 2)

    @classmethod
    def for_device(
        cls,
        device_type: str,
        images: str,
        out: str,
        given: Mapping[str, Any] | None = None,
        *,
        init_net: tuple[str, str, int] | None = None,
    ) -> TrainConfig:
        """The run `retrieval train` makes on a device ("cpu", "cuda", "mps") from what a person gave.

        `given` maps MoCoConfig and TrainConfig field names to values; None (or absent) means not given. The policy,
        in one place for the CLI, the app, the benchmarks and the tests:
        - a given value wins; else the device's default (device_defaults); else the configs' own default;
        - with `--init`, the network's arch, stem and width come from the weights (`init_net`) unless given;
        - the device's small training crops were measured from scratch with moco-v2 only: with `init` or another
          preset, and no size given, the crops are drawn at the device's embed size;
        - a crop size given without an embed size embeds at the crop size.
        `augment_on` stays "auto" unless given (fit resolves it for the device: resolve_augment_on).
        Raises ValueError for an unknown field or an illegal value.
        """
        wanted = {k: v for k, v in (given or {}).items() if v is not None}
        unknown = sorted(set(wanted) - _MODEL_FIELDS - _TRAIN_FIELDS - {"model", "images", "out"})
        if unknown:
            raise ValueError(f"unknown training option(s): {', '.join(unknown)}")
        if init_net is not None:
            for name, value in zip(("arch", "stem", "width"), init_net, strict=True):
                wanted.setdefault(name, value)
        chosen = {k: v for k, v in device_defaults(device_type).items() if k != "augment_on"}
        from_scratch_moco_v2 = not wanted.get("init") and wanted.get("preset", "moco-v2") == "moco-v2"
        if not from_scratch_moco_v2 and "crop_size" not in wanted and "embed_size" not in wanted:
            if chosen.get("embed_size"):
                wanted["crop_size"] = chosen["embed_size"]
        if "crop_size" in wanted and "embed_size" not in wanted:
            wanted["embed_size"] = wanted["crop_size"]  # embed at the crop size given, not at the device's
        merged = {**chosen, **wanted}
        model = MoCoConfig(**{k: v for k, v in merged.items() if k in _MODEL_FIELDS})
        run = {k: v for k, v in merged.items() if k in _TRAIN_FIELDS and k not in ("model", "images", "out")}
        return cls(images=images, out=out, model=model, **run)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @staticmethod
    def from_dict(d: dict[str, Any]) -> TrainConfig:
        d = dict(d)
        model = MoCoConfig(**d.pop("model"))
        if "image_size" in d:  # checkpoints written before the sizes had their names: image_size, embed_size 0
            d.setdefault("crop_size", d.pop("image_size"))
            d["embed_size"] = d.get("embed_size") or None
        known = {f.name for f in fields(TrainConfig)}
        return TrainConfig(model=model, **{k: v for k, v in d.items() if k in known})


def device_defaults(device_type: str) -> dict[str, Any]:
    """What `retrieval train` uses per device where a person gives no option (MoCoConfig and TrainConfig fields;
    the rest come from the configs). CPU: the short-budget recipe of bench.training.learning_curve (docs/BENCHMARKS.md);
    GPU: larger images and batch, finishing in minutes."""
    if device_type == "cuda":
        cuda = {"arch": "resnet18", "crop_size": 112, "batch_size": 256, "epochs": 200, "time_budget_min": 0.0}
        return {**cuda, "augment_on": "device"}  # PIL workers cannot keep up with a GPU step (issue 14)
    if device_type == "mps":
        mps = {"arch": "resnet18", "crop_size": 96, "batch_size": 128, "epochs": 200, "time_budget_min": 60.0}
        return {**mps, "augment_on": "workers"}
    return {
        "arch": "resnet18",
        **CPU_RECIPE,
        "epochs": CPU_MAX_EPOCHS,
        "time_budget_min": 60.0,
        "augment_on": "workers",
    }


def resolve_augment_on(augment_on: str, device_type: str, preset: str) -> str:
    """Where a run augments: "workers" or "device". "auto" takes the device's default (device_defaults), except
    that the copy-detection preset, whose PIL steps the batch path lacks, always stays on the workers."""
    if augment_on != "auto":
        return augment_on
    if preset != "moco-v2":
        return "workers"
    return device_defaults(device_type)["augment_on"]


# CPU fields (bench/results/learning_curve.md). At equal wall time (20 minutes, 25 runs) no setting moved clip-art
# kNN beyond one standard error of today's: lr 0.03 or 0.12 per 256, width 32 (2.6x the pairs), batch 32, T 0.05-0.1,
# m 0.9 with K 1024, a quarter of the colour jitter, combinatorial patch queries; nor did the symmetric loss,
# multi-crop or the CIFAR stem at width 16 in longer runs. T 0.1 kept emoji cross-style recall higher than T 0.2 in
# each of four same-round pairs at level kNN. Crops drawn at 32 px and embedded at 64 px train 1.7-2.8x the steps
# and were ahead of 64 px crops at 20 minutes in both runs (kNN +0.009 and +0.014, emoji +0.071 and +0.024) and level
# at 60 (+0.009, -0.011), so the CPU recipe uses them (in fp32 on every CPU: a 32 px view reaches layer4 at 1x1).
# The learning rate decays linearly to zero over the run (issue 29, 20 minutes, two seeds against three of cosine):
# first-page precision level (+0.027 and +0.017 over random init against +0.024, +0.009, +0.026), emoji cross-style
# recall@10 above every cosine seed (+0.020 and +0.031 against +0.003, +0.008, -0.003) at the same cost per step.
# How long a CPU run lasts: the hour, or CPU_MAX_EPOCHS passes over a small folder, whichever ends first. First-page
# precision and cross-style recall follow steps, not passes (issue 29: folders of 587, 2,345 and 9,375 pictures,
# Spearman +0.67 against +0.11 over 31 points); 587 pictures still gained from 217 passes (the former cap of 200) to
# 455 (P@10 +0.016 to +0.029, emoji recall@10 +0.063 to +0.107), so the cap sits above what was measured.
CPU_MAX_EPOCHS = 500
CPU_RECIPE: dict[str, Any] = {
    "crop_size": 32,
    "embed_size": 64,
    "batch_size": 64,
    "temperature": 0.1,
    "lr_schedule": "linear",
}

_MODEL_FIELDS = frozenset(f.name for f in fields(MoCoConfig))
_TRAIN_FIELDS = frozenset(f.name for f in fields(TrainConfig))
