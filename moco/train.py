"""fit(cfg): the one MoCo training loop, single process or DDP under torchrun.

Resumable to the bit: data order is a seeded permutation per epoch, augmentation randomness is a function
of (seed, epoch, image), the key shuffle of step s is seeded by s, and the checkpoint holds everything
else (both encoders, the queue, optimizer, scaler, step, elapsed time).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader

from moco.augment.batch import BatchTwoCrops
from moco.augment.batch_params import batch_recipe
from moco.augment.presets import LOCAL_MIN_SCALE, TwoCropsTransform, make_preset
from moco.augment.views import ViewsOf, device_views, worker_views
from moco.backbone import last_map_side
from moco.checkpoint import load_checkpoint, save_checkpoint
from moco.config import MoCoConfig, TrainConfig, resolve_augment_on
from moco.data import (
    CACHE_SCALE,
    BadFile,
    CachedRows,
    DecodeCache,
    PairDataset,
    RunBatches,
    SquareDataset,
    write_bad_files,
)
from moco.devices import CPU_BF16_MIN_MAP, amp_dtype, autocast, resolve_device, uses_channels_last
from moco.distributed import Dist, barrier, from_main, init_distributed, shutdown
from moco.export import EncoderSpec, export_encoder
from moco.init.pretrained import resolve_init
from moco.init.warm_start import fill_queue, head_only_steps, param_groups, set_learning_rates
from moco.init.weights import load_init_weights
from moco.measure.health import EpochHealth
from moco.measure.plot import plot_loss
from moco.measure.validation import FIRST_PAGE, KnnValidator
from moco.measure.verdict import FirstPage, Verdict, training_verdict
from moco.model import MoCo
from moco.preprocess import PRESET_PREPROCESSING
from plumbing.atomic import atomic_write_bytes
from plumbing.errors import InputError, disk_full_is
from plumbing.images import scan_images
from plumbing.progress import Progress, report

logger = logging.getLogger(__name__)
PROGRESSIVE_END = 0.75  # progressive resolution reaches crop_size at this share of the run (FFCV ends its ramp early)
VIEW_STEP = 8  # ... and grows the views by this many pixels at a time


@dataclass(frozen=True)
class TrainResult:
    out_dir: Path
    steps: int
    epochs: float
    loss: float
    stopped: str  # "done" | "time budget" | "stop_after_steps"
    encoder: EncoderSpec | None
    model_config: MoCoConfig
    verdict: Verdict | None = None  # did the encoder learn what a random network lacks (rank 0 only)


def resolve_model_config(cfg: TrainConfig, n_images: int, d: Dist) -> MoCoConfig:
    """The queue never holds more than the folder minus one batch; ghost BN groups on one device."""
    global_batch = cfg.batch_size * d.world
    K = max(1, min(cfg.model.queue_size, n_images - global_batch))
    splits = 1
    if d.enabled:
        splits = 1  # real per-rank BN, with the key batch shuffled across ranks
    elif cfg.model.bn_splits > 0:
        splits = cfg.model.bn_splits
    else:
        # groups of at least 8 images: smaller ones make BN statistics too noisy to learn from
        splits = next((g for g in (4, 2) if cfg.batch_size % g == 0 and cfg.batch_size // g >= 8), 1)
    return dataclasses.replace(cfg.model, queue_size=K, bn_splits=splits)


def learning_rate(cfg: TrainConfig, step: int, progress: float, world: int) -> float:
    """Linear warm-up, then cosine decay (or, with lr_schedule "linear", linear decay to zero) over `progress` in
    [0, 1] (steps or time budget, whichever leads)."""
    base = cfg.lr * cfg.batch_size * world / 256
    warm = min(1.0, (step + 1) / max(1, cfg.warmup_steps))
    if cfg.lr_schedule == "linear":
        return base * warm * (1.0 - min(1.0, progress))
    return base * warm * 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def view_side(cfg: TrainConfig, progress: float) -> int:
    """The side views are trained at `progress` in [0, 1] of the run: crop_size, or with progressive_from, that side
    at the start, growing linearly in steps of VIEW_STEP pixels to crop_size by PROGRESSIVE_END of the run (smaller
    pictures first cost fewer FLOPs per step: FFCV's progressive resizing)."""
    if not cfg.progressive_from:
        return cfg.crop_size
    t = min(1.0, max(0.0, progress) / PROGRESSIVE_END)
    if t >= 1.0:
        return cfg.crop_size
    grown = VIEW_STEP * int(t * (cfg.crop_size - cfg.progressive_from) / VIEW_STEP)
    return min(cfg.crop_size, cfg.progressive_from + grown)


def _resized(x: torch.Tensor, side: int) -> torch.Tensor:
    """Views (..., 3, h, w) resized to (..., 3, side, side), antialiased."""
    flat = x.reshape(-1, *x.shape[-3:])
    out = F.interpolate(flat, size=(side, side), mode="bilinear", align_corners=False, antialias=True)
    return out.reshape(*x.shape[:-2], side, side)


def train_amp(cfg: TrainConfig, device: torch.device) -> bool:
    """Whether training autocasts: `cfg.amp`, except on a CPU when the smallest input (a multi-crop view or a query
    patch, else the training crop) would reach the last feature map at a side below CPU_BF16_MIN_MAP, near where one
    bf16 kernel is wrong (moco.devices); then fp32."""
    if not cfg.amp or device.type != "cpu":
        return cfg.amp
    smallest = cfg.crop_size // 2 if cfg.model.patch_queries else cfg.crop_size
    if cfg.local_crops:
        smallest = min(smallest, cfg.local_side)
    if cfg.progressive_from:
        smallest = min(smallest, cfg.progressive_from)
    return last_map_side(cfg.model.stem, smallest) >= CPU_BF16_MIN_MAP


def _precision(cfg: TrainConfig, device: torch.device) -> str:
    dtype = amp_dtype(device, train=True) if cfg.amp else None
    if dtype is not None and not train_amp(cfg, device):
        return "fp32 (a view reaches the last feature map at 1x1: too small for CPU bf16)"
    return {torch.bfloat16: "bf16 autocast", torch.float16: "fp16 autocast"}.get(dtype, "fp32")


def _check_output(out: Path) -> None:
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / f".write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        raise InputError(f"{out}: output folder is not writable ({e.strerror or e})") from e


def _workers(cfg: TrainConfig, device: torch.device) -> int:
    if cfg.workers >= 0:
        return cfg.workers
    cpus = os.cpu_count() or 1
    return min(8, cpus - 1) if device.type != "cpu" else min(4, max(0, cpus - 1))


def fit(cfg: TrainConfig, progress: Progress | None = None) -> TrainResult:
    device = resolve_device(cfg.device)
    d = init_distributed(device.type)
    if device.type == "cuda":
        device = torch.device("cuda", d.local_rank)
    full = (
        f"{cfg.out}: no space left on the device while writing the run; its last checkpoint is kept;"
        " free some space and run the same command again (it resumes)"
    )
    try:
        with disk_full_is(full):
            return _fit(cfg, device, d, progress)
    finally:
        shutdown(d)


def _fit(cfg: TrainConfig, device: torch.device, d: Dist, progress: Progress | None) -> TrainResult:
    """Set-up, loop, export: the three parts of a run, as MoCo's main_moco.py reads."""
    run = _set_up(cfg, device, d, progress)
    end = _loop(run, device, d, progress if d.is_main else None)  # rank 0 speaks for the run
    spec = _export(run, end) if d.is_main else None
    verdict = _verdict(end.last_record, run.mcfg, run.validator, device, cfg.seed, run.model) if d.is_main else None
    barrier(d)
    epochs = end.step / run.steps_per_epoch
    return TrainResult(run.out, end.step, epochs, end.loss, end.stopped, spec, run.mcfg, verdict)


@dataclass
class _Run:
    """What the set-up hands the loop: the run's config, data, model, optimiser and where it resumes."""

    cfg: TrainConfig
    out: Path
    n: int  # readable images
    image_files: list[str]  # queue_ids[i] names image_files[id], relative to the image folder
    mcfg: MoCoConfig
    model: MoCo
    ddp: torch.nn.Module  # the model, wrapped for DDP under torchrun
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    amp: bool
    channels_last: bool
    dataset: CachedRows
    views: ViewsOf
    validator: KnnValidator | None
    steps_per_epoch: int
    total_steps: int
    head_steps: int
    step: int  # where the loop starts (0, or the checkpoint's step)
    elapsed_before: float
    loss_history: list[list[float]]


@dataclass(frozen=True)
class _LoopEnd:
    step: int
    stopped: str
    loss: float
    last_record: dict[str, Any] | None  # the last epoch's health record (rank 0)
    seconds: float  # training time, including the time before a resume


def _set_up(cfg: TrainConfig, device: torch.device, d: Dist, progress: Progress | None) -> _Run:
    """Check the inputs, decode the folder, build the model, optimiser and data, and resume if asked."""
    cfg = dataclasses.replace(cfg, augment_on=resolve_augment_on(cfg.augment_on, device.type, cfg.preset))
    out = cfg.out_dir
    root = Path(cfg.images)
    paths, skipped = scan_images(root)  # skipped: symlinks and special files with an image's name, left out
    if not paths:
        raise InputError(f"{root}: no images found (looked for jpg, png, webp, bmp, gif, tiff)")
    if d.is_main:
        _check_output(out)
    side = round(cfg.crop_size * CACHE_SCALE)
    cache = _build_cache(paths, side, out, d, progress)
    if d.is_main:
        write_bad_files(out / "bad_files.csv", [*(BadFile(str(s.path), s.reason) for s in skipped), *cache.bad])
        for b in cache.bad:
            logger.warning("skipped %s: %s", b.path, b.reason)
    n = len(cache)
    if n < cfg.batch_size * d.world:
        raise InputError(
            f"{root}: {n} readable images, fewer than one batch of {cfg.batch_size * d.world}; "
            "lower --batch-size or add images"
        )
    mcfg = resolve_model_config(cfg, n, d)
    torch.manual_seed(cfg.seed)
    model = MoCo(mcfg)
    if cfg.init:
        load_init_weights(model, resolve_init(cfg.init))
    image_files = [p.relative_to(root).as_posix() for p in cache.paths]
    model = model.to(device)
    channels_last = uses_channels_last(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.SGD(param_groups(model, cfg), lr=0.0, momentum=0.9, weight_decay=cfg.weight_decay)
    scaler = torch.amp.GradScaler("cuda", enabled=cfg.amp and amp_dtype(device, train=True) == torch.float16)
    ddp = (
        DistributedDataParallel(model, device_ids=[d.local_rank] if device.type == "cuda" else None)
        if d.enabled
        else model
    )
    steps_per_epoch = n // (cfg.batch_size * d.world)
    total_steps = cfg.epochs * steps_per_epoch
    head_steps = head_only_steps(cfg, total_steps)
    state = _resume(cfg, mcfg, model, optimizer, scaler, out) if cfg.resume else None
    step = state["step"] if state else 0
    if d.is_main:
        logger.info(
            "training %s (%s stem, width %d) on %s in %s: %d images, %d px, batch %d x %d ranks, K %d, m %.3g, "
            "T %.3g, preset %s augmented on the %s, %d steps/epoch, up to %d epochs%s%s",
            mcfg.arch,
            mcfg.stem,
            mcfg.width,
            device,
            _precision(cfg, device),
            n,
            cfg.crop_size,
            cfg.batch_size,
            d.world,
            mcfg.queue_size,
            mcfg.momentum,
            mcfg.temperature,
            cfg.preset,
            cfg.augment_on,
            steps_per_epoch,
            cfg.epochs,
            f", time budget {cfg.time_budget_min:g} min" if cfg.time_budget_min else "",
            f", resuming at step {step}" if step else "",
        )
    dataset, views = _dataset_and_views(cfg, cache, device)
    if cfg.init and step == 0:  # the first negatives are keys of the initial encoder, not random vectors
        with autocast(device, cfg.amp):
            filled = fill_queue(model, dataset, n, cfg, device, d.rank, d.world, views)
        logger.info("queue filled with %d keys of the initial encoder; head only for %d steps", filled, head_steps)
    validator = KnnValidator.load(Path(cfg.val), cfg.embed_size) if cfg.val and d.is_main else None
    if not cfg.resume and d.is_main:  # start over, but only once every input has been accepted
        (out / "checkpoint.pt").unlink(missing_ok=True)
    if d.is_main:
        _keep_metrics_until(out / "metrics.jsonl", step)
    return _Run(
        cfg=cfg,
        out=out,
        n=n,
        image_files=image_files,
        mcfg=mcfg,
        model=model,
        ddp=ddp,
        optimizer=optimizer,
        scaler=scaler,
        amp=train_amp(cfg, device),
        channels_last=channels_last,
        dataset=dataset,
        views=views,
        validator=validator,
        steps_per_epoch=steps_per_epoch,
        total_steps=total_steps,
        head_steps=head_steps,
        step=step,
        elapsed_before=state["elapsed_s"] if state else 0.0,
        loss_history=state["loss_history"] if state else [],
    )


def _loop(run: _Run, device: torch.device, d: Dist, progress: Progress | None) -> _LoopEnd:
    """Train from run.step until the epochs, the time budget or stop_after_steps end; checkpoint on the way."""
    cfg, mcfg, model, optimizer, scaler = run.cfg, run.mcfg, run.model, run.optimizer, run.scaler
    steps_per_epoch, total_steps, loss_history = run.steps_per_epoch, run.total_steps, run.loss_history
    step = run.step
    expected_steps = total_steps  # what the progress report counts towards; a time budget moves it
    metrics_file = run.out / "metrics.jsonl"
    t_start = time.monotonic() - run.elapsed_before
    stopped = "done"
    loss_value = loss_history[-1][1] if loss_history else float("nan")
    run.ddp.train()
    workers = _workers(cfg, device)
    loader = DataLoader(
        run.dataset,
        batch_sampler=RunBatches(run.n, cfg.batch_size, cfg.seed, step, total_steps, d.rank, d.world),
        num_workers=workers,
        pin_memory=device.type == "cuda",
        persistent_workers=workers > 0,
        prefetch_factor=4 if workers > 0 else None,
    )

    def save() -> None:
        elapsed = time.monotonic() - t_start
        _save(run.out, cfg, mcfg, model, optimizer, scaler, step, elapsed, loss_history, run.image_files)

    def end_epoch() -> dict[str, Any] | None:
        return _end_epoch(health, step, steps_per_epoch, mcfg.dim, run.validator, model, device, metrics_file, d)

    health = EpochHealth()
    last_record: dict[str, Any] | None = None
    t_log, seen_log = time.monotonic(), 0
    for batch in loader:
        elapsed = time.monotonic() - t_start
        progress_frac = step / total_steps
        if cfg.time_budget_min:
            # rank 0's clock for all: every rank takes the same LR and stops at the same step
            progress_frac = max(progress_frac, from_main(d, elapsed / (cfg.time_budget_min * 60), device))
            if progress_frac >= 1.0:
                stopped = "time budget"
                break
            if step > 0 and progress_frac > step / total_steps:
                expected_steps = _budget_total(step, progress_frac)  # the report and its ETA follow the clock
        lr = learning_rate(cfg, step, progress_frac, d.world)
        set_learning_rates(optimizer, cfg, step, lr, run.head_steps)
        im_q, im_k, ids, im_local = run.views(batch)  # im_local: (N, L, 3, h, w) with multi-crop, else None
        side = view_side(cfg, progress_frac)
        if side != im_q.shape[-1]:  # progressive resolution: smaller views early in the run
            im_q, im_k = _resized(im_q, side), _resized(im_k, side)
        if run.channels_last:
            im_q = im_q.contiguous(memory_format=torch.channels_last)
            im_k = im_k.contiguous(memory_format=torch.channels_last) if im_k.dim() == 4 else im_k
        gen = torch.Generator().manual_seed(cfg.seed * 7_777_777 + step)
        with autocast(device, run.amp, train=True):
            logits, labels = run.ddp(im_q, im_k, ids, gen, im_local)
            loss = F.cross_entropy(logits.float(), labels)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        step += 1
        loss_value = float(loss.detach())
        loss_history.append([step, loss_value])
        health.update(logits.detach(), model.last_q)
        seen_log += im_q.shape[0] * d.world
        if progress is not None:
            img_s = seen_log / max(1e-9, time.monotonic() - t_log)
            status = f"epoch {step / steps_per_epoch:.2f}, loss {loss_value:.3f}, {img_s:.0f} img/s"
            progress("training", step, expected_steps, status)
        if d.is_main and step % cfg.log_every == 0:
            _append_jsonl(
                metrics_file,
                {
                    "step": step,
                    "epoch": step / steps_per_epoch,
                    "loss": loss_value,
                    "lr": lr,
                    "img_per_s": seen_log / max(1e-9, time.monotonic() - t_log),
                    "elapsed_s": time.monotonic() - t_start,
                },
            )
            t_log, seen_log = time.monotonic(), 0
        if d.is_main and step % cfg.checkpoint_every == 0:
            save()
        if cfg.stop_after_steps and step >= cfg.stop_after_steps:
            stopped = "stop_after_steps"
            break
        if step % steps_per_epoch == 0:
            last_record = end_epoch() or last_record
            health = EpochHealth()
    if health.batches:  # a run that stopped inside an epoch reports the part it ran
        last_record = end_epoch() or last_record
    del loader  # stops persistent workers before the export
    if d.is_main:
        save()
    return _LoopEnd(step, stopped, loss_value, last_record, time.monotonic() - t_start)


def _export(run: _Run, end: _LoopEnd) -> EncoderSpec | None:
    """encoder.safetensors + encoder.json and loss.png (rank 0); none for a run stopped by stop_after_steps."""
    if end.stopped == "stop_after_steps":
        return None
    cfg, mcfg = run.cfg, run.mcfg
    spec = export_encoder(
        run.model.encoder_q.backbone.state_dict(),
        None,
        EncoderSpec(
            arch=mcfg.arch,
            stem=mcfg.stem,
            width=mcfg.width,
            embedding_dim=run.model.encoder_q.head[0].in_features,
            embed_size=cfg.embed_size,
            gem_p=mcfg.gem_p,
            **PRESET_PREPROCESSING.get(cfg.preset, {}),
            trained={
                "preset": cfg.preset,
                "steps": end.step,
                "train_crop_size": cfg.crop_size,
                "images": run.n,
                "queue_size": mcfg.queue_size,
            },
        ),
        run.out,
    )
    plot_loss(run.loss_history, run.out / "loss.png")
    return spec


def _dataset_and_views(cfg: TrainConfig, cache: DecodeCache, device: torch.device) -> tuple[CachedRows, ViewsOf]:
    """The loader's dataset and what turns its batches into views on the device: PIL views made in the
    workers (`augment_on` "workers"), or uint8 squares the device augments (moco.augment.batch)."""
    if cfg.augment_on == "device":
        crops = BatchTwoCrops(
            batch_recipe(cfg.preset, cfg.crop_size, cfg.crop_min_scale or None, cfg.colour_strength),
            batch_recipe(cfg.preset, cfg.local_side, LOCAL_MIN_SCALE, cfg.colour_strength, cfg.local_max_scale),
            cfg.local_crops,
        )
        return SquareDataset(cache.array, cfg.seed), device_views(crops, device)
    two_crops = TwoCropsTransform(
        make_preset(cfg.preset, cfg.crop_size, cfg.crop_min_scale or None, cfg.colour_strength),
        make_preset(cfg.preset, cfg.local_side, LOCAL_MIN_SCALE, cfg.colour_strength, cfg.local_max_scale),
        cfg.local_crops,
        cfg.model.key_views,
    )
    return PairDataset(cache.array, two_crops, cfg.seed), worker_views(device)


def _verdict(
    record: dict[str, Any] | None,
    mcfg: MoCoConfig,
    validator: KnnValidator | None,
    device: torch.device,
    seed: int,
    model: MoCo,
) -> Verdict:
    """The run's verdict; with --val, the trained model and a random-init network of the same configuration are
    scored on the held-out queries: first-page precision query by query (the verdict's measure) and kNN top-1."""
    if validator is None or record is None:
        return training_verdict(record, mcfg.queue_size)
    trained = validator.scores(model, device)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        random = validator.scores(MoCo(mcfg).to(device), device)
    page = FirstPage(trained.first_page, random.first_page, FIRST_PAGE)
    n = len(validator.test_idx)
    return training_verdict(record, mcfg.queue_size, trained.knn_top1, random.knn_top1, n, page)


def _end_epoch(
    health: EpochHealth,
    step: int,
    steps_per_epoch: int,
    dim: int,
    validator: KnnValidator | None,
    model: MoCo,
    device: torch.device,
    metrics_file: Path,
    d: Dist,
) -> dict[str, Any] | None:
    """The label-free health record of the epoch just ended (and kNN top-1 with --val), on rank 0; returns it."""
    if not d.is_main or not health.batches:
        return None
    record = {"epoch_end": step / steps_per_epoch, "step": step, **health.summary(dim)}
    if validator is not None:
        scores = validator.scores(model, device)
        record["knn_top1"], record["precision_at_10"] = scores.knn_top1, scores.precision_at_10
    if record.get("collapse_warning"):
        logger.warning("embeddings look collapsed (mean dimension std %.4f)", record["dim_std"])
    _append_jsonl(metrics_file, record)
    logger.info("epoch %s", json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in record.items()}))
    return record


def _build_cache(paths: list[Path], side: int, out: Path, d: Dist, progress: Progress | None) -> DecodeCache:
    """Rank 0 decodes; the other ranks wait and then read the finished cache."""
    cache_dir = out / "cache"
    if d.is_main:
        decoded = 0

        def one_more(n: int) -> None:
            nonlocal decoded
            decoded += n
            report(progress, "decoding", decoded, len(paths))

        cache = DecodeCache.build(paths, side, cache_dir, progress=one_more)
    barrier(d)
    if not d.is_main:
        cache = DecodeCache.build(paths, side, cache_dir)
    return cache


def _budget_total(step: int, progress_frac: float) -> int:
    """Steps a time-budgeted run will reach at its current pace (`progress_frac` of the budget used)."""
    return max(step + 1, round(step / progress_frac))


def _keep_metrics_until(path: Path, step: int) -> None:
    """metrics.jsonl describes this run only: a fresh start (step 0) drops an earlier run's records, a resume
    drops those written after the checkpoint it continues from (they will be written again)."""
    if not path.exists():
        return
    if step == 0:
        path.unlink()
        return
    lines = path.read_text().splitlines()
    kept = [line for line in lines if _record_step(line) <= step]
    if len(kept) != len(lines):
        atomic_write_bytes(path, lambda f: f.write("".join(line + "\n" for line in kept).encode()))


def _record_step(line: str) -> float:
    """The step of one metrics.jsonl line; a line cut short by a killed writer counts as past every step."""
    try:
        return float(json.loads(line).get("step", 0))
    except (json.JSONDecodeError, AttributeError):
        return math.inf


def _append_jsonl(path: Path, record: dict[str, Any]) -> None:
    with open(path, "a") as f:
        f.write(json.dumps(record) + "\n")


def _save(
    out: Path,
    cfg: TrainConfig,
    mcfg: MoCoConfig,
    model: MoCo,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    step: int,
    elapsed_s: float,
    loss_history: list[list[float]],
    image_files: list[str],
) -> None:
    save_checkpoint(
        out / "checkpoint.pt",
        {
            "config": cfg.to_dict(),
            "model_config": dataclasses.asdict(mcfg),
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "scaler": scaler.state_dict(),
            "step": step,
            "elapsed_s": elapsed_s,
            "loss_history": loss_history,
            "torch_rng": torch.get_rng_state(),
            "image_files": image_files,  # relative to config["images"]: the source image of each queue id
        },
    )


# settings that change what a step computes: a checkpoint made with others cannot be continued
_MUST_MATCH = (
    "crop_size",
    "batch_size",
    "preset",
    "crop_min_scale",
    "colour_strength",
    "local_crops",
    "local_size",
    "local_max_scale",
    "augment_on",  # the two paths draw different views
    "seed",
    "epochs",
    "lr",
    "weight_decay",
)
_MUST_MATCH += ("init", "init_head_steps", "init_lr_scale")  # --init also splits the optimizer's groups
_MUST_MATCH += ("lr_schedule", "progressive_from")  # a resumed run keeps its schedule of rates and view sizes


def _resume(
    cfg: TrainConfig,
    mcfg: MoCoConfig,
    model: MoCo,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    out: Path,
) -> dict[str, Any] | None:
    path = out / "checkpoint.pt"
    if not path.exists():
        return None
    state = load_checkpoint(path)
    old = TrainConfig.from_dict({"augment_on": "workers", **state["config"]})  # written before there was a choice
    old_m = MoCoConfig(**state["model_config"])
    diffs = [
        f"{k} was {getattr(old, k)}, now {getattr(cfg, k)}" for k in _MUST_MATCH if getattr(old, k) != getattr(cfg, k)
    ]
    model_keys = ("arch", "stem", "width", "dim", "queue_size", "momentum", "temperature", "symmetric", "patch_queries")
    diffs += [
        f"model.{k} was {getattr(old_m, k)}, now {getattr(mcfg, k)}"
        for k in (*model_keys, "key_views")
        if getattr(old_m, k) != getattr(mcfg, k)
    ]
    if diffs:
        raise InputError(
            f"{path}: was trained with other settings ({'; '.join(diffs)}); "
            "use --no-resume to start over or another --out"
        )
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    scaler.load_state_dict(state["scaler"])
    torch.set_rng_state(state["torch_rng"])
    return state
