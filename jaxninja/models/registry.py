"""The models, and what train, checkpoint, eval, sample and check ask of each: nothing else in
them names a model's parameters.

A `Model` is a handful of functions of the config: the parameters' shapes and their seeded
initialisation, the BatchNorms' statistics' shapes, the loss and the parameters' gradients from
the model's hand-written backward (with the batch's BatchNorm statistics, for the running ones),
the same by jax.grad (the control a run can train on instead), the inference functions
evaluate.py streams, how sampling reads the logits, and the data it trains on: the notebook's
context windows (the MLP, the WaveNet: one target a row) or makemore's padded rows (the GPT: a
target a position, -1 where none). BatchNorm statistics are a dict by BatchNorm name (`bn` for
the MLP's one; `bn1`, `bn2`, ... for the WaveNet's; none for the GPT).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxninja import data
from jaxninja.config import ModelConfig
from jaxninja.models import evaluate, gpt, layers, mlp, wavenet
from jaxninja.models.layers import BNStats
from jaxninja.models.mlp_backward import backward_fused


class Model(NamedTuple):
    name: str
    param_shapes: Callable[[ModelConfig], dict[str, tuple[int, ...]]]
    bn_shapes: Callable[[ModelConfig], dict[str, tuple[int, ...]]]
    init_params: Callable[[ModelConfig, int], dict[str, np.ndarray]]  # (cfg, seed), checks fit
    check_fits: Callable[[ModelConfig], None]
    # (cfg, axis_name) -> (params, Xb, Yb) -> (loss, gradients of at least the params, batch stats)
    loss_and_grads: Callable[[ModelConfig, str | None], Callable]
    # cfg -> (logits, {bn name: its input}), each (params, bn, X), stable for jit; the logits
    # (N, V) of context windows, or (N, T, V) of rows
    eval_fns: Callable[[ModelConfig], tuple[Callable, dict[str, Callable]]]
    # (cfg, axis_name) -> what loss_and_grads gives, its gradients by jax.grad (--gradients)
    loss_and_grads_autodiff: Callable[[ModelConfig, str | None], Callable]
    n_params: Callable[[ModelConfig], int]  # every parameter, counted
    rows: bool = False  # trains on makemore's rows (data.rows_from_words), not context windows


def _mlp_loss_and_grads(cfg: ModelConfig, axis_name: str | None = None) -> Callable:
    def run(params, Xb, Yb):
        loss, cache = mlp.forward(params, Xb, Yb, cfg.eps, axis_name)
        stats = {"bn": BNStats(cache.bn.bnmean, cache.bn.bnvar)}
        return loss, backward_fused(cache, axis_name=axis_name), stats

    return run


def _mlp_autodiff(cfg: ModelConfig, axis_name: str | None = None) -> Callable:
    def loss(params, Xb, Yb):
        value, cache = mlp.forward(params, Xb, Yb, cfg.eps, axis_name)
        return value, {"bn": BNStats(cache.bn.bnmean, cache.bn.bnvar)}

    return _autodiff(loss)


def _wavenet_autodiff(cfg: ModelConfig, axis_name: str | None = None) -> Callable:
    net = wavenet.stack(cfg, axis_name)

    def loss(params, Xb, Yb):
        logits, caches = layers.stack_forward(net, params, Xb)
        loss, _ = layers.cross_entropy_forward(logits, Yb, axis_name)
        return loss, layers.batch_stats(net, caches)

    return _autodiff(loss)


def _gpt_autodiff(cfg: ModelConfig, axis_name: str | None = None) -> Callable:
    def loss(params, X, Y):
        return gpt.forward_loss(cfg, params, X, Y, axis_name), {}

    return _autodiff(loss)


def _autodiff(loss: Callable) -> Callable:
    """(params, X, Y) -> (loss, jax.grad's gradients, batch statistics), of `loss` -> (value,
    statistics). Under a data axis the parameters are the same on every device, so jax.grad's
    transpose of their use sums the devices' parts: the global batch's gradient."""

    def run(params, X, Y):
        (value, stats), grads = jax.value_and_grad(loss, has_aux=True)(params, X, Y)
        return value, grads, stats

    return run


MODELS = {
    "mlp": Model(
        "mlp", mlp.param_shapes, mlp.bn_shapes, mlp.init_params, mlp.check_fits,
        _mlp_loss_and_grads, lambda cfg: mlp.eval_fns(cfg.eps), _mlp_autodiff, mlp.n_params,
    ),
    "wavenet": Model(
        "wavenet", wavenet.param_shapes, wavenet.bn_shapes, wavenet.init_params,
        wavenet.check_fits, wavenet.loss_and_grads, wavenet.eval_fns, _wavenet_autodiff,
        wavenet.n_params,
    ),
    "gpt": Model(
        "gpt", gpt.param_shapes, gpt.bn_shapes, gpt.init_params, gpt.check_fits,
        gpt.loss_and_grads, gpt.eval_fns, _gpt_autodiff, gpt.n_params, rows=True,
    ),
}  # fmt: skip


def of(cfg: ModelConfig) -> Model:
    """The model a config describes (ModelConfig has checked the name)."""
    return MODELS[cfg.model]


def to_device(params: dict[str, np.ndarray]) -> dict[str, jax.Array]:
    return {k: jnp.asarray(v) for k, v in params.items()}


def zero_stats(cfg: ModelConfig) -> dict[str, BNStats]:
    """Running statistics at the start of training: mean 0, variance 1."""
    return {
        k: BNStats(jnp.zeros(s, cfg.dtype), jnp.ones(s, cfg.dtype))
        for k, s in of(cfg).bn_shapes(cfg).items()
    }


def calibrate(cfg: ModelConfig, params: dict[str, jax.Array], X: np.ndarray) -> dict[str, BNStats]:
    """Every BatchNorm's statistics over the whole of X (evaluate.calibrate)."""
    m = of(cfg)
    return evaluate.calibrate(m.eval_fns(cfg)[1], m.bn_shapes(cfg), params, X)


def split_loss(
    cfg: ModelConfig, params: dict[str, jax.Array], bn: dict[str, BNStats], X, Y
) -> float:
    """Mean cross-entropy over a whole split in inference mode (evaluate.split_loss)."""
    return evaluate.split_loss(of(cfg).eval_fns(cfg)[0], params, bn, X, Y)


def logits(cfg: ModelConfig) -> Callable:
    """(params, bn, X) -> inference logits, (N, V) or, for rows, (N, T, V); stable for jit."""
    return of(cfg).eval_fns(cfg)[0]


def splits(cfg: ModelConfig, words: list[str]) -> data.Splits:
    """The three splits the model trains and evaluates on: context windows or rows, of
    cfg.block_size."""
    build = data.rows_from_words if of(cfg).rows else data.splits_from_words
    return build(words, cfg.block_size)


def data_block_size(model: str, words: list[str]) -> int | None:
    """The block size the data gives a model trained on rows (makemore's longest word + 1), or
    None: the model's own default."""
    return data.row_block_size(words) if MODELS[model].rows else None


@lru_cache(maxsize=64)
def sampler(cfg: ModelConfig) -> tuple[Callable, int, int]:
    """How sampling reads a model: (logits_at(params, bn, window (n, T), last) -> the logits
    (n, V) of the window's position `last`, the number of start tokens, the most tokens a
    name may take). Context windows start full of '.' and always read their last position, up
    to 64 characters; rows start with the one start token and read the position of their latest
    token, up to block_size tokens (makemore's generate, which crops to the block size)."""
    logits_fn = logits(cfg)
    if not of(cfg).rows:
        return (lambda params, bn, window, last: logits_fn(params, bn, window)), cfg.block_size, 64

    def logits_at(params, bn, window, last):  # causal: the positions after `last` do not count
        return jax.lax.dynamic_index_in_dim(logits_fn(params, bn, window), last, 1, False)

    return logits_at, 1, cfg.block_size
