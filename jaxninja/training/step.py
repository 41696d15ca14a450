"""One training step on the hand-written backward, and the jitted chunk of steps the loop runs.

Each step draws its batch from `fold_in(key, step)`, runs the model's forward and its fused
hand-written backward (no jax.grad; `--gradients autodiff` takes jax.grad's instead, the
control), and applies the gradients with optax (`sgd`, the notebook's, `adam`, or `adamw`,
makemore's). Steps run in chunks under one jitted `lax.scan`, so there is no Python
work per step; a rows model's step (the GPT's) runs on the positions its batch uses (_trimmed).
A step's batch and learning rate depend only on the step number, so a run resumed from a
checkpoint ends bit-identical to one that never stopped.

The same step scales out unchanged (parallel.py): vmapped over many seeds at once, their models
split across devices, or one model's batch split across devices and processes, with the
BatchNorm statistics and the gradients all-reduced inside the hand-written backward.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import replace
from functools import lru_cache, partial
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh
from jax.sharding import PartitionSpec as P

from jaxninja.config import ModelConfig, TrainConfig
from jaxninja.data import IGNORE
from jaxninja.errors import UsageError
from jaxninja.models import registry
from jaxninja.models.layers import BNStats
from jaxninja.models.mlp import forward_chunked
from jaxninja.training import checkpoint
from jaxninja.training.parallel import DATA, SEEDS

Params = dict[str, jax.Array]
# the lengths, in eighths of block_size, a rows model's step may run on besides all of it
# (_trimmed): on names.txt (block 16) a batch of 32 words needs at most 10 positions in 56% of
# steps, at most 12 in 93%; a length of 14 would save 1% more work for one more compiled branch
TRIM_EIGHTHS = (5, 6)


class TrainState(NamedTuple):
    params: Params
    opt_state: Any
    bn_running: dict[str, BNStats]  # by BatchNorm name


def make_optimizer(tc: TrainConfig, dtype: str) -> optax.GradientTransformation:
    """The notebook's step schedule (lr, then lr * lr_decay from lr_decay_step) in optax: SGD,
    Adam, or AdamW with decoupled weight decay on every parameter (torch.optim.AdamW's, which
    makemore's configure_optimizers uses: lr * weight_decay * p taken off before the Adam
    step, which optax.adamw matches to float64 rounding)."""
    lr0, lr1 = jnp.asarray(tc.lr, dtype), jnp.asarray(tc.lr_decayed, dtype)

    def schedule(count: jax.Array) -> jax.Array:
        return jnp.where(count < tc.lr_decay_step, lr0, lr1)

    if tc.optimizer == "sgd":
        return optax.sgd(schedule)
    adam = {"b1": tc.beta1, "b2": tc.beta2, "eps": tc.adam_eps}
    if tc.optimizer == "adam":
        return optax.adam(schedule, **adam)
    return optax.adamw(schedule, **adam, weight_decay=tc.weight_decay)


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


def _loss_and_grads(
    mc: ModelConfig, axis_name: str | None, backward: Callable | None, autodiff: bool = False
) -> Callable:
    """(params, Xb, Yb) -> (loss, the parameters' gradients, the batch's BatchNorm statistics).

    The model's own hand-written backward (registry.py), or with `autodiff` jax.grad of its
    forward (the control); or, with `backward` (the MLP's exercise-1 function,
    `fn(params, v, Xb, Yb) -> dict`, e.g. a learner's), the chunked forward and that backward.
    """

    def atomic(params, Xb, Yb):
        loss, v = forward_chunked(params, Xb, Yb, eps=mc.eps)
        return loss, backward(params, v, Xb, Yb), {"bn": BNStats(v["bnmeani"], v["bnvar"])}

    if backward is not None:
        return atomic
    model = registry.of(mc)
    return (model.loss_and_grads_autodiff if autodiff else model.loss_and_grads)(mc, axis_name)


def trim_lengths(block_size: int) -> list[int]:
    """The lengths a rows model's step may run on: TRIM_EIGHTHS of block_size, and all of it."""
    return sorted({-(-block_size * f // 8) for f in TRIM_EIGHTHS} | {block_size})


def positions_needed(Y: jax.Array) -> jax.Array:
    """The positions a batch of rows (B, T) needs: 1 + the last one whose target counts."""
    return jnp.max(jnp.where(Y != IGNORE, jnp.arange(1, Y.shape[-1] + 1)[None], 0))


def _trimmed(run: Callable, axis_name: str | None, block_size: int) -> Callable:
    """`run` (a rows model's loss_and_grads) on the batch's first T positions, T the shortest
    of trim_lengths(block_size) that holds every target the batch counts.

    Exact: attention is causal, so no counted position reads a later one, and the positions
    cut are padding whose target is IGNORE, so no loss reads them either; the loss, its count
    and every parameter's gradient are those of the whole rows (wpe's cut rows get zero, as
    they would). Under a data axis every device takes the length the whole batch needs."""
    lengths = trim_lengths(block_size)
    if len(lengths) == 1:
        return run

    def on(T: int) -> Callable:
        def branch(params, X, Y):
            loss, grads, stats = run(params, X[:, :T], Y[:, :T])
            return loss, {k: grads[k] for k in params}, stats

        return branch

    def trimmed(params, X, Y):  # X, Y (B, T)
        need = positions_needed(Y)
        need = need if axis_name is None else jax.lax.pmax(need, axis_name)
        which = jnp.searchsorted(jnp.asarray(lengths), need)
        return jax.lax.switch(which, [on(T) for T in lengths], params, X, Y)

    return trimmed


def _train_step(
    mc: ModelConfig,
    tc: TrainConfig,
    axis_name: str | None,
    backward: Callable | None = None,
    trim: bool = False,
) -> Callable:
    """One model's step: forward, manual backward, optax update, running BatchNorm stats; with
    `trim`, a rows model's step on the positions its batch uses (_trimmed)."""
    opt = make_optimizer(tc, mc.dtype)
    m = tc.bn_momentum
    loss_and_grads = _loss_and_grads(mc, axis_name, backward, tc.gradients == "autodiff")
    if trim and registry.of(mc).rows and backward is None:
        loss_and_grads = _trimmed(loss_and_grads, axis_name, mc.block_size)

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
_RUN_ONLY = ("steps", "chunk_steps", "checkpoint_every", "seed", "eval_every")


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
    # vmapped over seeds, a cond whose predicate differs by model would run both branches
    step = _train_step(mc, tc, data_axis, backward, tc.trim_rows and not many)

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
