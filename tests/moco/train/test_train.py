"""moco.train.fit end to end on tiny folders: the loss falls, the time budget, bad files, the decode cache,
K sized from the data, metrics/health/loss.png and --val kNN top-1."""

from __future__ import annotations

import csv
import math
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import moco.data
import moco.train
from moco.checkpoint import load_checkpoint
from moco.config import MoCoConfig, TrainConfig
from moco.data import CACHE_SCALE, DecodeCache, _decode_square
from moco.distributed import Dist
from moco.export import load_encoder
from moco.measure.health import EpochHealth
from moco.measure.metrics_log import epoch_records, read_metrics, step_records
from moco.measure.validation import KnnValidator
from moco.train import _budget_total, fit, learning_rate, resolve_model_config
from plumbing.errors import InputError
from plumbing.images import list_images
from tests.moco.conftest import BAD_FILES, BATCH_LIGHT, N_LIGHT, counting_decoder
from tests.moco.tiny import light_views, make_colour_classes, make_images


def records(run_dir: Path) -> tuple[list[dict], list[dict]]:
    """(per-step records, per-epoch health records) of metrics.jsonl."""
    rows = read_metrics(run_dir)
    return step_records(rows), epoch_records(rows)


# ------------------------------------------------------------------------------------ learning at all


def test_loss_falls_over_thirty_steps(light_run):
    r = light_run.result
    assert (r.stopped, r.steps) == ("done", 30)
    steps, _ = records(r.out_dir)
    losses = [s["loss"] for s in steps]
    assert [s["step"] for s in steps] == list(range(1, 31))
    # the first step(s) score against the random initial queue, so their loss is not comparable
    warm = math.ceil(r.model_config.queue_size / light_run.cfg.batch_size)
    first, last = np.mean(losses[warm : warm + 5]), np.mean(losses[-5:])
    assert last < 0.75 * first, f"loss did not fall: first 5 {first:.3f}, last 5 {last:.3f}"
    assert last < math.log(1 + r.model_config.queue_size) - 0.5  # well below chance (uniform logits)
    assert np.mean(losses[:5]) > last
    # the checkpoint's history is the same curve
    ckpt = load_checkpoint(r.out_dir / "checkpoint.pt")
    assert [h[1] for h in ckpt["loss_history"]] == pytest.approx(losses)


# ---------------------------------------------------------------------------------------- time budget


def test_time_budget_ends_cleanly_with_the_schedule_fitted_to_time(budget_run):
    cfg, r = budget_run.cfg, budget_run.result
    budget_s = cfg.time_budget_min * 60
    assert r.stopped == "time budget"
    assert 0 < r.steps < cfg.epochs * (16 // cfg.batch_size)
    ckpt = load_checkpoint(r.out_dir / "checkpoint.pt")
    assert ckpt["step"] == r.steps
    assert ckpt["elapsed_s"] >= budget_s
    # exported, loadable, and it says what it was trained on
    module, spec = load_encoder(r.out_dir)
    assert spec == r.encoder and spec.trained["steps"] == r.steps
    assert (r.out_dir / "loss.png").is_file()

    steps, _ = records(r.out_dir)
    assert [s["step"] for s in steps] == list(range(1, r.steps + 1))
    base = learning_rate(cfg, 10**9, 0.0, 1)  # peak LR (warm-up done, progress 0)
    # each step's LR is at most the cosine at the time already spent before it (time-based progress)
    for prev, cur in zip(steps, steps[1:], strict=False):
        bound = base * 0.5 * (1 + math.cos(math.pi * min(1.0, prev["elapsed_s"] / budget_s)))
        assert cur["lr"] <= bound + 1e-12
    # ...so the schedule ends near zero, although only a tiny fraction of the 1000 epochs ran
    # (by steps, progress would be r.steps / 2000 and the LR still about `base`)
    assert r.steps >= 4
    assert steps[-1]["lr"] < 0.1 * base
    assert learning_rate(cfg, r.steps, 1.0, 1) == pytest.approx(0.0, abs=1e-12)


def test_a_time_budgeted_progress_bar_counts_the_steps_the_clock_allows():
    # 30 steps took a quarter of the budget: about 120 in all, whatever the epochs would allow
    assert _budget_total(30, 0.25) == 120
    assert _budget_total(30, 0.999) == 31  # never fewer than the next step


# ------------------------------------------------------------------------------------------ bad files


def test_bad_files_are_listed_with_a_reason_and_training_completes(light_run):
    r = light_run.result
    with open(r.out_dir / "bad_files.csv", newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["path", "reason"]
    listed = {Path(p).name: reason for p, reason in rows[1:]}
    assert set(listed) == set(BAD_FILES)
    for name, words in BAD_FILES.items():
        assert any(w in listed[name] for w in words), (name, listed[name])
    assert r.stopped == "done" and r.steps == 30 and r.encoder is not None
    assert r.encoder.trained["images"] == len(light_run.images) == N_LIGHT


# --------------------------------------------------------------------------------------- decode cache


def test_decode_cache_is_reused_on_the_second_run(light_run):
    cfg = light_run.cfg
    assert light_run.decodes == N_LIGHT + len(BAD_FILES)  # first run: every file once, bad ones included

    counter: list[int] = []
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(moco.train, "make_preset", lambda name, size, *_, **__: light_views(size))
        mp.setattr(moco.data, "_decode_square", counting_decoder(counter))
        again = fit(cfg)  # same command again: resumes (nothing left to do), re-exports
    assert counter == []
    assert again.steps == 30 and again.encoder is not None
    assert again.encoder.sha256 == light_run.result.encoder.sha256
    with open(cfg.out_dir / "bad_files.csv", newline="") as f:  # bad files remembered by the cache
        assert {Path(row[0]).name for row in list(csv.reader(f))[1:]} == set(BAD_FILES)

    # change one image: exactly that one is decoded again, and its cached pixels are the new ones
    side = round(cfg.crop_size * CACHE_SCALE)
    paths = list_images(Path(cfg.images))
    before = DecodeCache.build(paths, side, cfg.out_dir / "cache")
    changed = light_run.images[5]
    Image.fromarray(np.full((40, 40, 3), 77, np.uint8)).save(changed)
    st = changed.stat()
    os.utime(changed, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    counter.clear()
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(moco.data, "_decode_square", counting_decoder(counter))
        after = DecodeCache.build(paths, side, cfg.out_dir / "cache")
    assert len(counter) == 1
    i = after.paths.index(changed)
    np.testing.assert_array_equal(after.array[i], _decode_square(changed, side))
    others = [j for j in range(len(after)) if j != i]
    np.testing.assert_array_equal(np.asarray(after.array)[others], np.asarray(before.array)[others])


# ------------------------------------------------------------------------------------- K from the data


def test_queue_size_is_capped_at_images_minus_one_batch(light_run):
    r = light_run.result
    assert light_run.cfg.model.queue_size == 32
    K = N_LIGHT - BATCH_LIGHT
    assert r.model_config.queue_size == K
    state = load_checkpoint(r.out_dir / "checkpoint.pt")
    assert state["model"]["queue"].shape == (K, 16)
    assert state["model_config"]["queue_size"] == K

    cfg = TrainConfig(images="x", out="y", model=MoCoConfig(queue_size=4096), batch_size=64)
    assert resolve_model_config(cfg, 10_000, Dist()).queue_size == 4096
    assert resolve_model_config(cfg, 1_000, Dist()).queue_size == 1_000 - 64
    assert resolve_model_config(cfg, 1_000, Dist(rank=0, world=4)).queue_size == 1_000 - 4 * 64


# ------------------------------------------------------------------------------------------- outputs


def test_metrics_health_records_and_loss_plot(light_run):
    r = light_run.result
    steps, epochs = records(r.out_dir)
    assert len(steps) == 30
    assert all(s["lr"] > 0 and s["img_per_s"] > 0 for s in steps)
    assert [e["epoch_end"] for e in epochs] == [float(i) for i in range(1, light_run.cfg.epochs + 1)]
    for e in epochs:
        assert 0.0 <= e["pretext_top1"] <= 1.0
        assert e["dim_std"] > 0
        assert 1.0 <= e["effective_rank"] <= r.model_config.dim + 1e-6
        assert e["dim_std_healthy"] == pytest.approx(1 / math.sqrt(16))
    assert epochs[-1]["pretext_top1"] > 1 / (1 + r.model_config.queue_size)  # better than chance
    png = (r.out_dir / "loss.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(r.out_dir / "loss.png") as im:
        assert im.format == "PNG" and im.size[0] > 100


def test_epoch_health_against_hand_made_inputs():
    h = EpochHealth()
    logits = torch.tensor([[5.0, 1.0, 0.0], [0.0, 3.0, 1.0], [2.0, 1.0, 1.0], [0.0, 0.0, 9.0]])
    h.update(logits, torch.eye(4)[:, :4])  # 4 orthonormal queries
    s = h.summary(4)
    assert s["pretext_top1"] == 0.5  # rows 0 and 2 put the positive first
    # centred eye(4) has singular values (1, 1, 1, 0): effective rank exp(log 3) = 3
    assert s["effective_rank"] == pytest.approx(3.0, rel=1e-5)
    assert not s["collapse_warning"]
    collapsed = EpochHealth()
    collapsed.update(logits, torch.tensor([[1.0, 0.0, 0.0, 0.0]] * 4))
    c = collapsed.summary(4)
    assert c["dim_std"] == 0.0 and c["collapse_warning"]


# --------------------------------------------------------------------------------------------- --val


def test_val_knn_top1_is_reported_each_epoch_and_beats_chance(light_run):
    _, epochs = records(light_run.result.out_dir)
    assert all("knn_top1" in e for e in epochs)
    assert all(0.0 <= e["knn_top1"] <= 1.0 for e in epochs)
    assert epochs[-1]["knn_top1"] > 0.5  # two classes: chance is 0.5


def test_val_folder_too_small_to_hold_out_queries_is_refused(tmp_path):
    make_colour_classes(tmp_path / "val", per_class=3)  # every 5th image is a query: none here
    with pytest.raises(InputError, match="too few"):
        KnnValidator.load(tmp_path / "val", 32)
    make_images(tmp_path / "flat", 3)
    with pytest.raises(InputError, match="two class subfolders"):
        KnnValidator.load(tmp_path / "flat", 32)


def test_the_run_verdict_compares_its_val_knn_with_a_random_network_of_the_same_configuration(light_run):
    from moco.model import MoCo

    _, epochs = records(light_run.result.out_dir)
    v = light_run.result.verdict
    assert v is not None and v.knn_top1 == epochs[-1]["knn_top1"]
    validator = KnnValidator.load(Path(light_run.cfg.val), light_run.cfg.embed_size)
    torch.manual_seed(light_run.cfg.seed)
    random_net = MoCo(light_run.result.model_config)
    random_scores = validator.scores(random_net, torch.device("cpu"))
    assert v.random_knn_top1 == random_scores.knn_top1
    assert v.status in ("better", "same", "worse") and f"{v.knn_top1:.3f}" in v.line
    # it speaks in what a searcher sees: the first page of each held-out query, trained against random
    assert v.precision_at_10 == pytest.approx(epochs[-1]["precision_at_10"])
    assert v.random_precision_at_10 == pytest.approx(random_scores.precision_at_10)
    assert v.line.split(": ", 1)[1].startswith(f"of the first 10 results, {v.precision_at_10:.1%} share the query's")
