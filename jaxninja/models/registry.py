"""The models, and what train, checkpoint, eval, sample and check ask of each: nothing else in
them names a model's parameters.

A `Model` is a handful of functions of the config: the parameters' shapes and their seeded
initialisation, the BatchNorms' statistics' shapes, the loss and the parameters' gradients from
the model's hand-written backward (with the batch's BatchNorm statistics, for the running ones),
and the inference functions evaluate.py streams. BatchNorm statistics are a dict by BatchNorm
name (`bn` for the MLP's one; `bn1`, `bn2`, ... for the WaveNet's).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxninja.config import ModelConfig
from jaxninja.models import evaluate, mlp, wavenet
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
    # cfg -> (logits, {bn name: its input}), each (params, bn, X), stable for jit
    eval_fns: Callable[[ModelConfig], tuple[Callable, dict[str, Callable]]]


def _mlp_loss_and_grads(cfg: ModelConfig, axis_name: str | None = None) -> Callable:
    def run(params, Xb, Yb):
        loss, cache = mlp.forward(params, Xb, Yb, cfg.eps, axis_name)
        stats = {"bn": BNStats(cache.bn.bnmean, cache.bn.bnvar)}
        return loss, backward_fused(cache, axis_name=axis_name), stats

    return run


MODELS = {
    "mlp": Model(
        "mlp", mlp.param_shapes, mlp.bn_shapes, mlp.init_params, mlp.check_fits,
        _mlp_loss_and_grads, lambda cfg: mlp.eval_fns(cfg.eps),
    ),
    "wavenet": Model(
        "wavenet", wavenet.param_shapes, wavenet.bn_shapes, wavenet.init_params,
        wavenet.check_fits, wavenet.loss_and_grads, wavenet.eval_fns,
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
    """(params, bn, X) -> inference logits (N, V), stable for jit."""
    return of(cfg).eval_fns(cfg)[0]
