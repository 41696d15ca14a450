"""What a finished run and `jaxninja eval` print: the split losses of a checkpoint (on calibrated
and running BatchNorm statistics, for a model that has BatchNorm), the table of a run of many
seeds with their mean ± std, and, for a run that evaluated (train --eval-every), its best model
(best.safetensors) beside the last: the step, its val loss and the test loss of both.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from jaxninja.data import SPLITS, Splits
from jaxninja.models import registry
from jaxninja.training import checkpoint

# what each model's run ends at in its lecture, beside jaxninja's split losses
LECTURE = {
    "mlp": "the notebook: train 2.0719, val 2.1162 (calibrated BatchNorm)",
    "wavenet": "the lecture: train 1.7690, val 1.9937 (running statistics)",
    "gpt": "makemore's README: test loss about 1.92, on its own split (a test set of 1000 words)",
}


def split_losses(ckpt: checkpoint.Checkpoint, splits: Splits, bn, names=SPLITS) -> list[float]:
    """The checkpoint's loss on each split of `names`, BatchNorm on the statistics `bn`."""
    params = registry.to_device(ckpt.params)
    return [registry.split_loss(ckpt.model, params, bn, *splits.data[s]) for s in names]


def stats_of(ckpt: checkpoint.Checkpoint) -> list[tuple[str, object]]:
    """(label, BatchNorm statistics) to evaluate a checkpoint with: calibrated (once training
    has ended) and running (the lecture's eval in part 5); for a model without BatchNorm, one
    unlabelled entry."""
    if not ckpt.bn_running:
        return [("", {})]
    stats = [("calibrated", ckpt.bn_calibrated), ("running", ckpt.bn_running)]
    return [(label, bn) for label, bn in stats if bn is not None]


def _title(label: str) -> str:
    return f"split loss ({label} BatchNorm)" if label else "split loss"


def print_split_losses(ckpt: checkpoint.Checkpoint, splits: Splits) -> None:
    for label, bn in stats_of(ckpt):
        losses = split_losses(ckpt, splits, bn)
        cells = "  ".join(f"{s} {v:.4f}" for s, v in zip(SPLITS, losses, strict=True))
        print(f"{_title(label)}: {cells}")


def _mean_std(table: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each column's mean and sample std (0 for one row)."""
    spread = table.std(0, ddof=1) if len(table) > 1 else np.zeros(table.shape[1])
    return table.mean(0), spread


def print_seed_table(
    ckpts: list[checkpoint.Checkpoint], splits: Splits, dirs: list[Path] | None = None
) -> None:
    """Each seed's split losses, then their mean ± sample std; calibrated BatchNorm, then the
    running statistics; then each seed's best model in its run directory of `dirs`, if the run
    evaluated."""
    for label, _ in stats_of(ckpts[0]):
        rows = [split_losses(c, splits, dict(stats_of(c))[label]) for c in ckpts]
        print(f"{_title(label)}:")
        print(f"{'seed':>12s}  " + "  ".join(f"{s:>7s}" for s in SPLITS))
        for ckpt, row in zip(ckpts, rows, strict=True):
            print(f"{ckpt.train.seed:12d}  " + "  ".join(f"{v:7.4f}" for v in row))
        stats = zip(SPLITS, *_mean_std(np.asarray(rows)), strict=True)
        cells = "  ".join(f"{s} {m:.4f} ± {d:.4f}" for s, m, d in stats)
        print(f"mean ± std over {len(rows)} seeds: {cells}")
    if ckpts[0].best is not None and dirs is not None:
        _print_seed_bests(ckpts, splits, dirs)
    print(f"  ({LECTURE[ckpts[0].model.model]})")


def best_losses(run_dir: Path, splits: Splits) -> tuple[checkpoint.Checkpoint, float, float] | None:
    """(the checkpoint, val, test) of a run directory's best model (best.safetensors), or None."""
    path = Path(run_dir) / checkpoint.BEST
    if not path.exists():
        return None
    best = checkpoint.load(path)
    val, test = split_losses(best, splits, best.bn, ("val", "test"))
    return best, val, test


def print_best(ckpt: checkpoint.Checkpoint, run_dir: Path, splits: Splits) -> None:
    """A run that evaluated: its best model beside its last, step, val and test loss each."""
    found = best_losses(run_dir, splits) if ckpt.best is not None else None
    if not found:
        return
    best, val, test = found
    last_val, last_test = split_losses(ckpt, splits, ckpt.bn, ("val", "test"))
    print(
        f"best: step {best.step}, val {val:.4f}, test {test:.4f}{_on_stats(best)} "
        f"({Path(run_dir) / checkpoint.BEST}); "
        f"last: step {ckpt.step}, val {last_val:.4f}, test {last_test:.4f}{_on_stats(ckpt)}"
    )


def _on_stats(ckpt: checkpoint.Checkpoint) -> str:
    """Which BatchNorm statistics a checkpoint's losses are on, for a model that has BatchNorm:
    the best model keeps the running ones it was evaluated on, the last one is calibrated, so
    at the same step the two differ."""
    if not ckpt.bn_running:
        return ""
    return ", calibrated BatchNorm" if ckpt.bn_calibrated is not None else ", running BatchNorm"


def _print_seed_bests(ckpts: list[checkpoint.Checkpoint], splits: Splits, dirs: list[Path]) -> None:
    rows = [best_losses(d, splits) for d in dirs]
    if None in rows:
        return
    print(f"best model ({checkpoint.BEST}):")
    print(f"{'seed':>12s}  {'step':>7s}  {'val':>7s}  {'test':>7s}")
    for ckpt, (best, val, test) in zip(ckpts, rows, strict=True):
        print(f"{ckpt.train.seed:12d}  {best.step:7d}  {val:7.4f}  {test:7.4f}")
    mean, std = _mean_std(np.asarray([r[1:] for r in rows]))
    print(
        f"mean ± std over {len(rows)} seeds: best val {mean[0]:.4f} ± {std[0]:.4f}  "
        f"its test {mean[1]:.4f} ± {std[1]:.4f}"
    )
