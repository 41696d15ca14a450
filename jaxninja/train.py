"""Exercise 4: training on the hand-written fused backward, jitted end to end.

Each step draws its batch from `fold_in(key, step)`, runs the compact forward and the fused
backward (backward.py; no jax.grad), and applies the gradients with optax (`sgd`, the notebook's,
or `adam`). Steps run in chunks under one jitted `lax.scan`, so there is no Python work per
step; between chunks come the progress bar, the NaN check and the checkpoints. A step's batch
and learning rate depend only on the step number, so a run resumed from a checkpoint ends
bit-identical to one that never stopped.

The same step scales out unchanged (parallel.py): vmapped over many seeds at once, their models
split across devices, or one model's batch split across devices and processes, with the
BatchNorm statistics and the gradients all-reduced inside the hand-written backward.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import replace
from functools import lru_cache, partial, wraps
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.experimental import multihost_utils
from jax.sharding import Mesh
from jax.sharding import PartitionSpec as P

from jaxninja import checkpoint, parallel
from jaxninja.backward import backward_fused
from jaxninja.config import ModelConfig, TrainConfig, check_batch_size
from jaxninja.data import Vocab
from jaxninja.errors import Interrupted, LostProcess, UsageError
from jaxninja.fileio import atomic_path
from jaxninja.model import (
    PARAMS,
    BNStats,
    Params,
    calibrate_bn,
    forward,
    forward_chunked,
    init_params,
    to_device,
)
from jaxninja.parallel import DATA, SEEDS


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
    """The batch of a step: (B,) indices into the train split, a function of the step alone.

    int32 whatever jax_enable_x64 says: 64-bit draws would give another stream under x64.
    """
    key = jax.random.fold_in(key, step)
    return jax.random.randint(key, (batch_size,), 0, n_examples, dtype=jnp.int32)


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


def seeds_of(tc: TrainConfig, n_models: int) -> tuple[int, ...]:
    """The seeds of a run of n_models models: tc.seed, tc.seed + 1, ..."""
    if not (isinstance(n_models, int) and n_models >= 1):
        raise UsageError(f"seeds must be an integer >= 1, got {n_models!r}")
    if tc.seed + n_models > 2**32:
        raise UsageError(f"seeds {tc.seed}..{tc.seed + n_models - 1} pass 2**32: lower --seed")
    return tuple(range(tc.seed, tc.seed + n_models))


def _loss_and_grads(mc: ModelConfig, axis_name: str | None, backward: Callable | None) -> Callable:
    """(params, Xb, Yb) -> (loss, the parameters' gradients, the batch's BatchNorm statistics).

    The compact forward and the fused backward; or, with `backward` (an exercise-1 function,
    `fn(params, v, Xb, Yb) -> dict`, e.g. a learner's), the chunked forward and that backward.
    """

    def fused(params, Xb, Yb):
        loss, cache = forward(params, Xb, Yb, mc.eps, axis_name)
        grads = backward_fused(cache, axis_name=axis_name)
        return loss, grads, BNStats(cache.bn.bnmean, cache.bn.bnvar)

    def atomic(params, Xb, Yb):
        loss, v = forward_chunked(params, Xb, Yb, eps=mc.eps)
        return loss, backward(params, v, Xb, Yb), BNStats(v["bnmeani"], v["bnvar"])

    return fused if backward is None else atomic


def _train_step(
    mc: ModelConfig, tc: TrainConfig, axis_name: str | None, backward: Callable | None = None
) -> Callable:
    """One model's step: forward, manual backward, optax update, running BatchNorm stats."""
    opt = make_optimizer(tc, mc.dtype)
    m = tc.bn_momentum
    loss_and_grads = _loss_and_grads(mc, axis_name, backward)

    def train_step(state: TrainState, batch: tuple[jax.Array, jax.Array]):
        Xb, Yb = batch  # (B, T), (B,): this device's slice of the batch under a data mesh
        loss, grads, batch_bn = loss_and_grads(state.params, Xb, Yb)
        grads = {k: grads[k] for k in PARAMS}
        updates, opt_state = opt.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        bn = BNStats(
            (1 - m) * state.bn_running.mean + m * batch_bn.mean,
            (1 - m) * state.bn_running.var + m * batch_bn.var,
        )
        return TrainState(params, opt_state, bn), loss

    return train_step


@lru_cache(maxsize=8)
def chunk_runner(
    mc: ModelConfig,
    tc: TrainConfig,
    n_models: int = 1,
    mesh: Mesh | None = None,
    backward: Callable | None = None,
) -> Callable:
    """A jitted (state, start, X, Y, n_steps) -> (state, losses, all_finite).

    One model (losses (n_steps,)): on one device, or data parallel over a `data` mesh, the batch
    split across its devices. n_models > 1 (losses (n_steps, K)): the state's arrays carry a
    leading model axis, model k seeded tc.seed + k; the step is vmapped over it, and the models
    are split across the devices of a `seeds` mesh (on a CPU, one device per core: a single CPU
    device keeps about one core busy).
    """
    seeds = seeds_of(tc, n_models)
    many = n_models > 1
    data_axis = DATA if mesh is not None and not many else None
    step = _train_step(mc, tc, data_axis, backward)

    def chunk(state, start, X, Y, model_seeds, n_steps):
        # Every batch of the chunk drawn and gathered at once, before the loop: a threefry call
        # and two gathers inside each step cost ~15% of the step on a 2-core CPU. Under a mesh
        # each device draws and gathers only its own models' batches, or its slice of the batch.
        steps = start + jnp.arange(n_steps)

        def draw(seed):  # (n, B): a model's batches, a function of its seed and the step alone
            key = jax.random.key(seed)
            return jax.vmap(lambda s: step_indices(key, s, X.shape[0], tc.batch_size))(steps)

        if many:
            ix = jax.vmap(draw, out_axes=1)(model_seeds)  # (n, K, B), K this device's models
        else:
            ix = draw(model_seeds[0])  # (n, B)
            if data_axis is not None:
                local = tc.batch_size // jax.lax.axis_size(data_axis)
                first = jax.lax.axis_index(data_axis) * local
                ix = jax.lax.dynamic_slice_in_dim(ix, first, local, axis=1)  # (n, B / devices)
        return jax.lax.scan(jax.vmap(step) if many else step, state, (X[ix], Y[ix]))

    def run(state, start, X, Y, n_steps):
        model_seeds = jnp.asarray(seeds, jnp.uint32)  # (K,)
        loop = partial(chunk, n_steps=n_steps)
        if mesh is not None:
            state_spec = P(SEEDS) if many else P()
            loop = jax.shard_map(
                loop,
                mesh=mesh,
                in_specs=(state_spec, P(), P(), P(), P(SEEDS) if many else P()),
                out_specs=(state_spec, P(None, SEEDS) if many else P()),
            )
        state, losses = loop(state, start, X, Y, model_seeds)
        finite = jnp.all(jnp.stack([jnp.isfinite(p).all() for p in jax.tree.leaves(state)]))
        return state, losses, finite

    return jax.jit(run, static_argnames="n_steps")


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


def run_mesh(tc: TrainConfig, n_models: int, devices: int | None) -> Mesh | None:
    """The mesh a run of n_models models uses on `devices` devices (None: see `train`)."""
    if devices is not None:
        if not (isinstance(devices, int) and devices >= 1):
            raise UsageError(f"devices must be an integer >= 1, got {devices!r}")
        parallel.check_device_count(devices)
    if n_models > 1:
        if jax.process_count() > 1:
            raise UsageError(
                "--seeds runs in one process: start one run per machine, each with its own --seed"
            )
        if devices is None:  # as many as divide the models evenly
            have = jax.device_count()
            devices = max(d for d in range(1, min(have, n_models) + 1) if n_models % d == 0)
        elif n_models % devices:
            raise UsageError(
                f"--seeds {n_models} does not split evenly over --devices {devices}: "
                "choose a device count that divides the number of seeds"
            )
        return parallel.make_mesh(devices, SEEDS)
    if jax.process_count() > 1:
        if devices not in (None, jax.device_count()):
            raise UsageError(
                f"a multi-process run uses all {jax.device_count()} devices of its processes, "
                f"not --devices {devices}: give each process the same share"
            )
        devices = jax.device_count()
    devices = devices or 1
    if tc.batch_size % devices:
        raise UsageError(
            f"the batch of {tc.batch_size} does not split evenly over {devices} devices: "
            "choose a --batch-size that the device count divides"
        )
    return parallel.make_mesh(devices, DATA) if devices > 1 else None


def _holding_out_dir(fn: Callable) -> Callable:
    """Run `fn` as the only writer of its out_dir: process 0, see checkpoint.hold_run_dir."""

    @wraps(fn)
    def held(mc, tc, data, vocab, out_dir, **kw):
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
    resume: bool = False,
    progress: bool = True,
    log: Callable[[str], None] = print,
    backward: Callable | None = None,
) -> TrainResult:
    """Train on (X, Y), checkpointing into out_dir; returns the final, calibrated checkpoints.

    `seeds` > 1 trains that many models at once (seeds tc.seed, tc.seed + 1, ...), each into its
    own out_dir/seed-<seed>, over `devices` devices (default: as many as divide the count). With
    one model, `devices` > 1 splits each batch over that many (default: one, or every device
    of a multi-process run). Only process 0 writes. `backward`, an exercise-1 function (see
    `_loss_and_grads`), replaces the fused backward; it runs on one device.
    """
    out_dir = Path(out_dir)
    X_np, Y_np = data
    check_batch_size(tc.batch_size, len(X_np))
    model_seeds = seeds_of(tc, seeds)
    configs = [replace(tc, seed=s) for s in model_seeds]
    dirs = [out_dir] if seeds == 1 else [checkpoint.seed_dir(out_dir, s) for s in model_seeds]
    mesh = run_mesh(tc, seeds, devices)
    if backward is not None and mesh is not None and seeds == 1:
        raise UsageError("--backward trains on one device: drop --devices")
    main = parallel.is_main_process()
    say = log if main else (lambda _: None)
    existing = [checkpoint.latest(d) for d in dirs]
    if resume:
        found = list(checkpoint.seed_runs(out_dir))
        if found and found != list(model_seeds if seeds > 1 else ()):
            raise UsageError(
                f"--resume: {out_dir} holds a run of {len(found)} seeds from {found[0]}: "
                f"pass --seeds {len(found)} --seed {found[0]}"
            )
        if None in existing:
            missing = dirs[existing.index(None)]
            raise UsageError(f"--resume: {missing} holds no checkpoint to resume from")
        starts = [checkpoint.load(path) for path in existing]
        for cfg, ckpt in zip(configs, starts, strict=True):
            checkpoint.check_vocab(ckpt, vocab, "the data")
            _check_resume(mc, cfg, ckpt)
        if len({ckpt.step for ckpt in starts}) > 1:
            raise UsageError(
                f"the seeds' checkpoints in {out_dir} are at different steps: resume each "
                "seed-* directory alone, or start anew"
            )
        step = starts[0].step
        states = [state_from_checkpoint(ckpt) for ckpt in starts]
        losses = [np.stack([ckpt.losses for ckpt in starts], axis=1)]  # (steps, K)
        say(f"resuming from {existing[0] if seeds == 1 else out_dir} at step {step}")
    else:
        if checkpoint.latest(out_dir) or checkpoint.seed_runs(out_dir):
            raise UsageError(
                f"{out_dir} already holds checkpoints: pass --resume to continue, "
                "or choose another --out"
            )
        step, states, losses = 0, [init_state(mc, cfg) for cfg in configs], []
    X, Y = jnp.asarray(X_np), jnp.asarray(Y_np)
    if mesh is None:
        state, X_run, Y_run = states[0], X, Y
    else:  # the models stacked and split over the seeds axis, or one model replicated
        stacked = jax.tree.map(lambda *xs: np.stack(xs), *states) if seeds > 1 else states[0]
        state = parallel.place(stacked, mesh, SEEDS if seeds > 1 else None)
        X_run, Y_run = parallel.place((X_np, Y_np), mesh)
    run = chunk_runner(mc, tc, seeds, mesh, backward)
    compiled: dict[int, Any] = {}
    train_seconds = compile_seconds = 0.0
    steps_before = step
    last_saved: Path | None = existing[0]

    def save(at_step: int, calibrated: list[BNStats] | None = None) -> list[checkpoint.Checkpoint]:
        """Every model's checkpoint at at_step, written by process 0."""
        host = parallel.fetch(state)
        log_all = np.concatenate(losses) if losses else np.zeros((0, seeds), np.float32)
        ckpts = []
        for k, cfg in enumerate(configs):
            mine = jax.tree.map(lambda x, k=k: x[k], host) if seeds > 1 else host
            ckpts.append(
                checkpoint.Checkpoint(
                    at_step,
                    mc,
                    cfg,
                    vocab,
                    dict(mine.params),
                    BNStats(*mine.bn_running),
                    calibrated[k] if calibrated else None,
                    list(jax.tree.leaves(mine.opt_state)),
                    log_all[:, k],
                )
            )
            if main:
                checkpoint.save(dirs[k] / checkpoint.filename(at_step), ckpts[-1])
        return ckpts

    bar = _progress(tc.steps, step, progress and main)
    with _Stop() as stop:
        while step < tc.steps and not stop.requested():
            next_stop = (step // tc.checkpoint_every + 1) * tc.checkpoint_every
            n = min(tc.chunk_steps, tc.steps - step, next_stop - step)
            if n not in compiled:
                t0 = time.perf_counter()
                compiled[n] = run.lower(state, step, X_run, Y_run, n_steps=n).compile()
                compile_seconds += time.perf_counter() - t0
            t0 = time.perf_counter()
            try:
                new_state, chunk_losses, finite = compiled[n](state, step, X_run, Y_run)
                chunk_losses = parallel.fetch(chunk_losses).reshape(n, seeds)
            except jax.errors.JaxRuntimeError as e:  # a collective whose peer is gone
                if jax.process_count() == 1:
                    raise
                raise LostProcess(parallel.lost_process(e, step, last_saved)) from None
            train_seconds += time.perf_counter() - t0
            if not (np.isfinite(chunk_losses).all() and bool(parallel.fetch(finite))):
                raise UsageError(_diverged(chunk_losses, step, model_seeds, last_saved))
            losses.append(chunk_losses)  # the loss log before the step: they always agree
            state, step = new_state, step + n
            bar.update(n)
            bar.set_postfix(loss=f"{chunk_losses.mean():.4f}")
            if step % tc.checkpoint_every == 0 and step < tc.steps:
                save(step)
                last_saved = dirs[0] / checkpoint.filename(step)
                where = last_saved if seeds == 1 else f"{seeds} checkpoints in {out_dir}/seed-*"
                message = (
                    f"{step:7d}/{tc.steps:7d}: loss {chunk_losses[-1].mean():.4f}, saved {where}"
                )
                if main:
                    (bar.write if progress else log)(message)
        if step < tc.steps:  # stopped by a signal: save, say how to resume
            bar.close()
            save(step)
            _plot_all(losses, dirs, main)
            raise Interrupted(_stopped(stop.signum, step, dirs, out_dir, seeds), stop.signum)
    bar.close()
    host_params = parallel.fetch(state.params)
    calibrated = []
    for k in range(seeds):
        params = {name: jnp.asarray(x[k] if seeds > 1 else x) for name, x in host_params.items()}
        calibrated.append(BNStats(*map(np.asarray, calibrate_bn(params, X))))
    final = save(step, calibrated)
    _plot_all(losses, dirs, main)
    paths = [d / checkpoint.filename(step) for d in dirs]
    return TrainResult(final, paths, train_seconds, compile_seconds, step - steps_before)


class _Stop:
    """Ctrl-C and SIGTERM (what schedulers send before they kill a job) as a request that the
    loop answers between chunks, by saving and stopping, instead of as an exception anywhere.

    In one process, handlers record the signal. In a multi-process run SIGTERM belongs to JAX's
    preemption service, which hears it in any process and tells them all: `requested` asks its
    sync point once per chunk, and every process stops after the same chunk.
    """

    def __init__(self) -> None:
        self.signum: int | None = None
        self._chunks = 0  # the preemption service's step: the same count in every process
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> _Stop:
        if threading.current_thread() is threading.main_thread():
            mine = [signal.SIGINT] + ([signal.SIGTERM] if jax.process_count() == 1 else [])
            self._previous = {s: signal.signal(s, self._record) for s in mine}
        return self

    def __exit__(self, *exc: object) -> None:
        for s, handler in self._previous.items():
            signal.signal(s, handler)

    def _record(self, signum: int, frame: object) -> None:
        self.signum = signum

    def requested(self) -> bool:
        """Whether to stop before the next chunk; asked once per chunk."""
        if jax.process_count() > 1 and multihost_utils.reached_preemption_sync_point(self._chunks):
            self.signum = signal.SIGTERM
        self._chunks += 1
        return self.signum is not None


def _stopped(signum: int, step: int, dirs: list[Path], out_dir: Path, seeds: int) -> str:
    """The one line of a run stopped by a signal: where it saved, and how to resume."""
    how = "interrupted" if signum == signal.SIGINT else f"stopped by {signal.Signals(signum).name}"
    if jax.process_count() > 1:
        who = "saved " if parallel.is_main_process() else "process 0 saved "
        return (
            f"{how} at step {step} with every process: {who}{dirs[0] / checkpoint.filename(step)}; "
            "to continue, start every process again with its flags and --resume"
        )
    others = " and the other seeds" if seeds > 1 else ""
    again = f"jaxninja train --out {out_dir}{f' --seeds {seeds}' if seeds > 1 else ''} --resume"
    saved = dirs[0] / checkpoint.filename(step)
    return f"{how} at step {step}: saved {saved}{others}; continue with `{again}`"


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


def _plot_all(losses: list[np.ndarray], dirs: list[Path], main: bool) -> None:
    if not main:
        return
    log_all = np.concatenate(losses) if losses else np.zeros((0, len(dirs)))
    for k, d in enumerate(dirs):
        plot_losses(log_all[:, k], d / "loss.png")


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
