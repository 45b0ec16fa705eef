"""Export and load of the retrieval encoder: `encoder.safetensors` + `encoder.json`.

The JSON carries everything a reader needs to embed an image exactly as at training's eval time
(architecture, layer, pooling, input size, resize/crop, mean/std, grayscale, standardisation, border
trimming, flip averaging), and the sha256 of
the weights file, which indexes record to refuse vectors from another encoder.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from safetensors.torch import load_file
from safetensors.torch import save as safetensors_bytes
from torch import nn
from torch.nn import functional as F

from moco.augment.presets import IMAGENET_MEAN, IMAGENET_STD
from moco.augment.tta import CROPS, MAX_SCALE, MIN_SCALE, tta_views
from moco.backbone import BASE_WIDTH, FEATURE_DIMS, POOLED, RetrievalEncoder, feature_dim, pooled_dim
from moco.config import MAX_IMAGE_SIZE, STEMS  # MAX_IMAGE_SIZE: also the input side, with test-time scales
from moco.preprocess import RESIZES, TRIM_REVISION, make_preprocess
from moco.straighten import STRAIGHTEN_REVISION
from plumbing.atomic import atomic_write_bytes
from plumbing.errors import EncoderSpecError, FormatVersionError, InputError
from plumbing.hashing import content_hash

ENCODER_VERSION = 2  # 2: the input side is `embed_size` (1 called it `image_size`; still read)
LEGACY_PREPROCESSING = {
    "resize": "shorter-side+center-crop",
    "grayscale": False,
    "standardize": False,
    "trim_borders": False,
}
LAYERS = ("backbone", "head")
MIN_IMAGE_SIZE = 16  # as moco.config.TrainConfig: smaller inputs leave a ResNet no feature map to pool
# Upper bounds of every size `encoder.json` gives, so that an edited or damaged file is one error line instead of
# an allocation that gets the process killed (an input side of 100000 made one search ask for 21 GB); the input side's,
# MAX_IMAGE_SIZE, is moco.config's, which training is held to as well:
MAX_WIDTH = 256  # channels of the first ResNet stage: 4x the standard 64 (wide ResNets use 128)
MAX_EMBED_DIM = 16384  # descriptor width: a ResNet-50's layer3+layer4 (3072) at MAX_WIDTH is 12288
MAX_TEST_TIME_SCALES = 8  # test-time rescalings: each is one more forward of every image
_BOOL_FIELDS = ("flip_average", "grayscale", "standardize", "trim_borders", "straighten")


class InvalidSpecField(ValueError):
    """One field of an EncoderSpec is wrong; `read_spec` names the file around it."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"Illegal {field}: {reason}")
        self.field = field
        self.reason = reason


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _check_range(name: str, value: int, low: int, high: int, unit: str = "") -> None:
    """The one bounds check of a size read from `encoder.json`: a whole number in [low, high]."""
    if not _is_int(value):
        raise InvalidSpecField(name, f"{value!r} is not a whole number")
    if not low <= value <= high:
        raise InvalidSpecField(name, f"{value}{unit}; must be between {low} and {high}{unit}")


@dataclass(frozen=True)
class EncoderSpec:
    arch: str
    embedding_dim: int
    embed_size: int  # input side at query/index time, reached as `resize` says (both training presets squash)
    stem: str = "imagenet"  # moco.backbone.build_backbone's stem and base width
    width: int = BASE_WIDTH
    layer: str = "backbone"  # "backbone": GeM-pooled feature map; "head": the projection head's output
    gem_p: float = 3.0
    head_dim: int = 0  # projection size when layer == "head"
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    flip_average: bool = True  # descriptor = f(x) + f(hflip(x)), then L2-normalised
    resize: str = "shorter-side+center-crop"  # or "squash" (moco.preprocess)
    grayscale: bool = False  # descriptor of the grey picture
    standardize: bool = False  # per-image channel mean/std fixed (brightness and contrast cancel)
    trim_borders: bool = False  # a uniform frame is cut off first
    straighten: bool = False  # a picture rotated on a fill-cornered canvas is turned back upright
    pooled: str = "layer4"  # feature maps GeM-pooled: "layer4", or "layer3+layer4" (moco.backbone.RetrievalEncoder)
    test_time_scales: tuple[float, ...] = (1.0,)  # descriptor averaged over the input at these scales (augment.tta)
    test_time_crops: int = 0  # and, with 5, over its four corner crops and centre crop
    sha256: str = ""
    trained: dict[str, Any] = field(default_factory=dict)  # provenance: preset, steps, image size, ...
    format_version: int = ENCODER_VERSION

    def __post_init__(self) -> None:
        if self.arch not in FEATURE_DIMS:
            raise InvalidSpecField("arch", f"unknown architecture {self.arch!r} (known: {', '.join(FEATURE_DIMS)})")
        if self.stem not in STEMS:
            raise InvalidSpecField("stem", f"unknown stem {self.stem!r} (known: {', '.join(STEMS)})")
        _check_range("width", self.width, 8, MAX_WIDTH)
        if self.width % 8:
            raise InvalidSpecField("width", f"{self.width!r}; must be a positive multiple of 8")
        if self.layer not in LAYERS:
            raise InvalidSpecField("layer", f"unknown layer {self.layer!r} (known: {', '.join(LAYERS)})")
        if self.resize not in RESIZES:
            raise InvalidSpecField("resize", f"unknown resize {self.resize!r} (known: {', '.join(RESIZES)})")
        if not _is_int(self.format_version):
            raise InvalidSpecField("format_version", f"{self.format_version!r} is not a whole number")
        _check_range("embed_size", self.embed_size, MIN_IMAGE_SIZE, MAX_IMAGE_SIZE, " px")
        _check_range("embedding_dim", self.embedding_dim, 1, MAX_EMBED_DIM)
        _check_range("head_dim", self.head_dim, 0, MAX_EMBED_DIM)
        if self.pooled not in POOLED or (self.pooled != "layer4" and self.layer != "backbone"):
            raise InvalidSpecField("pooled", f"{self.pooled!r}; one of {', '.join(POOLED)} (layer4 with a head)")
        scales = self.test_time_scales if isinstance(self.test_time_scales, tuple) else ()
        if not scales or not all(_is_number(v) and MIN_SCALE <= v <= MAX_SCALE for v in scales):
            bad = self.test_time_scales
            raise InvalidSpecField("test_time_scales", f"{bad!r}; need numbers in [{MIN_SCALE}, {MAX_SCALE}]")
        if len(scales) > MAX_TEST_TIME_SCALES:
            raise InvalidSpecField("test_time_scales", f"{len(scales)} scales; at most {MAX_TEST_TIME_SCALES}")
        if (side := round(self.embed_size * max(scales))) > MAX_IMAGE_SIZE:  # the largest input the encoder sees
            raise InvalidSpecField(
                "test_time_scales", f"{max(scales)} x {self.embed_size} px = {side} px; must be <= {MAX_IMAGE_SIZE} px"
            )
        if self.test_time_crops not in CROPS or not _is_int(self.test_time_crops):
            raise InvalidSpecField("test_time_crops", f"{self.test_time_crops!r}; choose one of {CROPS}")
        expected = self.head_dim if self.layer == "head" else pooled_dim(self.arch, self.width, self.pooled)
        if self.layer == "head" and self.head_dim < 1:
            raise InvalidSpecField("head_dim", f"{self.head_dim}; layer 'head' needs a positive size")
        if self.embedding_dim != expected:
            raise InvalidSpecField(
                "embedding_dim", f"{self.embedding_dim}; a {self.arch} {self.layer} gives {expected}-wide vectors"
            )
        if not _is_number(self.gem_p) or self.gem_p < 1:
            raise InvalidSpecField("gem_p", f"{self.gem_p!r}; must be a number >= 1")
        for name in ("mean", "std"):
            v = getattr(self, name)
            if not (isinstance(v, tuple) and len(v) == 3 and all(_is_number(c) for c in v)):
                raise InvalidSpecField(name, f"{v!r} is not three numbers")
        if not all(c > 0 for c in self.std):
            raise InvalidSpecField("std", f"{self.std!r}; every value must be positive")
        for name in _BOOL_FIELDS:
            if not isinstance(getattr(self, name), bool):
                raise InvalidSpecField(name, f"{getattr(self, name)!r} is not true or false")
        if not isinstance(self.sha256, str):
            raise InvalidSpecField("sha256", f"{self.sha256!r} is not a string")
        if not isinstance(self.trained, dict):
            raise InvalidSpecField("trained", f"{self.trained!r} is not an object")

    @property
    def preprocess_args(self) -> tuple[Any, ...]:
        """Everything the input transform depends on: two specs with equal args turn a picture into equal inputs."""
        return (
            self.embed_size,
            self.mean,
            self.std,
            self.resize,
            self.grayscale,
            self.standardize,
            self.trim_borders,
            self.straighten,
        )

    def preprocess(self) -> Callable[[Image.Image], torch.Tensor]:
        """The image -> input tensor transform that index and query time share."""
        return make_preprocess(*self.preprocess_args)

    @property
    def identity(self) -> str:
        """What an index's vectors depend on: the weights' sha256, plus the preprocessing when it is not the
        original default (so two descriptors of the same weights are never mixed in one index)."""
        steps = {
            "resize": self.resize,
            "grayscale": self.grayscale,
            "standardize": self.standardize,
            "trim_borders": self.trim_borders,
        }
        if self.straighten:  # listed only when on, so indexes made before the step keep their identity
            steps["straighten"] = True
            steps["straighten_revision"] = STRAIGHTEN_REVISION  # earlier versions turned pictures differently
        if self.trim_borders:  # the trim changed (nested frames, noise, shave): earlier vectors differ
            steps["trim_revision"] = TRIM_REVISION
        descriptor = {"pooled": self.pooled, "test_time_scales": list(self.test_time_scales)}
        descriptor["test_time_crops"] = self.test_time_crops
        if descriptor != {"pooled": "layer4", "test_time_scales": [1.0], "test_time_crops": 0}:
            steps.update(descriptor)  # listed only when not the default, so older indexes keep their identity
        if steps == LEGACY_PREPROCESSING:
            return self.sha256
        return hashlib.sha256(f"{self.sha256}:{json.dumps(steps, sort_keys=True)}".encode()).hexdigest()


class ExportedEncoder(nn.Module):
    """Backbone + GeM (+ optional head): (N, 3, H, W) -> (N, embedding_dim), not normalised."""

    def __init__(self, spec: EncoderSpec) -> None:
        super().__init__()
        self.spec = spec
        self.encoder = RetrievalEncoder(spec.arch, spec.gem_p, spec.stem, spec.width, spec.pooled)
        c = feature_dim(spec.arch, spec.width)
        self.head = (
            nn.Sequential(nn.Linear(c, c), nn.ReLU(inplace=True), nn.Linear(c, spec.head_dim))
            if spec.layer == "head"
            else nn.Identity()
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        views = tta_views(x, self.spec.test_time_scales, self.spec.test_time_crops)
        if len(views) == 1 and views[0] is x:
            return self.head(self.encoder(x))
        return sum(F.normalize(self.head(self.encoder(v)).float(), dim=1) for v in views)  # (N, dim), not unit


def export_encoder(
    backbone_state: dict[str, torch.Tensor],
    head_state: dict[str, torch.Tensor] | None,
    spec: EncoderSpec,
    out_dir: Path,
) -> EncoderSpec:
    """Write weights then the JSON (with the weights' sha256), each atomically. Returns the final spec."""
    out_dir.mkdir(parents=True, exist_ok=True)
    module = ExportedEncoder(spec)
    module.encoder.backbone.load_state_dict(backbone_state)
    if spec.layer == "head":
        assert head_state is not None, "layer 'head' needs the head's weights"
        module.head.load_state_dict(head_state)
    tensors = {k: v.detach().cpu().contiguous() for k, v in module.state_dict().items()}
    # both files are made in memory first, then written back to back: a failure before this point leaves the
    # folder as it was, and the two replacements are one fsync of the JSON apart
    data = safetensors_bytes(tensors)
    spec = EncoderSpec(**{**asdict(spec), "sha256": hashlib.sha256(data).hexdigest()})
    text = json.dumps(asdict(spec), indent=2) + "\n"
    atomic_write_bytes(out_dir / "encoder.safetensors", lambda f: f.write(data))
    atomic_write_bytes(out_dir / "encoder.json", lambda f: f.write(text.encode()))
    return spec


def export_descriptor_variant(src_dir: Path, out_dir: Path, **changes: Any) -> EncoderSpec:  # noqa: ANN401
    """The encoder in `src_dir` with other descriptor settings (`pooled`, `test_time_scales`, `test_time_crops`,
    `flip_average`, ...), written to `out_dir`: the same weights (and sha256), a new encoder.json."""
    spec = EncoderSpec(**{**asdict(read_spec(src_dir)), **changes})
    out_dir.mkdir(parents=True, exist_ok=True)
    data = (src_dir / "encoder.safetensors").read_bytes()
    atomic_write_bytes(out_dir / "encoder.safetensors", lambda f: f.write(data))
    text = json.dumps(asdict(spec), indent=2) + "\n"
    atomic_write_bytes(out_dir / "encoder.json", lambda f: f.write(text.encode()))
    return spec


def read_spec(encoder_dir: Path) -> EncoderSpec:
    path = encoder_dir / "encoder.json"
    if not path.is_file():
        raise InputError(f"{path}: no encoder here (run `retrieval train` first, or point --model at its run folder)")
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise InputError(f"{path}: unreadable encoder description ({e})") from e
    if not isinstance(raw, dict):
        raise InputError(f"{path}: not an encoder description (a JSON {type(raw).__name__}, not an object)")
    version = raw.get("format_version")
    if not isinstance(version, int):
        raise InputError(f"{path}: not an encoder description (no format_version)")
    if version > ENCODER_VERSION:
        raise FormatVersionError(f"{path}: encoder format {version} is newer than this program reads; upgrade")
    if version < 2 and "image_size" in raw:  # format 1 named the input side image_size
        raw["embed_size"] = raw.pop("image_size")
        raw["format_version"] = ENCODER_VERSION
    for name in ("mean", "std", "test_time_scales"):
        if isinstance(raw.get(name), list):
            raw[name] = tuple(raw[name])
    try:
        return EncoderSpec(**raw)
    except InvalidSpecField as e:
        raise EncoderSpecError(path, e.field, e.reason) from None
    except TypeError as e:  # a field missing or unknown: the message names it
        raise InputError(f"{path}: invalid encoder description ({e})") from None


def load_encoder(encoder_dir: Path, device: str | torch.device = "cpu") -> tuple[ExportedEncoder, EncoderSpec]:
    """Read the spec, verify the weights' sha256, and build the encoder in eval mode on `device`."""
    spec = read_spec(encoder_dir)
    weights = encoder_dir / "encoder.safetensors"
    if not weights.is_file():
        raise InputError(f"{weights}: encoder weights are missing")
    if content_hash(weights) != spec.sha256:
        raise InputError(f"{weights}: checksum does not match encoder.json (damaged or replaced file)")
    module = ExportedEncoder(spec)
    try:
        module.load_state_dict(load_file(str(weights)))
    except Exception as e:
        raise InputError(f"{weights}: weights do not fit the described encoder ({e})") from e
    return module.to(device).eval(), spec


def save_random_encoder(
    out_dir: Path,
    arch: str = "resnet18",
    embed_size: int = 32,
    dim: int = 16,
    seed: int = 0,
    preprocessing: dict[str, Any] | None = None,
    stem: str = "imagenet",
    width: int = BASE_WIDTH,
) -> EncoderSpec:
    """A randomly initialised encoder with a `dim`-wide head: for tests and random-init baselines.
    `preprocessing` sets EncoderSpec's resize / grayscale / standardize / trim_borders / straighten."""
    torch.manual_seed(seed)
    layer = "head" if dim else "backbone"
    spec = EncoderSpec(
        arch=arch,
        embedding_dim=dim or feature_dim(arch, width),
        embed_size=embed_size,
        stem=stem,
        width=width,
        layer=layer,
        head_dim=dim,
        trained={"random_init": True, "seed": seed},
        **(preprocessing or {}),
    )
    module = ExportedEncoder(spec)
    head = module.head.state_dict() if layer == "head" else None
    return export_encoder(module.encoder.backbone.state_dict(), head, spec, out_dir)
