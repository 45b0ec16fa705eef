"""`retrieval train IMAGES`: pretrain a MoCo encoder on an unlabelled folder and export it."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated

import typer

from cli.commands.bars import stderr_bars
from cli.commands.epoch_lines import epoch_lines
from cli.commands.init_source import fetch_named_init
from moco.config import TrainConfig
from moco.devices import resolve_device
from plumbing.errors import InputError

logger = logging.getLogger(__name__)


def train(
    images: Annotated[Path, typer.Argument(help="Folder of images (searched recursively)")],
    out: Annotated[Path | None, typer.Option(help="Run folder [default: runs/<folder name>]")] = None,
    arch: Annotated[str | None, typer.Option(help="resnet18 | resnet50")] = None,
    stem: Annotated[str | None, typer.Option(help="imagenet | cifar (3x3 stride-1 first conv, no max-pool)")] = None,
    width: Annotated[int | None, typer.Option(help="Channels of the first ResNet stage (64 = standard)")] = None,
    crop_size: Annotated[
        int | None, typer.Option("--crop-size", "--image-size", help="Training crop size in px")
    ] = None,
    embed_size: Annotated[
        int | None,
        typer.Option(help="Index/query input size in px [default: the device's; with --crop-size, the crop size]"),
    ] = None,
    epochs: Annotated[int | None, typer.Option(help="Epochs (the schedule ends at this or the budget)")] = None,
    time_budget: Annotated[float | None, typer.Option(help="Minutes; stop cleanly then (0 = none)")] = None,
    batch_size: Annotated[int | None, typer.Option()] = None,
    queue_size: Annotated[int | None, typer.Option(help="K, keys in the dictionary (capped at images - batch)")] = None,
    momentum: Annotated[float | None, typer.Option(help="m, key encoder momentum")] = None,
    temperature: Annotated[float | None, typer.Option(help="T, softmax temperature")] = None,
    lr: Annotated[float | None, typer.Option(help="SGD learning rate per 256 images")] = None,
    lr_schedule: Annotated[
        str | None,
        typer.Option(
            help="cosine | linear (to zero over the run), after the warm-up [default: linear on CPU, else cosine]"
        ),
    ] = None,
    key_views: Annotated[
        int | None, typer.Option(help="Averaged keys (FastSiam): key views per image, averaged into one (1 = off)")
    ] = None,
    progressive_from: Annotated[
        int | None,
        typer.Option(help="Progressive resolution: views start at this side and grow to the crop size (0 = off)"),
    ] = None,
    symmetric: Annotated[bool | None, typer.Option("--symmetric/--no-symmetric", help="Symmetric loss")] = None,
    patch_queries: Annotated[
        bool | None,
        typer.Option(
            "--patch-queries/--no-patch-queries",
            help="Fast-MoCo: the query view as 2x2 patches, each pair of them one query (6 per image)",
        ),
    ] = None,
    preset: Annotated[str | None, typer.Option(help="moco-v2 | copy-detection")] = None,
    colour_strength: Annotated[float | None, typer.Option(help="Scale of colour jitter and grey (1 = MoCo v2)")] = None,
    local_crops: Annotated[
        int | None, typer.Option(help="Multi-crop: small views per image, extra queries against its key (0 = off)")
    ] = None,
    device: Annotated[str, typer.Option(help="auto | cpu | cuda | mps")] = "auto",
    augment_on: Annotated[
        str | None,
        typer.Option(help="workers (PIL per image) | device (whole batches on the GPU) [default: device on CUDA]"),
    ] = None,
    val: Annotated[
        Path | None,
        typer.Option(help="Labelled folder (class subfolders): first-page precision and kNN top-1 vs a random net"),
    ] = None,
    init: Annotated[
        str | None,
        typer.Option(help="Start from: moco-v2-800ep | moco-v2-200ep | moco-v1-200ep, a weights file or a run folder"),
    ] = None,
    workers: Annotated[
        int, typer.Option(min=-1, help="Data-loader workers (-1 = auto, 0 = load in the main process)")
    ] = -1,
    seed: Annotated[int, typer.Option()] = 0,
    resume: Annotated[bool, typer.Option("--resume/--no-resume", help="Continue from checkpoint.pt")] = True,
) -> None:
    """Pretrain a MoCo encoder on an unlabelled folder and export it for indexing."""
    from moco.init.weights import init_network
    from moco.train import fit

    dev = resolve_device(device)
    init_net = None
    if init:
        fetch_named_init(init)
        net = init_network(init)  # the weights fix the network unless an option overrides it
        init_net = (net.arch, net.stem, net.width)
    given = {"arch": arch, "stem": stem, "width": width, "queue_size": queue_size, "momentum": momentum}
    given |= {"temperature": temperature, "symmetric": symmetric, "patch_queries": patch_queries}
    given |= {"crop_size": crop_size, "embed_size": embed_size, "batch_size": batch_size, "epochs": epochs}
    given |= {"lr_schedule": lr_schedule, "key_views": key_views, "progressive_from": progressive_from}
    given |= {"lr": lr, "preset": preset, "time_budget_min": time_budget, "colour_strength": colour_strength}
    given |= {"local_crops": local_crops, "augment_on": augment_on, "device": device, "val": str(val or "") or None}
    given |= {"init": init, "workers": workers, "seed": seed, "resume": resume}
    if out is None:
        out = Path("runs") / (images.resolve().name or "run")
    try:
        cfg = TrainConfig.for_device(dev.type, str(images), str(out), given, init_net=init_net)
    except ValueError as e:
        raise InputError(str(e)) from e
    typer.echo(
        f"device {dev.type}: {cfg.model.arch} ({cfg.model.stem} stem, width {cfg.model.width}), {cfg.crop_size} px"
        + (f" crops embedded at {cfg.embed_size} px" if cfg.embed_size != cfg.crop_size else "")
        + f", batch {cfg.batch_size}, "
        f"up to {cfg.epochs} epochs" + (f" or {cfg.time_budget_min:g} min" if cfg.time_budget_min else ""),
        err=True,
    )
    with stderr_bars() as bars, epoch_lines(Path(cfg.out), cfg.epochs, cfg.time_budget_min * 60, bars.write):
        result = fit(cfg, progress=bars)
    if result.encoder is not None:
        typer.echo(
            f"{result.steps} steps ({result.stopped}), final loss {result.loss:.3f}; "
            f"encoder written to {out}/encoder.safetensors"
        )
    if result.verdict is not None:
        typer.echo(result.verdict.line)


def register(app: typer.Typer) -> None:
    app.command()(train)
