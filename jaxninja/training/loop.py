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
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, fields, replace
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

from jaxninja.config import ModelConfig, TrainConfig, check_batch_size
from jaxninja.data import Vocab
from jaxninja.errors import Interrupted, LostProcess, UsageError
from jaxninja.fileio import atomic_path
from jaxninja.models import registry
from jaxninja.models.layers import BNStats
from jaxninja.models.mlp import forward_chunked
from jaxninja.training import checkpoint, parallel
from jaxninja.training.parallel import DATA, SEEDS

Params = dict[str, jax.Array]


class TrainState(NamedTuple):
    params: Params
    opt_state: Any
    bn_running: dict[str, BNStats]  # by BatchNorm name


def make_optimizer(tc: TrainConfig, dtype: str) -> optax.GradientTransformation:
    """The notebook's step schedule (lr, then lr * lr_decay from lr_decay_step) in optax."""
    lr0, lr1 = jnp.asarray(tc.lr, dtype), jnp.asarray(tc.lr_decayed, dtype)

    def schedule(count: jax.Array) -> jax.Array:
        return jnp.where(count < tc.lr_decay_step, lr0, lr1)

    return optax.sgd(schedule) if tc.optimizer == "sgd" else optax.adam(schedule)


def batches(seed: int | jax.Array, steps: jax.Array, n_examples: int, batch_size: int) -> jax.Array:
    """The batch stream, the one both training and a replay read: (len(steps), B) indices into
    the train split, step s's batch a function of the seed and s alone (so a resumed run draws
    what an uninterrupted one would). int32 whatever jax_enable_x64 says: 64-bit draws would be
    another stream."""
    key = jax.random.key(seed)

    def one(step: jax.Array) -> jax.Array:
        k = jax.random.fold_in(key, step)
        return jax.random.randint(k, (batch_size,), 0, n_examples, dtype=jnp.int32)

    return jax.vmap(one)(steps)


def batch_indices(seed: int, steps: int, n_examples: int, batch_size: int) -> np.ndarray:
    """(steps, B): the indices training draws at steps 0..steps-1 (to replay them elsewhere)."""
    draw = jax.jit(batches, static_argnums=(2, 3))
    return np.asarray(draw(seed, jnp.arange(steps), n_examples, batch_size))


def init_state(mc: ModelConfig, tc: TrainConfig) -> TrainState:
    params = registry.to_device(registry.of(mc).init_params(mc, tc.seed))
    return TrainState(params, make_optimizer(tc, mc.dtype).init(params), registry.zero_stats(mc))


def state_from_checkpoint(ckpt: checkpoint.Checkpoint) -> TrainState:
    params = registry.to_device(ckpt.params)
    template = make_optimizer(ckpt.train, ckpt.model.dtype).init(params)
    leaves, treedef = jax.tree.flatten(template)
    if [x.shape for x in leaves] != [x.shape for x in ckpt.opt_leaves]:
        raise UsageError("the checkpoint's optimizer state does not fit its optimizer: start anew")
    restored = [jnp.asarray(x, t.dtype) for x, t in zip(ckpt.opt_leaves, leaves, strict=True)]
    opt_state = jax.tree.unflatten(treedef, restored)
    bn = {k: BNStats(*map(jnp.asarray, v)) for k, v in ckpt.bn_running.items()}
    return TrainState(params, opt_state, bn)


def seeds_of(tc: TrainConfig, n_models: int) -> tuple[int, ...]:
    """The seeds of a run of n_models models: tc.seed, tc.seed + 1, ..."""
    if not (isinstance(n_models, int) and n_models >= 1):
        raise UsageError(f"seeds must be an integer >= 1, got {n_models!r}")
    if tc.seed + n_models > 2**32:
        raise UsageError(f"seeds {tc.seed}..{tc.seed + n_models - 1} pass 2**32: lower --seed")
    return tuple(range(tc.seed, tc.seed + n_models))


def _loss_and_grads(mc: ModelConfig, axis_name: str | None, backward: Callable | None) -> Callable:
    """(params, Xb, Yb) -> (loss, the parameters' gradients, the batch's BatchNorm statistics).

    The model's own hand-written backward (registry.py); or, with `backward` (the MLP's
    exercise-1 function, `fn(params, v, Xb, Yb) -> dict`, e.g. a learner's), the chunked
    forward and that backward.
    """

    def atomic(params, Xb, Yb):
        loss, v = forward_chunked(params, Xb, Yb, eps=mc.eps)
        return loss, backward(params, v, Xb, Yb), {"bn": BNStats(v["bnmeani"], v["bnvar"])}

    return registry.of(mc).loss_and_grads(mc, axis_name) if backward is None else atomic


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
        grads = {k: grads[k] for k in state.params}
        updates, opt_state = opt.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        bn = jax.tree.map(lambda r, b: (1 - m) * r + m * b, state.bn_running, batch_bn)
        return TrainState(params, opt_state, bn), loss

    return train_step


class ChunkRunner(NamedTuple):
    """A run's jitted chunk and the executables compiled from it, kept for the process: a later
    run of the same shape (a resume, another seed, a longer run) compiles no chunk again."""

    jitted: Callable  # (state, start, X, Y, first_seed, n_steps) -> (state, losses, all_finite)
    compiled: dict  # (n_steps, the arguments' types and placements) -> executable

    def executable(self, n_steps: int, *args: Any) -> tuple[Callable, float]:
        """The chunk of n_steps compiled for these arguments; the seconds compiling took now."""
        leaves = jax.tree.leaves(args)
        key = (n_steps, *((jax.typeof(x), getattr(x, "sharding", None)) for x in leaves))
        if key in self.compiled:
            return self.compiled[key], 0.0
        t0 = time.perf_counter()
        self.compiled[key] = self.jitted.lower(*args, n_steps=n_steps).compile()
        return self.compiled[key], time.perf_counter() - t0


# What no step reads: a run's length, its chunks and checkpoints, and its seed (an argument of
# the chunk). Runs that differ only there share one ChunkRunner.
_RUN_ONLY = ("steps", "chunk_steps", "checkpoint_every", "seed")


def chunk_runner(
    mc: ModelConfig,
    tc: TrainConfig,
    n_models: int = 1,
    mesh: Mesh | None = None,
    backward: Callable | None = None,
) -> ChunkRunner:
    """The ChunkRunner of a run: `jitted(state, start, X, Y, first_seed, n_steps)` trains
    n_steps steps from step `start` -> (state, losses, all_finite).

    One model (losses (n_steps,)): on one device, or data parallel over a `data` mesh, the batch
    split across its devices. n_models > 1 (losses (n_steps, K)): the state's arrays carry a
    leading model axis, model k seeded first_seed + k; the step is vmapped over it, and the
    models are split across the devices of a `seeds` mesh (on a CPU, one device per core: a
    single CPU device keeps about one core busy). `first_seed` is a uint32 (seeds_of checks the
    range).
    """
    seeds_of(tc, n_models)
    step_only = replace(tc, **{f: getattr(TrainConfig, f) for f in _RUN_ONLY})
    return _chunk_runner(mc, step_only, n_models, mesh, backward)


@lru_cache(maxsize=32)
def _chunk_runner(mc, tc, n_models, mesh, backward) -> ChunkRunner:
    many = n_models > 1
    data_axis = DATA if mesh is not None and not many else None
    step = _train_step(mc, tc, data_axis, backward)

    def chunk(state, start, X, Y, model_seeds, n_steps):
        # Every batch of the chunk drawn and gathered at once, before the loop: a threefry call
        # and two gathers inside each step cost ~15% of the step on a 2-core CPU. Under a mesh
        # each device draws and gathers only its own models' batches, or its slice of the batch.
        steps = start + jnp.arange(n_steps)

        def draw(seed):  # (n, B): a model's batches
            return batches(seed, steps, X.shape[0], tc.batch_size)

        if many:
            ix = jax.vmap(draw, out_axes=1)(model_seeds)  # (n, K, B), K this device's models
        else:
            ix = draw(model_seeds[0])  # (n, B)
            if data_axis is not None:
                local = tc.batch_size // jax.lax.axis_size(data_axis)
                first = jax.lax.axis_index(data_axis) * local
                ix = jax.lax.dynamic_slice_in_dim(ix, first, local, axis=1)  # (n, B / devices)
        return jax.lax.scan(jax.vmap(step) if many else step, state, (X[ix], Y[ix]))

    def run(state, start, X, Y, first_seed, n_steps):
        model_seeds = first_seed + jnp.arange(n_models, dtype=jnp.uint32)  # (K,)
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

    return ChunkRunner(jax.jit(run, static_argnames="n_steps"), {})


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
    train_seconds: float = 0.0
    compile_seconds: float = 0.0


def run_dirs(out_dir: str | os.PathLike, tc: TrainConfig, models: int) -> tuple[Path, ...]:
    """Each model's run directory: out_dir for one model, else out_dir/seed-<seed> for each."""
    if models == 1:
        return (Path(out_dir),)
    return tuple(checkpoint.seed_dir(out_dir, s) for s in seeds_of(tc, models))


def refuse_foreign_files(out_dir: str | os.PathLike, tc: TrainConfig, models: int) -> None:
    """A run writes only files it owns: before it starts, refuse one whose plot would replace a
    file that no jaxninja run wrote (checkpoints are refused by `start`, the lock's file by
    checkpoint.hold_run_dir)."""
    if not str(out_dir).strip():
        raise UsageError('--out "" names no directory: give one, such as --out out')
    for run_dir in run_dirs(out_dir, tc, models):
        plot = run_dir / PLOT
        if plot.exists() and not _our_plot(plot):
            raise UsageError(
                f"{plot} was not written by a jaxninja run, and this run would replace it: "
                "move it away, or choose another --out"
            )


def refuse_backward(mc: ModelConfig) -> None:
    """--backward is exercise 1's function: the MLP's backward, no other model's."""
    if mc.model != "mlp":
        raise UsageError(f"--backward trains the mlp on exercise 1, not the {mc.model}: drop it")


def plan_run(mc, tc, data, vocab, out_dir, where: parallel.RunPlan, backward) -> Plan:
    check_batch_size(tc.batch_size, len(data[0]))
    if data[0].shape[1] != mc.block_size:
        raise UsageError(f"the data has block size {data[0].shape[1]}, the model {mc.block_size}")
    configs = tuple(replace(tc, seed=s) for s in seeds_of(tc, where.models))
    out_dir = Path(out_dir)
    dirs = run_dirs(out_dir, tc, where.models)
    mesh = where.mesh(tc.batch_size)
    if backward is not None and mesh is not None and len(configs) == 1:
        raise UsageError("--backward trains on one device: drop --devices")
    if backward is not None:
        refuse_backward(mc)
    return Plan(
        mc, configs, dirs, out_dir, vocab, mesh, chunk_runner(mc, tc, len(configs), mesh, backward)
    )


def start(plan: Plan, resume: list[checkpoint.Checkpoint] | None, say: Callable) -> Progress:
    """A fresh run's first state, or the state of the checkpoints it resumes from."""
    if resume is None:
        if checkpoint.latest(plan.out_dir) or checkpoint.seed_runs(plan.out_dir):
            raise UsageError(
                f"{plan.out_dir} already holds checkpoints: pass --resume to continue, "
                "or choose another --out"
            )
        return Progress(0, _placed(plan, [init_state(plan.mc, c) for c in plan.configs]), [], None)
    for cfg, ckpt in zip(plan.configs, resume, strict=True):
        checkpoint.check_vocab(ckpt, plan.vocab, "the data")
        _check_resume(plan.mc, cfg, ckpt)
    step = resume[0].step
    last = resume[0].path if plan.models == 1 else checkpoint.latest(plan.dirs[0])
    say(f"resuming from {last if plan.models == 1 else plan.out_dir} at step {step}")
    states = [state_from_checkpoint(c) for c in resume]
    return Progress(step, _placed(plan, states), [np.stack([c.losses for c in resume], 1)], last)


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


def save_all(
    plan: Plan, at: Progress, calibrated: list[dict[str, BNStats]] | None = None
) -> list[checkpoint.Checkpoint]:
    """Every model's checkpoint at the current step; process 0 writes them."""
    host = parallel.fetch(at.state)
    log_all = np.concatenate(at.losses) if at.losses else np.zeros((0, plan.models), np.float32)
    ckpts = []
    for k, (cfg, run_dir) in enumerate(zip(plan.configs, plan.dirs, strict=True)):
        mine = _model(host, k, plan.models)
        bn = mine.bn_running, calibrated[k] if calibrated else None
        opt_leaves = list(jax.tree.leaves(mine.opt_state))
        ckpt = checkpoint.Checkpoint(
            at.step, plan.mc, cfg, plan.vocab, dict(mine.params), *bn, opt_leaves, log_all[:, k]
        )
        ckpts.append(ckpt)
        if parallel.is_main_process():
            checkpoint.save(run_dir / checkpoint.filename(at.step), ckpts[-1])
    at.last_saved = plan.dirs[0] / checkpoint.filename(at.step)
    return ckpts


def run_chunk(plan: Plan, at: Progress, X: jax.Array, Y: jax.Array) -> np.ndarray:
    """Train one chunk, up to the next checkpoint or the end; advance `at`; its losses (n, K)."""
    every = plan.configs[0].checkpoint_every
    n = min(plan.configs[0].chunk_steps, plan.steps - at.step, every - at.step % every)
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
) -> TrainResult:
    """Train on (X, Y), checkpointing into out_dir; returns the final, calibrated checkpoints.

    `seeds` > 1 trains that many models at once (seeds tc.seed, tc.seed + 1, ...), each into its
    own out_dir/seed-<seed>; `devices` (parallel.RunPlan) spreads the models, or one model's
    batch. `resume`: True, or the run's latest checkpoints already loaded (checkpoint.load_run).
    Only process 0 writes. `backward`, an exercise-1 function (see `_loss_and_grads`), replaces
    the fused backward; it runs on one device.
    """
    plan = plan_run(mc, tc, data, vocab, out_dir, parallel.RunPlan(seeds, devices), backward)
    say = log if parallel.is_main_process() else (lambda _: None)
    if resume is True:
        resume = checkpoint.load_run(plan.out_dir, plan.models)
    at = start(plan, resume or None, say)
    first = at.step
    X, Y = map(jnp.asarray, data) if plan.mesh is None else parallel.place(data, plan.mesh)
    bar = _progress(plan.steps, at.step, progress and parallel.is_main_process())
    with _Stop() as stop:
        while at.step < plan.steps and not stop.requested():
            losses = run_chunk(plan, at, X, Y)
            bar.update(len(losses))
            bar.set_postfix(loss=f"{losses.mean():.4f}")
            if at.step % tc.checkpoint_every == 0 and at.step < plan.steps:
                save_all(plan, at)
                (bar.write if progress else say)(_saved_line(plan, at, losses))
        bar.close()
        # A signal from here on waits for the last checkpoint (the calibration takes seconds)
        calibrated = None if at.step < plan.steps else _calibrate(plan, at, data[0])
        final = save_all(plan, at, calibrated=calibrated)
        _plot_all(at.losses, plan.dirs)
    if stop.signum is not None:  # stopped by a signal: saved; say how to resume, or that it ended
        raise Interrupted(_stopped(stop.signum, at.step, plan), stop.signum)
    paths = [d / checkpoint.filename(at.step) for d in plan.dirs]
    return TrainResult(final, paths, at.train_seconds, at.compile_seconds, at.step - first)


def _calibrate(plan: Plan, at: Progress, X: np.ndarray) -> list[dict[str, BNStats]]:
    """Each model's BatchNorm statistics over the whole train split (registry.calibrate)."""
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
        self._handlers = _handling(self._record)  # installed while the loop runs

    def __enter__(self) -> _Stop:
        self._handlers.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self._handlers.__exit__(None, None, None)  # the previous handlers back

    def _record(self, signum: int, frame: object) -> None:
        self.signum = signum

    def requested(self) -> bool:
        """Whether to stop before the next chunk; asked once per chunk."""
        if jax.process_count() > 1 and multihost_utils.reached_preemption_sync_point(self._chunks):
            self.signum = signal.SIGTERM
        self._chunks += 1
        return self.signum is not None


@contextmanager
def _handling(handler: Callable[[int, object], None]) -> Iterator[None]:
    """Ctrl-C and SIGTERM to `handler` for a while, in one process (in a multi-process run,
    SIGTERM belongs to JAX's preemption service); nothing off the main thread, which cannot."""
    mine = [signal.SIGINT] + ([signal.SIGTERM] if jax.process_count() == 1 else [])
    on_main = threading.current_thread() is threading.main_thread()
    previous = {s: signal.signal(s, handler) for s in mine} if on_main else {}
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


def _how(signum: int) -> str:
    return "interrupted" if signum == signal.SIGINT else f"stopped by {signal.Signals(signum).name}"


def _complete(signum: int, step: int, paths: list[Path], out_dir: str | os.PathLike) -> str:
    """The one line of a signal that came once the final checkpoints were written."""
    where = paths[0] if len(paths) == 1 else f"{out_dir}/seed-*/"
    return (
        f"{_how(signum)} after the last step ({step}): the run is complete and saved in {where}; "
        f"`jaxninja eval --checkpoint {paths[0].parent}` gives its split losses"
    )


@contextmanager
def reporting(result: TrainResult, out_dir: str | os.PathLike) -> Iterator[None]:
    """While a finished run is reported (its split losses take seconds), Ctrl-C or SIGTERM end
    the report with the line that says the run is complete, not with silence or a bare
    'interrupted'."""

    def handler(signum: int, frame: object) -> None:
        step = result.checkpoints[0].step
        raise Interrupted(_complete(signum, step, result.paths, out_dir), signum)

    with _handling(handler):
        yield


def _stopped(signum: int, step: int, plan: Plan) -> str:
    """The one line of a run stopped by a signal: where it saved, and how to resume."""
    how = _how(signum)
    saved = plan.dirs[0] / checkpoint.filename(step)
    if step == plan.steps:  # it came after the last chunk: the final checkpoint is written
        return _complete(
            signum, step, [d / checkpoint.filename(step) for d in plan.dirs], plan.out_dir
        )
    if jax.process_count() > 1:
        who = "saved " if parallel.is_main_process() else "process 0 saved "
        return (
            f"{how} at step {step} with every process: {who}{saved}; "
            "to continue, start every process again with its flags and --resume"
        )
    many = f" --seeds {plan.models}" if plan.models > 1 else ""
    others = " and the other seeds" if plan.models > 1 else ""
    return (
        f"{how} at step {step}: saved {saved}{others}; continue with "
        f"`jaxninja train --out {plan.out_dir}{many} --resume`"
    )


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


def _plot_all(losses: list[np.ndarray], dirs: tuple[Path, ...]) -> None:
    if not parallel.is_main_process():
        return
    log_all = np.concatenate(losses) if losses else np.zeros((0, len(dirs)))
    for k, d in enumerate(dirs):
        plot_losses(log_all[:, k], d / PLOT)


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


PLOT = "loss.png"  # in each run directory
_STAMP = "jaxninja"  # a text chunk in the PNG: a plot a run wrote, which a later run may replace


def _our_plot(path: Path) -> bool:
    """Whether the file at `path` is a loss plot a jaxninja run wrote (its PNG text says so)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            return getattr(image, "text", {}).get(_STAMP) == "loss plot"
    except (OSError, UnidentifiedImageError, ValueError):
        return False


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
            fig.savefig(tmp, dpi=100, metadata={_STAMP: "loss plot"})
    finally:
        plt.close(fig)
