"""The Index tab: what the index holds and how its encoder was made: root, counts, bad files with reasons,
encoder and training summary, index kind and measured recall, the loss curve and the health metrics."""

from __future__ import annotations

from typing import Any

import gradio as gr
from matplotlib.figure import Figure

from app.engine import Engine

HEALTH_COLUMNS = ("epoch_end", "step", "pretext_top1", "dim_std", "dim_std_healthy", "effective_rank", "knn_top1")


def summary(engine: Engine) -> str:
    m = engine.index.manifest
    spec = engine.embedder.spec
    params = ", ".join(f"{k}={v}" for k, v in m.params.items()) or "exact search"
    recall = "n/a" if m.recall_at_10 is None else f"{m.recall_at_10:.4f}"
    lines = [
        f"**Root:** `{m.root}`",
        f"**Files:** {m.n_ok} indexed, {m.n_bad} could not be read (below)",
        f"**Index:** {m.kind} ({params}); measured recall@10 {recall}; generation {m.generation}, created {m.created}",
        f"**Encoder:** `{m.encoder_path}` (sha256 {m.encoder_sha256[:16]}): {spec.arch}, {spec.layer} layer,"
        f" {spec.embedding_dim}-d embeddings of {spec.embed_size} px images ({spec.resize})",
    ]
    if spec.trained:
        lines.append("**Encoder provenance:** " + ", ".join(f"{k} {v}" for k, v in spec.trained.items()))
    d = engine.dictionary
    if d is None and engine.dictionary_off is not None:
        lines.append(f"**Training run:** its checkpoint is not used: {engine.dictionary_off}")
    elif d is None:
        lines.append("**Training run:** none (no checkpoint.pt beside the encoder: made without training here)")
    else:
        t = d.train
        lines.append(
            f"**Training run:** {t.images}, {d.step} steps of batch {t.batch_size} at {t.crop_size} px,"
            f" preset {t.preset}; K = {d.K}, m = {d.m:g}, T = {d.T:g}, lr {t.lr:g}"
        )
    return "  \n".join(lines)


def bad_files(engine: Engine) -> list[list[str]]:
    return [[b.path, b.error] for b in engine.index.bad]


def loss_curve(engine: Engine) -> Figure | None:
    """Every step's loss from the checkpoint, else the records of metrics.jsonl."""
    d = engine.dictionary
    points = [(s, v) for s, v in d.loss_history] if d is not None else []
    points = points or [(r["step"], r["loss"]) for r in engine.metrics() if "loss" in r and "step" in r]
    if not points:
        return None
    fig = Figure(figsize=(6.4, 3.0), dpi=100)
    ax = fig.add_subplot()
    ax.plot([p[0] for p in points], [p[1] for p in points], color="#3b6ea8")
    ax.set_xlabel("step")
    ax.set_ylabel("InfoNCE loss")
    ax.set_title("training loss")
    fig.tight_layout()
    return fig


def health(engine: Engine) -> list[list[Any]]:
    """One row per epoch: label-free health metrics (and kNN top-1 when the run had --val)."""
    rows = []
    for r in engine.metrics():
        if "epoch_end" in r:
            rows.append([_cell(r.get(c)) for c in HEALTH_COLUMNS])
    return rows


def _cell(v: Any) -> Any:
    return round(v, 4) if isinstance(v, float) else ("" if v is None else v)


def build(engine: Engine) -> None:
    gr.Markdown(summary(engine))
    gr.Dataframe(bad_files(engine), headers=["file", "reason"], label="files that could not be read", max_height=240)
    curve = loss_curve(engine)
    if curve is None:
        gr.Markdown("No training metrics (metrics.jsonl) next to this encoder.")
        return
    gr.Plot(curve, label="loss curve")
    gr.Markdown(
        "Health, per epoch: **pretext_top1** how often the query found its positive key among the 1 + K;"
        " **dim_std** the spread of the embeddings per dimension (near 0 means collapse; healthy is"
        " about dim_std_healthy); **effective_rank** how many dimensions carry information."
    )
    gr.Dataframe(health(engine), headers=list(HEALTH_COLUMNS), label="health metrics", max_height=300)
