"""The loss plot each run directory gets: the notebook's log10 loss over windows of steps, and
the val loss of a run that evaluates (train --eval-every) beside it.

The PNG carries a text chunk saying a jaxninja run wrote it, so a later run replaces its own
plot and refuses to replace a file of the same name that someone else made (loop.py asks).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from jaxninja.fileio import atomic_path
from jaxninja.training import parallel

PLOT = "loss.png"  # in each run directory
_STAMP = "jaxninja"  # a text chunk in the PNG: a plot a run wrote, which a later run may replace


def run_wrote(path: Path) -> bool:
    """Whether the file at `path` is a loss plot a jaxninja run wrote (its PNG text says so)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            return getattr(image, "text", {}).get(_STAMP) == "loss plot"
    except (OSError, UnidentifiedImageError, ValueError):
        return False


def plot_all(
    losses: list[np.ndarray], dirs: tuple[Path, ...], evals: list[np.ndarray] | None = None
) -> None:
    """Each model's plot, from the loss log in (n, models) pieces and each model's evaluations
    (k, 2) (step, val loss); process 0 writes them."""
    if not parallel.is_main_process():
        return
    log_all = np.concatenate(losses) if losses else np.zeros((0, len(dirs)))
    for k, d in enumerate(dirs):
        plot_losses(log_all[:, k], d / PLOT, None if evals is None else evals[k])


def plot_losses(
    losses: np.ndarray, path: str | os.PathLike, evals: np.ndarray | None = None
) -> None:
    """The notebook's plot: log10 of the loss, averaged over windows of 1000 steps (fewer for a
    short run); with `evals` (k, 2), log10 of the val loss at each evaluated step beside it,
    its lowest marked. Written atomically; nothing is written for an empty log."""
    if len(losses) == 0:
        return
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    window = 1000 if len(losses) >= 10_000 else max(1, len(losses) // 100)
    n = len(losses) // window * window  # a ragged last window is left out, as .view() would
    curve = np.log10(np.asarray(losses[:n], np.float64)).reshape(-1, window).mean(1)
    fig, ax = plt.subplots(figsize=(8, 4.5))
    ax.plot(np.arange(len(curve)) * window, curve, label="train")
    if evals is not None and len(evals):
        steps, val = evals[:, 0], np.log10(evals[:, 1])
        ax.plot(steps, val, "o-", markersize=3, label="val")
        best = int(np.argmin(val))
        ax.plot(steps[best], val[best], "k*", markersize=10, label=f"best (step {steps[best]:.0f})")
        ax.legend()
    ax.set_xlabel("step")
    ax.set_ylabel(f"log10 loss (train: mean over {window} steps)")
    ax.set_title("training loss" if evals is None or not len(evals) else "training and val loss")
    ax.grid(alpha=0.3)
    # fixed margins that hold the labels: tight_layout measured them, a third of a plot's time
    fig.subplots_adjust(left=0.09, right=0.98, bottom=0.11, top=0.93)
    try:
        with atomic_path(path, suffix=".png") as tmp:
            fig.savefig(tmp, dpi=100, metadata={_STAMP: "loss plot"})
    finally:
        plt.close(fig)
