"""Exercise 4: training on the hand-written fused backward, jitted end to end.

Each step draws its batch from `fold_in(key, step)`, runs the compact forward and the fused
backward (backward.py; no jax.grad), and applies the gradients with optax (`sgd`, the notebook's,
or `adam`). Steps run in chunks under one jitted `lax.scan`, so there is no Python work per
step; between chunks come the progress bar, the NaN check and the checkpoints. A step's batch
and learning rate depend only on the step number, so a run resumed from a checkpoint ends
bit-identical to one that never stopped.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import replace
from functools import lru_cache
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxninja import checkpoint
from jaxninja.backward import backward_fused
from jaxninja.config import ModelConfig, TrainConfig, check_batch_size
from jaxninja.data import Vocab
from jaxninja.errors import Interrupted, UsageError
from jaxninja.fileio import atomic_path
from jaxninja.model import PARAMS, BNStats, Params, calibrate_bn, forward, init_params, to_device


class TrainState(NamedTuple):
    params: Params
    opt_state: Any
    bn_running: BNStats


def make_optimizer(tc: TrainConfig, dtype: str) -> optax.GradientTransformation:
    """The notebook's step schedule (lr, then lr * lr_decay from lr_decay_step) in optax."""
    lr0, lr1 = jnp.asarray(tc.lr, dtype), jnp.asarray(tc.lr_decayed, dtype)

    def schedule(count: jax.Array) -> jax.Array:
        return jnp.where(count < tc.lr_decay_step, lr0, lr1)

    return optax.sgd(schedule) if tc.optimizer == "sgd" else optax.adam(schedule)


def step_indices(key: jax.Array, step: jax.Array, n_examples: int, batch_size: int) -> jax.Array:
    """The batch of a step: (B,) indices into the train split, a function of the step alone."""
    return jax.random.randint(jax.random.fold_in(key, step), (batch_size,), 0, n_examples)


def batch_indices(seed: int, steps: int, n_examples: int, batch_size: int) -> np.ndarray:
    """(steps, B): the indices training draws at steps 0..steps-1 (to replay them elsewhere)."""
    key = jax.random.key(seed)
    draw = jax.vmap(lambda s: step_indices(key, s, n_examples, batch_size))
    return np.asarray(jax.jit(draw)(jnp.arange(steps)))


def init_state(mc: ModelConfig, tc: TrainConfig) -> TrainState:
    params = to_device(init_params(mc, tc.seed))
    H, dtype = mc.n_hidden, mc.dtype
    bn = BNStats(jnp.zeros((1, H), dtype), jnp.ones((1, H), dtype))
    return TrainState(params, make_optimizer(tc, dtype).init(params), bn)


def state_from_checkpoint(ckpt: checkpoint.Checkpoint) -> TrainState:
    params = to_device(ckpt.params)
    template = make_optimizer(ckpt.train, ckpt.model.dtype).init(params)
    leaves, treedef = jax.tree.flatten(template)
    if [x.shape for x in leaves] != [x.shape for x in ckpt.opt_leaves]:
        raise UsageError("the checkpoint's optimizer state does not fit its optimizer: start anew")
    restored = [jnp.asarray(x, t.dtype) for x, t in zip(ckpt.opt_leaves, leaves, strict=True)]
    opt_state = jax.tree.unflatten(treedef, restored)
    return TrainState(params, opt_state, BNStats(*map(jnp.asarray, ckpt.bn_running)))


@lru_cache(maxsize=8)
def chunk_runner(mc: ModelConfig, tc: TrainConfig) -> Callable:
    """A jitted (state, start, X, Y, n_steps) -> (state, losses (n_steps,), all_finite)."""
    opt = make_optimizer(tc, mc.dtype)
    key = jax.random.key(tc.seed)
    m = tc.bn_momentum

    def train_step(state: TrainState, batch: tuple[jax.Array, jax.Array]):
        Xb, Yb = batch  # (B, T), (B,)
        loss, cache = forward(state.params, Xb, Yb, mc.eps)
        grads = backward_fused(cache)
        grads = {k: grads[k] for k in PARAMS}
        updates, opt_state = opt.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        bn = BNStats(
            (1 - m) * state.bn_running.mean + m * cache.bn.bnmean,
            (1 - m) * state.bn_running.var + m * cache.bn.bnvar,
        )
        return TrainState(params, opt_state, bn), loss

    def run(state, start, X, Y, n_steps):
        # Every batch of the chunk drawn and gathered at once, before the loop: a threefry call
        # and two gathers inside each step cost ~15% of the step on a 2-core CPU.
        steps = start + jnp.arange(n_steps)
        ix = jax.vmap(lambda s: step_indices(key, s, X.shape[0], tc.batch_size))(steps)  # (n, B)
        state, losses = jax.lax.scan(train_step, state, (X[ix], Y[ix]))
        finite = jnp.all(jnp.stack([jnp.isfinite(p).all() for p in jax.tree.leaves(state)]))
        return state, losses, finite

    return jax.jit(run, static_argnames="n_steps")


class TrainResult(NamedTuple):
    checkpoint: checkpoint.Checkpoint
    path: Path  # the final checkpoint
    train_seconds: float  # time in the jitted chunks, compilation excluded
    compile_seconds: float
    steps_run: int  # steps this call ran (fewer than the total after --resume)


def _check_resume(mc: ModelConfig, tc: TrainConfig, ckpt: checkpoint.Checkpoint) -> None:
    if ckpt.model != mc:
        raise UsageError(
            f"the run's model config differs from the checkpoint's ({ckpt.model}): "
            "drop the flags that change it, or train into another --out"
        )
    theirs = replace(ckpt.train, steps=tc.steps)
    if theirs != tc:
        raise UsageError(
            "the run's training config differs from the checkpoint's (only --steps "
            "may change on --resume): drop the other flags, or use another --out"
        )
    if ckpt.step > tc.steps:
        raise UsageError(f"the checkpoint is at step {ckpt.step}, beyond --steps {tc.steps}")


def train(
    mc: ModelConfig,
    tc: TrainConfig,
    data: tuple[np.ndarray, np.ndarray],
    vocab: Vocab,
    out_dir: str | os.PathLike,
    *,
    resume: bool = False,
    progress: bool = True,
    log: Callable[[str], None] = print,
) -> TrainResult:
    """Train on (X, Y), checkpointing into out_dir; returns the final, calibrated checkpoint."""
    out_dir = Path(out_dir)
    X_np, Y_np = data
    check_batch_size(tc.batch_size, len(X_np))
    existing = checkpoint.latest(out_dir)
    if resume:
        if existing is None:
            raise UsageError(f"--resume: {out_dir} holds no checkpoint to resume from")
        start = checkpoint.load(existing)
        checkpoint.check_vocab(start, vocab, "the data")
        _check_resume(mc, tc, start)
        state, step, losses = state_from_checkpoint(start), start.step, [start.losses]
        log(f"resuming from {existing} at step {step}")
    else:
        if existing is not None:
            raise UsageError(
                f"{out_dir} already holds checkpoints: pass --resume to continue, "
                "or choose another --out"
            )
        state, step, losses = init_state(mc, tc), 0, []
    X, Y = jnp.asarray(X_np), jnp.asarray(Y_np)
    run = chunk_runner(mc, tc)
    compiled: dict[int, Any] = {}
    train_seconds = compile_seconds = 0.0
    steps_before = step
    last_saved: Path | None = existing

    def snapshot(at_step: int, bn_calibrated: BNStats | None = None) -> checkpoint.Checkpoint:
        flat = np.concatenate(losses) if losses else np.zeros((0,), np.float32)
        return checkpoint.Checkpoint(
            at_step,
            mc,
            tc,
            vocab,
            {k: np.asarray(v) for k, v in state.params.items()},
            BNStats(*map(np.asarray, state.bn_running)),
            bn_calibrated,
            [np.asarray(x) for x in jax.tree.leaves(state.opt_state)],
            flat,
        )

    bar = _progress(tc.steps, step, progress)
    try:
        while step < tc.steps:
            next_stop = (step // tc.checkpoint_every + 1) * tc.checkpoint_every
            n = min(tc.chunk_steps, tc.steps - step, next_stop - step)
            if n not in compiled:
                t0 = time.perf_counter()
                compiled[n] = run.lower(state, step, X, Y, n_steps=n).compile()
                compile_seconds += time.perf_counter() - t0
            t0 = time.perf_counter()
            new_state, chunk_losses, finite = compiled[n](state, step, X, Y)
            chunk_losses = np.asarray(chunk_losses)
            train_seconds += time.perf_counter() - t0
            if not (np.isfinite(chunk_losses).all() and bool(finite)):
                bad = np.flatnonzero(~np.isfinite(chunk_losses))
                what = (
                    f"the loss became {chunk_losses[bad[0]]} at step {step + int(bad[0])}"
                    if bad.size
                    else f"the parameters became non-finite by step {step + n - 1}"
                )
                kept = f"kept {last_saved}" if last_saved else "no checkpoint was written"
                raise UsageError(f"training diverged: {what}; lower --lr. {kept}")
            state, step = new_state, step + n
            losses.append(chunk_losses)
            bar.update(n)
            bar.set_postfix(loss=f"{chunk_losses.mean():.4f}")
            if step % tc.checkpoint_every == 0 and step < tc.steps:
                last_saved = checkpoint.save(out_dir / checkpoint.filename(step), snapshot(step))
                message = (
                    f"{step:7d}/{tc.steps:7d}: loss {chunk_losses[-1]:.4f}, saved {last_saved}"
                )
                (bar.write if progress else log)(message)
    except KeyboardInterrupt:
        bar.close()
        path = checkpoint.save(out_dir / checkpoint.filename(step), snapshot(step))
        plot_losses(np.concatenate(losses) if losses else np.zeros(0), out_dir / "loss.png")
        raise Interrupted(
            f"interrupted at step {step}: saved {path}; continue with "
            f"`jaxninja train --out {out_dir} --resume`"
        ) from None
    bar.close()
    final = snapshot(step, BNStats(*map(np.asarray, calibrate_bn(state.params, X))))
    path = checkpoint.save(out_dir / checkpoint.filename(step), final)
    plot_losses(final.losses, out_dir / "loss.png")
    return TrainResult(final, path, train_seconds, compile_seconds, step - steps_before)


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


def plot_losses(losses: np.ndarray, path: str | os.PathLike) -> None:
    """The notebook's plot: log10 of the loss, averaged over windows of 1000 steps (fewer for a
    short run). Written atomically; nothing is written for an empty log."""
    if len(losses) == 0:
        return
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    window = 1000 if len(losses) >= 10_000 else max(1, len(losses) // 100)
    n = len(losses) // window * window  # a ragged last window is left out, as .view() would
    curve = np.log10(np.asarray(losses[:n], np.float64)).reshape(-1, window).mean(1)
    fig, ax = plt.subplots(figsize=(8, 4.5))
    ax.plot(np.arange(len(curve)) * window, curve)
    ax.set_xlabel("step")
    ax.set_ylabel(f"log10 loss (mean over {window} steps)")
    ax.set_title("training loss")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    try:
        with atomic_path(path, suffix=".png") as tmp:
            fig.savefig(tmp, dpi=100)
    finally:
        plt.close(fig)
