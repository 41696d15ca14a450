"""Part 5's WaveNet (makemore_part5_cnn1): a stack of layers.py's layers, each with its own
hand-written backward, composed in reverse. No jax.grad here.

The lecture's hierarchy at block size 8: Embedding, then three stages of FlattenConsecutive(2)
-> Linear (no bias) -> BatchNorm1d -> Tanh, each fusing pairs of neighbours (8 -> 4 -> 2 -> 1
positions), then Linear(n_hidden, vocab) with its weight scaled by 0.1. The stages follow the
block size (log2 of it: config.py refuses one that does not reduce to 1). Layers are named as the
lecture's list reads (`embedding`, `flatten1`, `linear1`, `bn1`, `tanh1`, ..., `linear4`),
parameters `linear1.weight`, `bn1.gamma`, ...; BatchNorm runs over every axis but the last, the
lecture's fix for (B, T, C) inputs.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import lru_cache

import jax
import jax.numpy as jnp
import numpy as np

from jaxninja import memory
from jaxninja.config import WAVENET_FLATTEN, ModelConfig
from jaxninja.models import layers
from jaxninja.models.layers import Layer

Params = dict[str, jax.Array]


def n_stages(cfg: ModelConfig) -> int:
    """FlattenConsecutive stages: each divides the context by WAVENET_FLATTEN, down to 1."""
    return round(math.log(cfg.block_size, WAVENET_FLATTEN))


@lru_cache(maxsize=64)
def stack(cfg: ModelConfig, axis_name: str | None = None) -> tuple[Layer, ...]:
    """The lecture's Sequential, for a batch sharded over `axis_name` (or not)."""
    out: list[Layer] = [layers.embedding("embedding", axis_name)]
    for i in range(1, n_stages(cfg) + 1):
        out += [
            layers.flatten_consecutive(f"flatten{i}", WAVENET_FLATTEN),
            layers.linear(f"linear{i}", bias=False, axis_name=axis_name),
            layers.batchnorm(f"bn{i}", cfg.eps, axis_name),
            layers.tanh(f"tanh{i}"),
        ]
    return (*out, layers.linear(f"linear{n_stages(cfg) + 1}", axis_name=axis_name))


def param_shapes(cfg: ModelConfig) -> dict[str, tuple[int, ...]]:
    V, E, H, n = cfg.vocab_size, cfg.n_embd, cfg.n_hidden, WAVENET_FLATTEN
    shapes = {"embedding.weight": (V, E)}
    for i in range(1, n_stages(cfg) + 1):
        shapes[f"linear{i}.weight"] = ((E if i == 1 else H) * n, H)
        shapes[f"bn{i}.gamma"] = shapes[f"bn{i}.beta"] = (H,)
    last = n_stages(cfg) + 1
    return {**shapes, f"linear{last}.weight": (H, V), f"linear{last}.bias": (V,)}


def bn_shapes(cfg: ModelConfig) -> dict[str, tuple[int, ...]]:
    """Each BatchNorm's statistics, (H,) as the lecture's running_mean."""
    return {f"bn{i}": (cfg.n_hidden,) for i in range(1, n_stages(cfg) + 1)}


def n_params(cfg: ModelConfig) -> int:
    return sum(math.prod(shape) for shape in param_shapes(cfg).values())  # 76,579 at block 8


def check_fits(cfg: ModelConfig) -> None:
    """An evaluation chunk holds, per example, the embeddings and every stage's hidden units."""
    floats = cfg.block_size * (cfg.n_embd + 2 * cfg.n_hidden) + cfg.vocab_size
    memory.check_model(cfg, n_params(cfg), floats)


def init_params(cfg: ModelConfig, seed: int) -> dict[str, np.ndarray]:
    """The lecture's initialisation, seeded: Embedding randn, Linear randn / sqrt(fan_in) with a
    zero bias, the last weight scaled by 0.1, BatchNorm's gamma 1 and beta 0. Drawn in float64
    from one numpy generator in the stack's order, then cast."""
    check_fits(cfg)
    rng = np.random.default_rng([seed, 0])
    params = {}
    for name, shape in param_shapes(cfg).items():
        if name.endswith(".weight"):
            fan_in = 1 if name.startswith("embedding") else shape[0]
            params[name] = rng.standard_normal(shape) / fan_in**0.5
        else:  # gamma 1; beta and bias 0
            params[name] = np.full(shape, 1.0 if name.endswith(".gamma") else 0.0)
    params[f"linear{n_stages(cfg) + 1}.weight"] *= 0.1  # less confident at initialisation
    return {k: v.astype(cfg.dtype) for k, v in params.items()}


def check_params(cfg: ModelConfig, seed: int) -> dict[str, np.ndarray]:
    """The lecture's initialisation with gamma, beta and the bias moved off 1 and 0, so that a
    backward that forgets one (a gain dropped, a zero where a bias gradient goes) cannot pass:
    the notebook's own warning about wrong-but-zero gradients."""
    params = {k: v.astype(np.float64) for k, v in init_params(cfg, seed).items()}
    rng = np.random.default_rng([seed, 2])
    for name, x in params.items():
        if not name.endswith(".weight"):
            params[name] = x + 0.1 * rng.standard_normal(x.shape)
    return {k: v.astype(cfg.dtype) for k, v in params.items()}


def with_backwards(net: tuple[Layer, ...], **backwards: Callable) -> tuple[Layer, ...]:
    """The stack with other code in the seat of a kind of layer's backward, by the layers' name
    without its index: `flatten=fn(dout, cache) -> (dparams, dx)`, `bn=...` (a learner's, or
    a mutation in the tests)."""
    kinds = {layer.name.rstrip("0123456789") for layer in net}
    if unknown := set(backwards) - kinds:
        raise ValueError(f"no layer of kind {sorted(unknown)} in the stack ({sorted(kinds)})")
    return tuple(
        layer._replace(backward=backwards.get(layer.name.rstrip("0123456789"), layer.backward))
        for layer in net
    )


def loss_and_grads(
    cfg: ModelConfig, axis_name: str | None = None, net: tuple[Layer, ...] | None = None
) -> Callable:
    """(params, Xb, Yb) -> (loss, every gradient of the stack's backward, the BatchNorms' batch
    statistics): the stack forward, cross-entropy, and the caches walked in reverse. `net`: the
    stack to run (with_backwards), else the model's own."""
    net = stack(cfg, axis_name) if net is None else net

    def run(params: Params, Xb: jax.Array, Yb: jax.Array):
        logits, caches = layers.stack_forward(net, params, Xb)  # (B, V)
        loss, c_ce = layers.cross_entropy_forward(logits, Yb, axis_name)
        dlogits = layers.cross_entropy_backward(1.0, c_ce, axis_name)  # (B, V)
        grads = layers.stack_backward(net, dlogits, caches)
        return loss, grads, layers.batch_stats(net, caches)

    return run


def forward_tapped(
    cfg: ModelConfig, params: Params, Xb: jax.Array, Yb: jax.Array, taps: Params
) -> jax.Array:
    """The training forward's loss with a zero-valued tap added to every layer's output: d loss
    / d tap is the gradient of that output (the jax.grad reference of the check)."""
    x = Xb
    for layer in stack(cfg):
        x = layer.forward(layers.own(params, layer), x)[0] + taps[layer.name]
    return layers.cross_entropy_forward(x, Yb)[0]


def grads_autodiff(cfg: ModelConfig, params: Params, Xb: jax.Array, Yb: jax.Array) -> Params:
    """jax.grad of the loss w.r.t. every parameter and every layer's output."""
    outs = output_shapes(cfg, len(Xb))
    taps = {k: jnp.zeros(s, params["embedding.weight"].dtype) for k, s in outs.items()}
    dparams, dtaps = jax.grad(lambda p, t: forward_tapped(cfg, p, Xb, Yb, t), (0, 1))(params, taps)
    return {**dtaps, **dparams}


def output_shapes(cfg: ModelConfig, batch_size: int) -> dict[str, tuple[int, ...]]:
    """Every layer's output shape for a batch, in the stack's order."""
    x = jax.ShapeDtypeStruct((batch_size, cfg.block_size), jnp.int32)
    shapes = {}
    params = {k: jax.ShapeDtypeStruct(s, jnp.float32) for k, s in param_shapes(cfg).items()}
    for layer in stack(cfg):
        x = jax.eval_shape(lambda p, a, f=layer.forward: f(p, a)[0], layers.own(params, layer), x)
        shapes[layer.name] = tuple(x.shape)
    return shapes


def grad_order(cfg: ModelConfig) -> tuple[str, ...]:
    """The rows of a check in the order the backward makes them: each layer's output, then its
    parameters, from the last layer to the first (the notebook's cmp order, for a stack)."""
    return tuple(
        name
        for layer in reversed(stack(cfg))
        for name in (layer.name, *(f"{layer.name}.{k}" for k in layer.params))
    )


@lru_cache(maxsize=64)
def eval_fns(cfg: ModelConfig) -> tuple[Callable, dict[str, Callable]]:
    """(logits, {BatchNorm name: its input}), each (params, bn, X): the inference forward on
    fixed statistics, for evaluate.py; made once per config so that its jit caches them."""
    net = stack(cfg)

    def logits(params, bn, X):
        return layers.stack_infer(net, params, bn, X)

    def bn_input(name):
        return lambda params, bn, X: layers.stack_infer(net, params, bn, X, until=name)

    return logits, {name: bn_input(name) for name in bn_shapes(cfg)}
