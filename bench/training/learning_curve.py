"""Learning curve of `retrieval train` on CPU: what a searcher sees on clip art (precision@10: the share of a query's
first 10 results in its category) beside kNN top-1, MAP@R and recall@10, and emoji cross-style recall@10, after each
time budget, for named settings, beside a random-init network of the same architecture and input size.

Data (`../shared/datasets/build.py`): the training folder is every clip-art image plus the emoji gallery
(Noto) renditions, as one unlabelled folder of links (labels are never used in training). Scoring:
- clip-art: every `--clip-every`th image (4th by default, sorted), every 5th of those per category held out as a
  query (moco.measure.validation.holdout_split, 20%) and searched among the rest: precision@10, MAP@R and recall@10
  (retrieval.evaluate.metrics) and weighted kNN top-1 (moco.measure.knn, k 20, T 0.07); `p10_noise` is two paired
  standard errors of a row's precision@10 minus its random init's (moco.measure.verdict.FirstPage);
- label-free signals beside them, to find one that tracks precision@10 without labels: the last epoch's pretext top-1
  and effective rank before each point (metrics.jsonl), and `neighbour_agreement`, the mean share of the held-out
  queries' 10 nearest images that the run's previous point also had among its 10 nearest;
- emoji: every `--emoji-every`th pair of `pairs.json` (3rd by default), its Twemoji query searched among the
  Noto gallery images of those pairs; a query hits when its paired gallery
  image is among its 10 nearest by cosine (what a flat index returns); recall@10 = hits / pairs.
Embeddings are exactly `retrieval.embed.Embedder`'s: the exported encoder's preprocessing (shorter side to its
image size, centre crop), GeM, flip-averaged, L2-normalised. A random-init encoder of the same stem, width and
input size is scored the same way (`moco.export.save_random_encoder`).

Each budget's runs train CONCURRENTLY, one process per setting with torch.set_num_threads(1) and workers 0,
so they share whatever load the machine has; each records its steps and img/s. `fit` counts its budget from
after the decode cache is built (built once here, before the clock).

    python -m bench.training.learning_curve --budgets 5,10,20 --settings '{"old": {...}, "new": {}}' [--tag NAME]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from bench.kit.machine import machine_info
from moco.measure.metrics_log import read_metrics

BENCH = Path(__file__).resolve().parents[1]
ROOT = BENCH.parent

DATA = Path.home() / ".cache" / "retrieval-datasets"
OLD_DEFAULTS = {  # `retrieval train`'s CPU defaults before issue 14
    "stem": "imagenet",
    "width": 64,
    "crop_size": 64,
    "batch_size": 64,
    "lr": 0.06,
    "queue_size": 4096,
    "momentum": 0.99,
    "temperature": 0.2,
    "symmetric": False,
    "crop_min_scale": 0.2,
}


def training_folder(data: Path, work: Path, every: int = 1) -> Path:
    """work/train: a link to every clip-art image and every emoji gallery image (one unlabelled folder);
    `every` > 1 keeps every Nth of them (work/train-everyN)."""
    folder = work / ("train" if every == 1 else f"train-every{every}")
    if folder.exists():
        return folder
    tmp = folder.with_suffix(".tmp")
    tmp.mkdir(parents=True, exist_ok=True)
    for src_root, prefix in ((data / "clipart", "clipart"), (data / "emoji" / "gallery", "emoji")):
        for p in sorted(src_root.glob("*/*.png"))[::every]:
            (tmp / f"{prefix}__{p.parent.name}__{p.name}").symlink_to(p)
    tmp.rename(folder)
    return folder


class Snapshots:
    """A progress callback that keeps the run's latest checkpoint when the training clock passes each of
    `minutes`, or the step count passes each of `steps` (so one long run also gives the curve's shorter points): a
    hard link to the file (checkpoints are replaced by rename, so the linked file never changes), a copy where links
    are not possible. It is the checkpoint written last, at most `checkpoint_every` steps before the mark; its step
    is read when it is exported, outside the training clock. Each records the process's CPU seconds so far
    (`cpu_s`: one torch thread, so CPU time is the work done, whatever else the machine runs)."""

    def __init__(self, run_dir: Path, minutes: list[float], steps: list[int] | None = None) -> None:
        self.run_dir, self.todo, self.taken = run_dir, sorted(minutes), []
        self.steps = sorted(steps or [])
        self.t0: float | None = None
        self.cpu0 = time.process_time()

    def __call__(self, stage: str, done: int, total: int | None, status: dict | None = None) -> None:
        if stage != "training":
            return
        now = time.monotonic()
        self.t0 = self.t0 if self.t0 is not None else now
        while self.todo and now - self.t0 >= self.todo[0] * 60:
            minute = self.todo.pop(0)
            self._take(f"{minute:g}min", {"minute": minute})
        while self.steps and done > self.steps[0]:  # past the mark: that step's checkpoint is written
            mark = self.steps.pop(0)
            self._take(f"step{mark}", {"minute": None, "at_step": mark})

    def _take(self, name: str, rec: dict) -> None:
        src = self.run_dir / "checkpoint.pt"
        if not src.exists():
            return
        dst = self.run_dir / f"snapshot-{name}.pt"
        try:
            os.link(src, dst)
        except OSError:
            shutil.copyfile(src, dst)
        self.taken.append({**rec, "name": name, "file": str(dst), "cpu_s": time.process_time() - self.cpu0})


def export_snapshot(ckpt: Path, final_encoder: Path, out_dir: Path, encoder: str = "q") -> int:
    """The query backbone (`encoder` "q"; "k": the momentum key encoder's) of a snapshot checkpoint, exported
    with the final encoder's spec (its step noted); returns that step."""
    from moco.export import EncoderSpec, export_encoder, read_spec

    state = torch.load(ckpt, map_location="cpu", weights_only=True)
    prefix = f"encoder_{encoder}.backbone."
    backbone = {k[len(prefix) :]: v for k, v in state["model"].items() if k.startswith(prefix)}
    spec = dataclasses.asdict(read_spec(final_encoder))
    spec["trained"] = {**(spec.get("trained") or {}), "steps": state["step"]}
    spec.pop("sha256", None)
    export_encoder(backbone, None, EncoderSpec(**spec), out_dir)
    return int(state["step"])


def child_train(run_dir: Path, images: Path, budget_min: float, overrides: dict) -> dict:
    import moco.devices
    from moco.config import TrainConfig
    from moco.train import fit

    over = dict(overrides)
    snaps = Snapshots(run_dir, over.pop("snapshot_minutes", []), over.pop("snapshot_steps", []))
    if snaps.todo or snaps.steps:
        over.setdefault("checkpoint_every", 25 if snaps.steps else 50)
    if over.pop("force_cpu_bf16", False):  # bf16 autocast on this CPU whatever its kind (the fp32/bf16 check)
        moco.devices.CPU_BF16_TRAIN = (moco.devices.cpu_bf16_kind(),)
    fixed = {"time_budget_min": budget_min, "device": "cpu", "workers": 0, "resume": False}
    cfg = TrainConfig.for_device("cpu", str(images), str(run_dir), {"epochs": 10_000, **over, **fixed})
    t = time.monotonic()
    r = fit(cfg, snaps if snaps.todo or snaps.steps else None)
    cpu_s = time.process_time() - snaps.cpu0
    rows = read_metrics(run_dir)
    health = [row for row in rows if "epoch_end" in row]
    seconds = budget_min * 60 if r.stopped == "time budget" else max(row.get("elapsed_s", 1e-9) for row in rows)
    return {
        "steps": r.steps,
        "epochs": r.epochs,
        "pairs": r.steps * cfg.batch_size,
        "img_per_s": r.steps * cfg.batch_size / max(1e-9, seconds),
        "loss": r.loss,
        "stopped": r.stopped,
        "wall_s": time.monotonic() - t,
        "cpu_s": cpu_s,
        "queue_size": r.model_config.queue_size,
        "bn_splits": r.model_config.bn_splits,
        "last_health": health[-1] if health else None,
        "verdict": dataclasses.asdict(r.verdict) if r.verdict is not None else None,
        "loss_curve": [[row["step"], row["loss"]] for row in rows if "loss" in row],
        "snapshots": snaps.taken,
    }


class Scorer:
    """Clip-art first-page precision, kNN top-1, MAP@R, recall@10 and emoji recall@10 of an encoder folder; decoded
    images are kept per preprocessing."""

    def __init__(self, data: Path, clip_every: int, emoji_every: int) -> None:
        from moco.measure.validation import holdout_split, labelled_images

        paths, labels, _ = labelled_images(data / "clipart")
        keep = [i for i in range(len(paths)) if i % clip_every == 0]
        self.clip_paths = [paths[i] for i in keep]
        self.clip_y = torch.tensor([labels[i] for i in keep])
        self.train_idx, self.test_idx = holdout_split(self.clip_y.tolist())
        emoji = data / "emoji"
        self.pairs = json.loads((emoji / "pairs.json").read_text())[::emoji_every]
        self.gallery = sorted({g for _, g in self.pairs})
        self.queries = sorted({q for q, _ in self.pairs})
        self.emoji = emoji
        self._x: dict[tuple[int, str], torch.Tensor] = {}

    def _inputs(self, emb, which: str) -> torch.Tensor:  # noqa: ANN001 (retrieval.embed.Embedder)
        from concurrent.futures import ThreadPoolExecutor

        from plumbing.images import load_image

        key = (emb.spec.preprocess_args, which)  # encoders that preprocess differently never share inputs
        if key not in self._x:
            paths = {
                "clip": self.clip_paths,
                "gallery": [self.emoji / p for p in self.gallery],
                "queries": [self.emoji / p for p in self.queries],
            }[which]
            with ThreadPoolExecutor(4) as pool:
                xs = list(pool.map(lambda p: emb.preprocess(load_image(p, min_side=emb.min_side)), paths))
            self._x[key] = torch.stack(xs)
        return self._x[key]

    def _embed(self, emb, which: str) -> torch.Tensor:  # noqa: ANN001
        x = self._inputs(emb, which)
        return torch.from_numpy(np.concatenate([emb.encode_tensors(x[i : i + 256]) for i in range(0, len(x), 256)]))

    def score(self, encoder_dir: Path, emoji: bool = True) -> dict:
        """The row's figures; "_first_page" (each query's precision@10) and "_neighbours" (each query's 10 nearest
        gallery rows) are for pairing with other rows and are dropped before the result is written."""
        from moco.measure.knn import weighted_knn_top1
        from retrieval.embed import Embedder

        t = time.monotonic()
        emb = Embedder.load(encoder_dir, "cpu")
        self._inputs(emb, "clip")  # decoding is not the encoder's speed
        t_embed = time.monotonic()
        z = self._embed(emb, "clip")
        embed_s = time.monotonic() - t_embed
        gallery, queries = z[self.train_idx], z[self.test_idx]
        knn = weighted_knn_top1(gallery, self.clip_y[self.train_idx], queries, self.clip_y[self.test_idx])
        out = {"knn_top1": knn, **self._ranked(gallery, queries), "embed_img_per_s": len(z) / max(1e-9, embed_s)}
        if not emoji:
            return {**out, "emoji_recall_at_10": float("nan"), "score_s": time.monotonic() - t}
        g, q = self._embed(emb, "gallery"), self._embed(emb, "queries")
        top = (q @ g.T).topk(10, dim=1).indices  # (Q, 10)
        g_of, q_of = {p: i for i, p in enumerate(self.gallery)}, {p: i for i, p in enumerate(self.queries)}
        hits = sum(g_of[gp] in set(top[q_of[qp]].tolist()) for qp, gp in self.pairs)
        return {**out, "emoji_recall_at_10": hits / len(self.pairs), "score_s": time.monotonic() - t}

    def _ranked(self, gallery: torch.Tensor, queries: torch.Tensor) -> dict:
        """precision@10, MAP@R and recall@10 of the held-out queries among the gallery (retrieval.evaluate.metrics)."""
        from retrieval.evaluate import metrics

        gy, qy = self.clip_y[self.train_idx].numpy(), self.clip_y[self.test_idx].numpy()
        counts = np.bincount(gy, minlength=int(qy.max()) + 1)
        depth = max(10, int(counts.max()))
        _, I = metrics.exact_neighbours(gallery.numpy(), queries.numpy(), depth)  # noqa: E741  (Q, depth)
        hits = gy[I] == qy[:, None]  # (Q, depth)
        ranks = metrics.ranks_from_hits(hits, counts[qy])
        first_page = metrics.precision_at_k(hits, 10)
        return {
            "precision_at_10": float(first_page.mean()),
            "map_at_r": float(metrics.map_at_r(ranks).mean()),
            "recall_at_10": float(metrics.recall_at_k(ranks, 10).mean()),
            "_first_page": first_page.tolist(),
            "_neighbours": I[:, :10],
        }


def score_random_inits(scorer: Scorer, settings: dict, work: Path, emoji: bool) -> dict[str, dict]:
    """A random-init encoder per (stem, width, input size) of the settings, scored like the trained ones: with
    the preprocessing `retrieval train` records for its preset (a squashed picture, not a centre crop)."""
    from moco.export import save_random_encoder
    from moco.preprocess import PRESET_PREPROCESSING

    out = {}
    prep = PRESET_PREPROCESSING["moco-v2"]
    for stem, width, size in sorted({arch_of(s) for s in settings.values()}):
        rnd = work / f"random-{stem}-{width}-{size}"
        save_random_encoder(rnd, embed_size=size, dim=0, preprocessing=prep, stem=stem, width=width)
        name = f"{stem}/{width}/{size}px"
        out[name] = scorer.score(rnd, emoji)
        print(json.dumps({"random": name, **public(out[name])}), file=sys.stderr)
    return out


def spawn(run_dir: Path, images: Path, budget: float, overrides: dict) -> subprocess.Popen:
    cmd = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--child",
        json.dumps([str(run_dir), str(images), budget, overrides]),
    ]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def arch_of(settings: dict) -> tuple[str, int, int]:
    """(stem, width, input size of the exported encoder): the random init to compare with."""
    cfg = run_of(settings)
    return cfg.model.stem, cfg.model.width, cfg.embed_size


def train_size_of(settings: dict) -> int:
    return run_of(settings).crop_size


def run_of(settings: dict):  # noqa: ANN201 (moco.config.TrainConfig, imported late)
    """The CPU run a setting makes: the product's recipe (TrainConfig.for_device) with the setting's overrides."""
    from moco.config import TrainConfig

    known = {k: v for k, v in settings.items() if k not in ("snapshot_minutes", "force_cpu_bf16")}
    return TrainConfig.for_device("cpu", "", "", known)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument(
        "--budgets", default="5,10,20", help="minutes, comma-separated; each budget is its own runs (0: by epochs)"
    )
    ap.add_argument("--settings", default="", help="JSON {name: overrides}; default: the old and the new CPU defaults")
    ap.add_argument("--sequential-budgets", action="store_true", help="one budget after another (default: all at once)")
    ap.add_argument("--work", type=Path, default=None, help="keep runs here (default: a temp dir)")
    ap.add_argument("--tag", default="learning_curve")
    ap.add_argument("--no-emoji", action="store_true", help="clip-art kNN only (the sweep)")
    ap.add_argument("--train-every", type=int, default=1, help="train on every Nth image (equal-step checks)")
    ap.add_argument("--clip-every", type=int, default=4, help="score every Nth clip-art image of each category")
    ap.add_argument("--emoji-every", type=int, default=3, help="score every Nth emoji pair (gallery: their images)")
    ap.add_argument("--score-threads", type=int, default=1, help="torch threads while scoring (1: best under load)")
    ap.add_argument(
        "--snapshots",
        default="",
        help="minutes, comma-separated: also score each run's checkpoint at these points of its clock (one long run"
        " gives the shorter points; its lr schedule spans the whole budget)",
    )
    ap.add_argument(
        "--snapshot-steps",
        default="",
        help="steps, comma-separated: also score each run's checkpoint at these steps (with --budgets 0 and an"
        " 'epochs' setting: equal work whatever the machine's load; each point records its CPU seconds)",
    )
    ap.add_argument(
        "--key-encoder",
        action="store_true",
        help="also score the momentum key encoder of every scored checkpoint (rows named 'SETTING (key encoder)')",
    )
    ap.add_argument(
        "--rescore",
        action="store_true",
        help="score the runs already in --work (same settings and budgets) instead of training them",
    )
    ap.add_argument("--child", default="", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        torch.set_num_threads(1)
        run_dir, images, budget, overrides = json.loads(a.child)
        rec = child_train(Path(run_dir), Path(images), budget, overrides)
        (Path(run_dir) / "child_result.json").write_text(json.dumps(rec))  # for --rescore
        print(json.dumps(rec))
        return

    from moco.data import CACHE_SCALE, DecodeCache
    from plumbing.images import list_images

    new: dict = {}  # the product's CPU run as it is (TrainConfig.for_device)
    settings = json.loads(a.settings) if a.settings else {"old defaults": OLD_DEFAULTS, "new defaults": new}
    budgets = [float(b) for b in a.budgets.split(",")]
    snapshot_minutes = [float(m) for m in a.snapshots.split(",") if m]
    snapshot_steps = [int(m) for m in a.snapshot_steps.split(",") if m]
    work = a.work or Path(tempfile.mkdtemp(prefix="bench-curve-"))
    work.mkdir(parents=True, exist_ok=True)
    start = machine_info()
    from moco.devices import cpu_bf16_kind

    t0 = time.monotonic()
    images = training_folder(a.data, work, a.train_every)
    paths = list_images(images)
    sizes = {train_size_of(s) for s in settings.values()}
    for size in sizes:  # one decode cache per size, shared by every run (fit reuses a matching cache)
        DecodeCache.build(paths, round(size * CACHE_SCALE), work / "cache")
    jobs = [(b, name) for b in budgets for name in settings]
    rounds = [[j for j in jobs if j[0] == b] for b in budgets] if a.sequential_budgets else [jobs]
    torch.set_num_threads(a.score_threads)
    scorer = Scorer(a.data, a.clip_every, a.emoji_every)
    rows: list[dict] = []
    randoms: dict[str, dict] = {}
    for rnd in rounds:
        procs = []
        for b, name in rnd:
            run = work / f"{name.replace(' ', '_')}-{b:g}min"
            run.mkdir(parents=True, exist_ok=True)
            if not (run / "cache").exists():
                (run / "cache").symlink_to(work / "cache")
            snap = [m for m in snapshot_minutes if m < b]
            over = {**settings[name], "snapshot_minutes": snap} if snap else dict(settings[name])
            if snapshot_steps:
                over["snapshot_steps"] = snapshot_steps
            procs.append((b, name, run, None if a.rescore else spawn(run, images, b, over)))
        # shortest budgets first: each run is scored as soon as it ends, while the longer ones still train
        for b, name, run, p in sorted(procs, key=lambda t: t[0]):
            if p is None:  # --rescore: the run trained before; its child's record, or one rebuilt from its files
                child = finished_run(run, run_of(settings[name]).batch_size)
            else:
                out, err = p.communicate()
                if p.returncode != 0:
                    raise SystemExit(f"{name} {b} min failed:\n{err[-3000:]}")
                child = json.loads(out.strip().splitlines()[-1])
            rec = {"setting": name, "budget_min": b, "overrides": settings[name]} | child
            rec["run"] = str(run)
            scored: list[tuple[dict, Path]] = []  # (row, its checkpoint) for the key encoder's rows
            for snap in rec.pop("snapshots", []):  # the shorter points of this run's clock
                enc = run / f"encoder-{snap['name']}"
                step = export_snapshot(Path(snap["file"]), run, enc)
                minute = snap["minute"] if snap["minute"] is not None else b * step / max(1, rec["steps"])
                srec = {**rec, "budget_min": minute, "steps": step, "snapshot_of_min": b, "cpu_s": snap["cpu_s"]}
                srec["pairs"] = step * srec["pairs"] // max(1, rec["steps"])
                if rec.get("epochs"):  # the checkpoint's own passes over the folder, not the run's end
                    srec["epochs"] = rec["epochs"] * step / max(1, rec["steps"])
                seconds = snap["minute"] * 60 if snap["minute"] else snap["cpu_s"]
                if seconds:  # a rebuilt record (--rescore of an older run) keeps the run's own img/s
                    srec["img_per_s"] = srec["pairs"] / seconds
                srec.pop("loss_curve", None)
                srec["last_health"] = health_at(run, step)
                srec.update(scorer.score(enc, not a.no_emoji))
                print(json.dumps(public(srec)), file=sys.stderr, flush=True)
                rows.append(srec)
                scored.append((srec, Path(snap["file"])))
            rec.update(scorer.score(run, not a.no_emoji))
            print(json.dumps(public({k: v for k, v in rec.items() if k != "loss_curve"})), file=sys.stderr, flush=True)
            rows.append(rec)
            scored.append((rec, run / "checkpoint.pt"))
            for row, ckpt in scored if a.key_encoder else []:
                enc = run / f"key-encoder-{row['budget_min']:g}min"
                export_snapshot(ckpt, run, enc, "k")
                krec = {k: v for k, v in row.items() if k != "loss_curve"} | {"setting": f"{name} (key encoder)"}
                krec.update(scorer.score(enc, not a.no_emoji))
                print(json.dumps(public(krec)), file=sys.stderr, flush=True)
                rows.append(krec)
            if not randoms:  # random init of each architecture, scored while the longer budgets train
                randoms = score_random_inits(scorer, settings, work, not a.no_emoji)
    compare_with_random(rows, randoms)
    neighbour_agreement(rows)
    rows = [public(r) for r in rows]
    randoms = {k: public(v) for k, v in randoms.items()}
    result = {
        "benchmark": "learning_curve",
        "command": "python " + " ".join(["bench/training/learning_curve.py", *sys.argv[1:]]),
        "machine": start,
        "cpu_bf16": cpu_bf16_kind() or "none",
        "load_avg_at_end": list(os.getloadavg()),
        "total_s": time.monotonic() - t0,
        "data": {
            "train_images": len(paths),
            "clipart_scored": len(scorer.clip_paths),
            "clip_every": a.clip_every,
            "emoji_every": a.emoji_every,
            "emoji_gallery": len(scorer.gallery),
            "knn_queries": len(scorer.test_idx),
            "emoji_pairs": len(scorer.pairs),
        },
        "settings": settings,
        "random_init": randoms,
        "rows": rows,
    }
    out = BENCH / "results" / f"{a.tag}.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    from bench.kit.learning_curve_plot import table

    print(table(result))


def finished_run(run: Path, batch: int) -> dict:
    """A trained run's child record: child_result.json, or (runs from before it was written) one rebuilt from
    metrics.jsonl and the snapshot files, without CPU seconds."""
    if (run / "child_result.json").exists():
        return json.loads((run / "child_result.json").read_text())
    rows = read_metrics(run)
    steps = max(r["step"] for r in rows if "step" in r)
    epoch = [r for r in rows if "epoch_end" in r]
    wall = max(r.get("elapsed_s", 0.0) for r in rows)
    snaps = sorted(run.glob("snapshot-step*.pt"), key=lambda f: int(f.stem.split("step")[1]))
    return {
        "steps": steps,
        "epochs": epoch[-1]["epoch_end"] if epoch else None,
        "pairs": steps * batch,
        "img_per_s": steps * batch / max(1e-9, wall),
        "wall_s": wall,
        "last_health": epoch[-1] if epoch else None,
        "snapshots": [
            {"minute": None, "at_step": int(f.stem.split("step")[1]), "name": f.stem[len("snapshot-") :]}
            | {"file": str(f), "cpu_s": None}
            for f in snaps
        ],
    }


def public(rec: dict) -> dict:
    """A row without the per-query lists kept for pairing ("_first_page", "_neighbours")."""
    return {k: v for k, v in rec.items() if not k.startswith("_")}


def health_at(run: Path, step: int) -> dict | None:
    """The run's last label-free health record (metrics.jsonl, one per epoch) at or before `step`."""
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    before = [r for r in rows if "epoch_end" in r and r["step"] <= step]
    return before[-1] if before else None


def compare_with_random(rows: list[dict], randoms: dict[str, dict]) -> None:
    """Each row's differences from the random init of its architecture; p10_noise: two paired standard errors of
    the precision@10 difference (the same held-out queries answered by both networks)."""
    from moco.measure.verdict import FirstPage

    for rec in rows:
        stem, width, size = arch_of(rec["overrides"])
        base = randoms[f"{stem}/{width}/{size}px"]
        rec["random_init"] = f"{stem}/{width}/{size}px"
        rec["knn_minus_random"] = rec["knn_top1"] - base["knn_top1"]
        rec["emoji_minus_random"] = rec["emoji_recall_at_10"] - base["emoji_recall_at_10"]
        rec["p10_minus_random"] = rec["precision_at_10"] - base["precision_at_10"]
        rec["map_at_r_minus_random"] = rec["map_at_r"] - base["map_at_r"]
        rec["p10_noise"] = FirstPage(tuple(rec["_first_page"]), tuple(base["_first_page"])).noise


def neighbour_agreement(rows: list[dict]) -> None:
    """Label-free: for each row after the first of a run (a setting's points, shortest budget first), the mean share
    of each held-out query's 10 nearest gallery images that the run's previous point also had among its 10."""
    last: dict[tuple[str, str], np.ndarray] = {}
    for rec in sorted(rows, key=lambda r: (r["setting"], r["run"], r["steps"])):
        key = (rec["setting"], rec["run"])
        now = rec["_neighbours"]
        if key in last:
            prev = last[key]
            rec["neighbour_agreement"] = float(
                np.mean([len(set(a.tolist()) & set(b.tolist())) / a.size for a, b in zip(now, prev, strict=True)])
            )
        last[key] = now


if __name__ == "__main__":
    main()
