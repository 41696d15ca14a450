"""What a run refuses before its first step, in one place, so a caller can ask before it says
anything about the run (the CLI prints what it will train only once nothing here objects).

`refuse_run` needs no JAX: the batch and the data, the seeds, --backward's model, and the run
directory (a fresh run into one that holds checkpoints; a resume that changes the config).
`run_mesh` needs JAX started: the devices. `refuse_foreign_files` comes before the run
directory's lock (checkpoint.hold_run_dir). train() asks all three itself.
"""

from __future__ import annotations

import os
from dataclasses import fields, replace
from pathlib import Path
from typing import Any

import numpy as np
from jax.sharding import Mesh

from jaxninja.config import ModelConfig, TrainConfig, check_batch_size
from jaxninja.data import Vocab
from jaxninja.errors import UsageError
from jaxninja.training import checkpoint, parallel
from jaxninja.training.plot import PLOT, run_wrote
from jaxninja.training.step import seeds_of


def run_dirs(out_dir: str | os.PathLike, tc: TrainConfig, models: int) -> tuple[Path, ...]:
    """Each model's run directory: out_dir for one model, else out_dir/seed-<seed> for each."""
    if models == 1:
        return (Path(out_dir),)
    return tuple(checkpoint.seed_dir(out_dir, s) for s in seeds_of(tc, models))


def refuse_foreign_files(out_dir: str | os.PathLike, tc: TrainConfig, models: int) -> None:
    """A run writes only files it owns: refuse one whose plot would replace a file that no
    jaxninja run wrote (checkpoints are refused by `refuse_run`, the lock's file by
    checkpoint.hold_run_dir)."""
    if not str(out_dir).strip():
        raise UsageError('--out "" names no directory: give one, such as --out out')
    for run_dir in run_dirs(out_dir, tc, models):
        png = run_dir / PLOT
        if png.exists() and not run_wrote(png):
            raise UsageError(
                f"{png} was not written by a jaxninja run, and this run would replace it: "
                "move it away, or choose another --out"
            )


def refuse_run(
    mc: ModelConfig,
    tc: TrainConfig,
    data: tuple[np.ndarray, np.ndarray],
    vocab: Vocab,
    out_dir: str | os.PathLike,
    models: int,
    resume: list[checkpoint.Checkpoint] | None,
    backward: bool,
    val: tuple[np.ndarray, np.ndarray] | None = None,
) -> None:
    """Whatever the devices, what refuses a run of `models` models on the train split `data`:
    `resume`, the checkpoints it continues (None: a fresh run); `backward`, whether it trains
    on an exercise-1 function; `val`, the val split a run of tc.eval_every evaluates."""
    check_batch_size(tc.batch_size, len(data[0]))
    if data[0].shape[1] != mc.block_size:
        raise UsageError(f"the data has block size {data[0].shape[1]}, the model {mc.block_size}")
    seeds = seeds_of(tc, models)
    if backward and mc.model != "mlp":  # exercise 1's function is the MLP's backward
        raise UsageError(f"--backward trains the mlp on exercise 1, not the {mc.model}: drop it")
    if backward and tc.gradients != "manual":
        raise UsageError("--backward is your exercise-1 gradients, not jax.grad's: drop one")
    if tc.eval_every is not None and (val is None or len(val[0]) == 0):
        raise UsageError(
            f"--eval-every {tc.eval_every} evaluates the val split, and it is empty: use a larger "
            "words file, or drop --eval-every"
        )
    if resume is None:
        dirs = run_dirs(out_dir, tc, models)
        if used := [d / checkpoint.BEST for d in dirs if (d / checkpoint.BEST).exists()]:
            raise UsageError(
                f"{used[0]} is another run's best model: pass --resume to continue that run, "
                "or choose another --out"
            )
        if checkpoint.latest(out_dir) or checkpoint.seed_runs(out_dir):
            raise UsageError(
                f"{out_dir} already holds checkpoints: pass --resume to continue, "
                "or choose another --out"
            )
        return
    for seed, ckpt in zip(seeds, resume, strict=True):
        checkpoint.check_vocab(ckpt, vocab, "the data")
        _check_resume(mc, replace(tc, seed=seed), ckpt)


def run_mesh(where: parallel.RunPlan, tc: TrainConfig, backward: bool) -> Mesh | None:
    """The run's mesh (JAX started; parallel.RunPlan decides), or its one-line refusal."""
    mesh = where.mesh(tc.batch_size)
    if backward and mesh is not None and where.models == 1:
        raise UsageError("--backward trains on one device: drop --devices")
    return mesh


def _check_resume(mc: ModelConfig, tc: TrainConfig, ckpt: checkpoint.Checkpoint) -> None:
    if changed := _changed(mc, ckpt.model, skip=("vocab_size",)):
        raise UsageError(
            f"the run's model differs from the checkpoint's: {changed}; drop the flags that "
            "change it, or train into another --out"
        )
    if changed := _changed(tc, ckpt.train, skip=("steps",)):
        raise UsageError(
            f"only --steps may change on --resume, and {changed}: drop the other flags, or "
            "train into another --out"
        )
    if ckpt.step > tc.steps:
        raise UsageError(f"the checkpoint is at step {ckpt.step}, beyond --steps {tc.steps}")


def _changed(ours: Any, theirs: Any, skip: tuple[str, ...]) -> str:
    """The fields of two configs that differ, each as its flag with both values."""
    return "; ".join(
        f"--{f.name.replace('_', '-')} is {getattr(ours, f.name)!r}, the checkpoint's "
        f"{getattr(theirs, f.name)!r}"
        for f in fields(ours)
        if f.name not in skip and getattr(ours, f.name) != getattr(theirs, f.name)
    )
