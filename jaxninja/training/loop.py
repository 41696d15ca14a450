"""Exercise 4's training loop: a run planned once, then jitted chunks of steps (step.py), with
the progress bar, the NaN check and the checkpoints between them.

A run is one model, or many seeds at once, on one device or split over several (parallel.py).
What it refuses is asked first (preflight.py); a signal is answered between chunks by saving
and stopping (signals.py); with --eval-every, the val split is evaluated between chunks and the
best model kept (evals.py); its end is calibrated BatchNorm statistics (for a model that has
BatchNorm), a final checkpoint and the loss plot (plot.py).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, replace
from functools import wraps
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh

from jaxninja.config import ModelConfig, TrainConfig
from jaxninja.data import Vocab
from jaxninja.errors import Interrupted, LostProcess, UsageError
from jaxninja.models import registry
from jaxninja.models.layers import BNStats
from jaxninja.training import checkpoint, evals, parallel
from jaxninja.training.parallel import SEEDS
from jaxninja.training.plot import plot_all
from jaxninja.training.preflight import refuse_foreign_files, refuse_run, run_dirs, run_mesh
from jaxninja.training.signals import Stop, stopped
from jaxninja.training.step import (
    ChunkRunner,
    TrainState,
    chunk_runner,
    init_state,
    seeds_of,
    state_from_checkpoint,
)


class TrainResult(NamedTuple):
    checkpoints: list[checkpoint.Checkpoint]  # the final ones, one per model
    paths: list[Path]  # where they are (written by process 0 only)
    train_seconds: float  # time in the jitted chunks, compilation excluded
    compile_seconds: float
    steps_run: int  # steps this call ran (fewer than the total after --resume)

    @property
    def checkpoint(self) -> checkpoint.Checkpoint:
        return self.checkpoints[0]

    @property
    def path(self) -> Path:
        return self.paths[0]


class Plan(NamedTuple):
    """A run, decided once: its models (configs and directories), the mesh, the jitted chunk."""

    mc: ModelConfig
    configs: tuple[TrainConfig, ...]  # one per model, seeded tc.seed, tc.seed + 1, ...
    dirs: tuple[Path, ...]  # each model's run directory: out_dir, or out_dir/seed-<seed>
    out_dir: Path
    vocab: Vocab
    mesh: Mesh | None  # a `seeds` or `data` axis, or None: one model on one device
    runner: ChunkRunner

    @property
    def models(self) -> int:
        return len(self.configs)

    @property
    def steps(self) -> int:
        return self.configs[0].steps

    @property
    def first_seed(self) -> np.uint32:
        return np.uint32(self.configs[0].seed)


@dataclass
class Progress:
    """Where a run stands: the loop advances it, `save_all` writes it."""

    step: int
    state: TrainState  # placed: on the mesh, or the device; a leading model axis for many
    losses: list[np.ndarray]  # the loss log in (n, models) pieces
    last_saved: Path | None  # the latest checkpoint on disk
    evals: list[np.ndarray]  # each model's evaluations so far, (k, 2): step, val loss
    train_seconds: float = 0.0
    compile_seconds: float = 0.0


def plan_run(mc, tc, data, vocab, out_dir, where: parallel.RunPlan, backward, resume) -> Plan:
    """The run, once preflight.py has nothing against it (`data`: the train and val splits;
    `resume`: None, or its checkpoints)."""
    (data, val) = data
    refuse_run(mc, tc, data, vocab, out_dir, where.models, resume, backward is not None, val)
    mesh = run_mesh(where, tc, backward is not None)
    configs = tuple(replace(tc, seed=s) for s in seeds_of(tc, where.models))
    runner = chunk_runner(mc, tc, len(configs), mesh, backward)
    dirs = run_dirs(out_dir, tc, where.models)
    return Plan(mc, configs, dirs, Path(out_dir), vocab, mesh, runner)


def start(plan: Plan, resume: list[checkpoint.Checkpoint] | None, say: Callable) -> Progress:
    """A fresh run's first state, or the state of the checkpoints it resumes from."""
    if resume is None:
        states = [init_state(plan.mc, c) for c in plan.configs]
        return Progress(0, _placed(plan, states), [], None, [np.zeros((0, 2))] * plan.models)
    step = resume[0].step
    last = resume[0].path if plan.models == 1 else checkpoint.latest(plan.dirs[0])
    say(f"resuming from {last if plan.models == 1 else plan.out_dir} at step {step}")
    states = [state_from_checkpoint(c) for c in resume]
    losses = [np.stack([c.losses for c in resume], 1)]
    return Progress(step, _placed(plan, states), losses, last, [c.evals for c in resume])


def _placed(plan: Plan, states: list[TrainState]) -> TrainState:
    """The models' states where the chunk runs: stacked on a model axis (split over `seeds`),
    or the one model's, replicated over a `data` mesh or on the default device."""
    if plan.mesh is None:
        return states[0]
    if plan.models == 1:
        return parallel.place(states[0], plan.mesh)
    return parallel.place(jax.tree.map(lambda *xs: np.stack(xs), *states), plan.mesh, SEEDS)


def _model(tree: Any, k: int, models: int) -> Any:
    """Model k's part of a (host) tree that holds one model, or many on a leading axis."""
    return tree if models == 1 else jax.tree.map(lambda x: x[k], tree)


def checkpoints_of(
    plan: Plan, at: Progress, calibrated: list[dict[str, BNStats]] | None = None
) -> list[checkpoint.Checkpoint]:
    """Every model's checkpoint at the current step (on the host; not written)."""
    host = parallel.fetch(at.state)
    log_all = np.concatenate(at.losses) if at.losses else np.zeros((0, plan.models), np.float32)
    ckpts = []
    for k, cfg in enumerate(plan.configs):
        mine = _model(host, k, plan.models)
        bn = mine.bn_running, calibrated[k] if calibrated else None
        opt_leaves = list(jax.tree.leaves(mine.opt_state))
        fields = (at.step, plan.mc, cfg, plan.vocab, dict(mine.params), *bn, opt_leaves)
        ckpts.append(checkpoint.Checkpoint(*fields, log_all[:, k], evals=at.evals[k]))
    return ckpts


def save_all(
    plan: Plan, at: Progress, calibrated: list[dict[str, BNStats]] | None = None
) -> list[checkpoint.Checkpoint]:
    """Every model's checkpoint at the current step; process 0 writes them."""
    ckpts = checkpoints_of(plan, at, calibrated)
    if parallel.is_main_process():
        for ckpt, run_dir in zip(ckpts, plan.dirs, strict=True):
            checkpoint.save(run_dir / checkpoint.filename(at.step), ckpt)
    at.last_saved = plan.dirs[0] / checkpoint.filename(at.step)
    return ckpts


def evaluate(plan: Plan, at: Progress, val: tuple[np.ndarray, np.ndarray]) -> str:
    """Each model's val loss at this step, added to its evaluations; best.safetensors for each
    model it is the best of so far (evals.py). The line that says so."""
    host = parallel.fetch(at.state)
    losses = []
    for k in range(plan.models):
        mine = _model(host, k, plan.models)
        losses.append(evals.val_loss(plan.mc, mine.params, mine.bn_running, val))
        at.evals[k] = np.concatenate([at.evals[k], [[at.step, losses[-1]]]])
    better = sum(evals.keep_best(checkpoints_of(plan, at), plan.dirs))
    if plan.models == 1:
        kept = f", the best so far: saved {plan.dirs[0] / checkpoint.BEST}" if better else ""
        return f"{at.step:7d}/{plan.steps:7d}: val {losses[0]:.4f}{kept}"
    kept = f", the best so far of {better} seeds: saved their {checkpoint.BEST}" if better else ""
    return f"{at.step:7d}/{plan.steps:7d}: val {np.mean(losses):.4f} (mean of {plan.models}){kept}"


def run_chunk(plan: Plan, at: Progress, X: jax.Array, Y: jax.Array) -> np.ndarray:
    """Train one chunk, up to the next checkpoint or the end; advance `at`; its losses (n, K)."""
    tc = plan.configs[0]
    every = tc.checkpoint_every
    n = min(tc.chunk_steps, plan.steps - at.step, every - at.step % every)
    n = min(n, evals.steps_to_next(tc, at.step) or n)
    args = (at.state, at.step, X, Y, plan.first_seed)
    chunk, seconds = plan.runner.executable(n, *args)
    at.compile_seconds += seconds
    t0 = time.perf_counter()
    try:
        state, losses, finite = chunk(*args)
        losses = parallel.fetch(losses).reshape(n, plan.models)
    except jax.errors.JaxRuntimeError as e:  # a collective whose peer is gone
        if jax.process_count() == 1:
            raise
        raise LostProcess(parallel.lost_process(e, at.step, at.last_saved)) from None
    at.train_seconds += time.perf_counter() - t0
    if not (np.isfinite(losses).all() and bool(parallel.fetch(finite))):
        seeds = tuple(c.seed for c in plan.configs)
        raise UsageError(_diverged(losses, at.step, seeds, at.last_saved))
    at.losses.append(losses)  # the loss log before the step: they always agree
    at.state, at.step = state, at.step + n
    return losses


def _holding_out_dir(fn: Callable) -> Callable:
    """Run `fn` as the only writer of its out_dir: process 0, see checkpoint.hold_run_dir."""

    @wraps(fn)
    def held(mc, tc, data, vocab, out_dir, **kw):
        refuse_foreign_files(out_dir, tc, kw.get("seeds", 1))
        hold = checkpoint.hold_run_dir(out_dir) if parallel.is_main_process() else nullcontext()
        with hold:
            return fn(mc, tc, data, vocab, out_dir, **kw)

    return held


@_holding_out_dir
def train(
    mc: ModelConfig,
    tc: TrainConfig,
    data: tuple[np.ndarray, np.ndarray],
    vocab: Vocab,
    out_dir: str | os.PathLike,
    *,
    seeds: int = 1,
    devices: int | None = None,
    resume: bool | list[checkpoint.Checkpoint] = False,
    progress: bool = True,
    log: Callable[[str], None] = print,
    backward: Callable | None = None,
    val: tuple[np.ndarray, np.ndarray] | None = None,
) -> TrainResult:
    """Train on (X, Y), checkpointing into out_dir; returns the final, calibrated checkpoints.

    `seeds` > 1 trains that many models at once (seeds tc.seed, tc.seed + 1, ...), each into its
    own out_dir/seed-<seed>; `devices` (parallel.RunPlan) spreads the models, or one model's
    batch. `resume`: True, or the run's latest checkpoints already loaded (checkpoint.load_run).
    Only process 0 writes. `backward`, an exercise-1 function (step.py's `_loss_and_grads`),
    replaces the fused backward; it runs on one device. `val`, the val split that a run of
    tc.eval_every evaluates (evals.py).
    """
    if resume is True:
        resume = checkpoint.load_run(out_dir, seeds)
    where = parallel.RunPlan(seeds, devices)
    plan = plan_run(mc, tc, (data, val), vocab, out_dir, where, backward, resume or None)
    say = log if parallel.is_main_process() else (lambda _: None)
    at = start(plan, resume or None, say)
    first = at.step
    X, Y = map(jnp.asarray, data) if plan.mesh is None else parallel.place(data, plan.mesh)
    bar = _progress(plan.steps, at.step, progress and parallel.is_main_process())
    with Stop() as stop:
        while at.step < plan.steps and not stop.requested():
            losses = run_chunk(plan, at, X, Y)
            bar.update(len(losses))
            bar.set_postfix(loss=f"{losses.mean():.4f}")
            if evals.due(tc, at.step, plan.steps):
                (bar.write if progress else say)(evaluate(plan, at, val))
            if at.step % tc.checkpoint_every == 0 and at.step < plan.steps:
                save_all(plan, at)
                (bar.write if progress else say)(_saved_line(plan, at, losses))
        bar.close()
        # A signal from here on waits for the last checkpoint (the calibration takes seconds)
        calibrated = None if at.step < plan.steps else _calibrate(plan, at, data[0], say)
        final = save_all(plan, at, calibrated=calibrated)
        plot_all(at.losses, plan.dirs, at.evals)
    if stop.signum is not None:  # stopped by a signal: saved; say how to resume, or that it ended
        raise Interrupted(stopped(stop.signum, at.step, plan), stop.signum)
    paths = [d / checkpoint.filename(at.step) for d in plan.dirs]
    return TrainResult(final, paths, at.train_seconds, at.compile_seconds, at.step - first)


def _calibrate(
    plan: Plan, at: Progress, X: np.ndarray, say: Callable[[str], None]
) -> list[dict[str, BNStats]] | None:
    """Each model's BatchNorm statistics over the whole train split (registry.calibrate); None
    for a model without BatchNorm. It takes seconds (the WaveNet's, 5 s on a 2-core CPU), so
    it says so first."""
    if not registry.of(plan.mc).bn_shapes(plan.mc):
        return None
    say(f"calibrating BatchNorm over the {len(X):,} training examples")
    host = parallel.fetch(at.state.params)
    stats = [
        registry.calibrate(plan.mc, registry.to_device(_model(host, k, plan.models)), X)
        for k in range(plan.models)
    ]
    return [jax.tree.map(np.asarray, s) for s in stats]


def _saved_line(plan: Plan, at: Progress, losses: np.ndarray) -> str:
    where = (
        at.last_saved if plan.models == 1 else f"{plan.models} checkpoints in {plan.out_dir}/seed-*"
    )
    return f"{at.step:7d}/{plan.steps:7d}: loss {losses[-1].mean():.4f}, saved {where}"


def _diverged(losses: np.ndarray, step: int, seeds: tuple[int, ...], kept: Path | None) -> str:
    """The one-line message for a chunk whose losses (n, K) or parameters went non-finite."""
    bad = np.argwhere(~np.isfinite(losses))
    if bad.size:
        at, k = bad[0]
        who = f" (seed {seeds[k]})" if len(seeds) > 1 else ""
        what = f"the loss became {losses[at, k]} at step {step + int(at)}{who}"
    else:
        what = f"the parameters became non-finite by step {step + len(losses) - 1}"
    saved = f"kept {kept}" if kept else "no checkpoint was written"
    return f"training diverged: {what}; lower --lr. {saved}"


def _progress(total: int, initial: int, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(
        total=total,
        initial=initial,
        unit="step",
        disable=not enabled,
        dynamic_ncols=True,
        unit_scale=True,
        smoothing=0.1,
    )
