"""Evaluation during training (`train --eval-every N`): the val split's loss every N steps, and
the best model so far kept as `best.safetensors` in each run directory, as makemore keeps its.

An evaluation reads the parameters and changes nothing a step reads, so a run that evaluates
trains exactly as one that does not. Each evaluation's (step, val loss) goes into the
checkpoints (Checkpoint.evals), so a resumed run knows its best so far, and evaluates and
writes again exactly what the uninterrupted run would (a run that ended, resumed for more
steps, keeps the evaluation of its old last step). The best is the first lowest: a later
evaluation replaces it only if strictly lower. Written atomically, by process 0.
"""

from __future__ import annotations

from pathlib import Path

import jax.numpy as jnp
import numpy as np

from jaxninja.config import ModelConfig, TrainConfig
from jaxninja.models import registry
from jaxninja.models.layers import BNStats
from jaxninja.training import checkpoint, parallel


def due(tc: TrainConfig, step: int, last: int) -> bool:
    """Whether a run of `last` steps evaluates after `step`: at each multiple of eval_every, and
    at its last step, so that the best it keeps is never worse than where it ended."""
    return tc.eval_every is not None and step > 0 and (step % tc.eval_every == 0 or step == last)


def steps_to_next(tc: TrainConfig, step: int) -> int | None:
    """Steps from `step` to the next evaluation, or None for a run that does not evaluate."""
    return None if tc.eval_every is None else tc.eval_every - step % tc.eval_every


def val_loss(
    mc: ModelConfig, params: dict, bn_running: dict, val: tuple[np.ndarray, np.ndarray]
) -> float:
    """A model's val loss (its host parameters), BatchNorm on its running statistics, as the
    lecture evaluates during training (the calibrated ones come at the end)."""
    bn = {k: BNStats(*map(jnp.asarray, v)) for k, v in bn_running.items()}
    return registry.split_loss(mc, registry.to_device(params), bn, *val)


def keep_best(ckpts: list[checkpoint.Checkpoint], dirs: tuple[Path, ...]) -> list[bool]:
    """Write best.safetensors for each model whose latest evaluation is its first lowest;
    which ones were."""
    better = []
    for ckpt, run_dir in zip(ckpts, dirs, strict=True):
        better.append(ckpt.best is not None and ckpt.best[0] == ckpt.step)
        if better[-1] and parallel.is_main_process():
            checkpoint.save(run_dir / checkpoint.BEST, ckpt)
    return better
