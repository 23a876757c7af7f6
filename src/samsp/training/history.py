"""A run's history as a user reads it: metrics.csv (one row per epoch) and curves.png."""

from __future__ import annotations

import csv
from pathlib import Path

from ..files import atomic_path


def write_history(run_dir: Path, history: list[dict]) -> None:
    """Replace metrics.csv and curves.png with the epochs so far."""
    keys = list(dict.fromkeys(k for row in history for k in row))
    with atomic_path(run_dir / "metrics.csv") as tmp, tmp.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=keys)
        writer.writeheader()
        writer.writerows(history)
    plot_curves(run_dir / "curves.png", history)


def plot_curves(path: Path, history: list[dict]) -> None:
    """Training loss parts and prompt-free validation Dice per epoch."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [r["epoch"] for r in history]
    fig, ax = plt.subplots(1, 2, figsize=(9, 3.2))
    for key in ("loss", "dice", "distill"):
        if key in history[0]:
            ax[0].plot(epochs, [r[key] for r in history], marker=".", label=key)
    ax[0].set_xlabel("epoch")
    ax[0].set_title("training loss")
    ax[0].legend()
    ax[1].plot(epochs, [r["val_dice"] for r in history], marker=".", color="tab:green")
    ax[1].set_xlabel("epoch")
    ax[1].set_title("validation Dice (prompt-free)")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
