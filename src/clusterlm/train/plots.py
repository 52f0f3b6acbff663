"""`plots/loss.png`: training and validation loss against the optimizer step."""

from __future__ import annotations

import io
from pathlib import Path

from clusterlm.fsio import atomic_write_bytes
from clusterlm.train.metrics import read_metrics


def plot_loss(metrics_path: str | Path, out_path: str | Path) -> Path | None:
    """Draw train (logged) and val loss vs step; None if there is nothing to plot."""
    records = read_metrics(metrics_path)
    train = [(r["step"], r["loss"]) for r in records if r.get("kind") == "train" and r.get("loss") is not None]
    val = [(r["step"], r["val_loss"]) for r in records if r.get("kind") == "val" and r.get("val_loss") is not None]
    train_eval = [(r["step"], r["train_loss"]) for r in records
                  if r.get("kind") == "val" and r.get("train_loss") is not None]
    if not train and not val:
        return None
    # matplotlib is imported only when a plot is drawn (≈ 0.5 s, and never by runs without plots).
    import matplotlib

    matplotlib.use("Agg")  # no display needed; must precede pyplot
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=110)
    if train:
        ax.plot(*zip(*train), label="train (batch)", color="tab:blue", alpha=0.55, linewidth=1)
    if train_eval:
        ax.plot(*zip(*train_eval), "s-", label="train (eval)", color="tab:blue", markersize=3)
    if val:
        ax.plot(*zip(*val), "o-", label="val", color="tab:orange", markersize=3)
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("cross-entropy loss (nats/token)")
    ax.grid(True, alpha=0.3)
    ax.legend()
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    out = Path(out_path)
    atomic_write_bytes(out, buf.getvalue())
    return out
