"""`retrieval train IMAGES`: pretrain a MoCo encoder on an unlabelled folder and export it."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated

import typer

from moco.config import MoCoConfig, TrainConfig
from moco.devices import resolve_device
from moco.errors import InputError
from retrieval.commands.init_source import fetch_named_init

logger = logging.getLogger(__name__)


def device_defaults(device_type: str) -> dict[str, float | int | str]:
    """What a person gets without options. CPU: a small input size and batch so that a few thousand photos
    train to a useful encoder within the hour; GPU: larger images and batch, finishing in minutes."""
    if device_type == "cuda":
        return {"arch": "resnet18", "image_size": 112, "batch_size": 256, "epochs": 200, "time_budget_min": 0.0}
    if device_type == "mps":
        return {"arch": "resnet18", "image_size": 96, "batch_size": 128, "epochs": 200, "time_budget_min": 60.0}
    return {"arch": "resnet18", "image_size": 64, "batch_size": 64, "epochs": 200, "time_budget_min": 60.0}


def train(
    images: Annotated[Path, typer.Argument(help="Folder of images (searched recursively)")],
    out: Annotated[Path | None, typer.Option(help="Run folder [default: runs/<folder name>]")] = None,
    arch: Annotated[str | None, typer.Option(help="resnet18 | resnet50")] = None,
    image_size: Annotated[int | None, typer.Option(help="Training crop size in px")] = None,
    embed_size: Annotated[int, typer.Option(help="Index/query input size; 0 = the training size")] = 0,
    epochs: Annotated[int | None, typer.Option(help="Epochs (the schedule ends at this or the budget)")] = None,
    time_budget: Annotated[float | None, typer.Option(help="Minutes; stop cleanly then (0 = none)")] = None,
    batch_size: Annotated[int | None, typer.Option()] = None,
    queue_size: Annotated[int, typer.Option(help="K, keys in the dictionary (capped at images - batch)")] = 4096,
    momentum: Annotated[float, typer.Option(help="m, key encoder momentum")] = 0.99,
    temperature: Annotated[float, typer.Option(help="T, softmax temperature")] = 0.2,
    lr: Annotated[float, typer.Option(help="SGD learning rate per 256 images")] = 0.06,
    symmetric: Annotated[bool, typer.Option(help="Symmetric loss")] = False,
    preset: Annotated[str, typer.Option(help="moco-v2 | copy-detection")] = "moco-v2",
    device: Annotated[str, typer.Option(help="auto | cpu | cuda | mps")] = "auto",
    val: Annotated[Path | None, typer.Option(help="Labelled folder (class subfolders) for kNN top-1")] = None,
    init: Annotated[
        str | None,
        typer.Option(help="Start from: moco-v2-800ep | moco-v2-200ep | moco-v1-200ep, a weights file or a run folder"),
    ] = None,
    workers: Annotated[int, typer.Option(help="Data-loader workers (-1 = auto, 0 = load in the main process)")] = -1,
    seed: Annotated[int, typer.Option()] = 0,
    resume: Annotated[bool, typer.Option("--resume/--no-resume", help="Continue from checkpoint.pt")] = True,
) -> None:
    """Pretrain a MoCo encoder on an unlabelled folder and export it for indexing."""
    from moco.initweights import init_arch
    from moco.train import fit

    dev = resolve_device(device)
    chosen = device_defaults(dev.type)
    if init:
        fetch_named_init(init)
    given = {"arch": arch, "image_size": image_size, "batch_size": batch_size, "epochs": epochs}
    given["time_budget_min"] = time_budget
    if arch is None and init:
        given["arch"] = init_arch(init)
    # Only an option left out takes the default: a 0 or "" given is checked (and refused) by the configs.
    picked = {k: chosen[k] if v is None else v for k, v in given.items()}
    if out is None:
        out = Path("runs") / (images.resolve().name or "run")
    try:
        cfg = TrainConfig(
            images=str(images),
            out=str(out),
            model=MoCoConfig(
                arch=str(picked["arch"]),
                queue_size=queue_size,
                momentum=momentum,
                temperature=temperature,
                symmetric=symmetric,
            ),
            image_size=int(picked["image_size"]),
            embed_size=embed_size,
            epochs=int(picked["epochs"]),
            time_budget_min=float(picked["time_budget_min"]),
            batch_size=int(picked["batch_size"]),
            lr=lr,
            preset=preset,
            device=device,
            val=str(val or ""),
            init=str(init or ""),
            workers=workers,
            seed=seed,
            resume=resume,
        )
    except ValueError as e:
        raise InputError(str(e)) from e
    typer.echo(
        f"device {dev.type}: {cfg.model.arch}, {cfg.image_size} px, batch {cfg.batch_size}, "
        f"up to {cfg.epochs} epochs" + (f" or {cfg.time_budget_min:g} min" if cfg.time_budget_min else ""),
        err=True,
    )
    result = fit(cfg)
    if result.encoder is not None:
        typer.echo(
            f"{result.steps} steps ({result.stopped}), final loss {result.loss:.3f}; "
            f"encoder written to {out}/encoder.safetensors"
        )


def register(app: typer.Typer) -> None:
    app.command()(train)
