"""loss.png: the training loss curve (raw and smoothed)."""

from __future__ import annotations

from pathlib import Path

from plumbing.atomic import atomic_write_bytes


def plot_loss(history: list[list[float]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4), dpi=100)
    if history:
        steps = [h[0] for h in history]
        losses = [h[1] for h in history]
        ax.plot(steps, losses, alpha=0.3, label="loss")
        w = max(1, len(losses) // 50)
        windows = [losses[max(0, i - w + 1) : i + 1] for i in range(len(losses))]
        smooth = [sum(win) / len(win) for win in windows]
        ax.plot(steps, smooth, label=f"mean of {w}")
        ax.legend()
    ax.set_xlabel("step")
    ax.set_ylabel("InfoNCE loss")
    ax.set_title("MoCo training loss")
    fig.tight_layout()
    atomic_write_bytes(path, lambda f: fig.savefig(f, format="png"))
    plt.close(fig)
