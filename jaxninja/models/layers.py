"""Every layer, a forward that returns `(out, cache)` and a backward `(dout, cache)`; the stack.

Pure functions on arrays, as in llm.c's doc/layernorm/layernorm.py, shared by the part-4 MLP
(model.py) and the part-5 WaveNet (wavenet.py). The backwards are the fused ones of the notebook
(exercise 2 for cross-entropy, exercise 3 for BatchNorm); the op-by-op backward of exercise 1
lives in backward.py, next to the chunked forward it mirrors in model.py. Per-channel vectors are
broadcast explicitly (`along_last`): the tests run with jax_numpy_rank_promotion="raise".

A stack (the lecture's Sequential) is a tuple of `Layer`s, each the pair above in one shape,
`forward(params, x) -> (out, cache)` and `backward(dout, cache) -> (dparams, dx)`:
`stack_forward` keeps every layer's cache, `stack_backward` walks them in reverse.

Data parallel (train.py, under `shard_map`): the layers that reduce over the batch take an
`axis_name`; with one, each device holds a slice of the batch and their sums over it are
all-reduced (`psum`), so BatchNorm's statistics, their backward and the loss are those of the
global batch. With None (one device) the same code is the notebook's.
"""

import math
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp


def batch_axes(x: jax.Array) -> tuple[int, ...]:
    """The axes a batch statistic reduces: every axis but the last (the channels), so (B, C) over
    the batch and (B, T, C) over the batch and its positions, as the lecture's fixed BatchNorm1d."""
    return tuple(range(x.ndim - 1))


def batch_sum(x: jax.Array, axis_name: str | None) -> jax.Array:
    """Sum over the batch (every axis but the last, kept as 1-long axes), across devices too
    under `axis_name`."""
    s = x.sum(batch_axes(x), keepdims=True)
    return s if axis_name is None else jax.lax.psum(s, axis_name)


def batch_count(x: jax.Array, axis_name: str | None) -> int:
    """The global count of what `batch_sum` adds up: x's rows (and positions) times the number of
    devices sharing the batch."""
    n = math.prod(x.shape[:-1])
    return n * (1 if axis_name is None else jax.lax.axis_size(axis_name))


def _all_devices(grads: Any, axis_name: str | None) -> Any:
    """A weight's gradient is a sum over the examples: on a sharded batch, over every device's."""
    return grads if axis_name is None else jax.lax.psum(grads, axis_name)


def along_last(v: jax.Array, ndim: int) -> jax.Array:
    """A per-channel vector ((C,) or (1, C)) shaped to broadcast against an ndim-array: explicit,
    since the tests run with jax_numpy_rank_promotion="raise"."""
    return v.reshape((1,) * (ndim - 1) + (v.shape[-1],))


class EmbeddingCache(NamedTuple):
    X: jax.Array  # (B, T) int indices into C
    vocab_size: int


def embedding_forward(C: jax.Array, X: jax.Array) -> tuple[jax.Array, EmbeddingCache]:
    """Look up the context's embeddings: (B, T) -> emb (B, T, E)."""
    return C[X], EmbeddingCache(X, C.shape[0])


def embedding_backward(
    demb: jax.Array, cache: EmbeddingCache, axis_name: str | None = None
) -> jax.Array:
    """dC: every row of demb (B, T, E) scatter-added into the row of C it was read from."""
    dC = jnp.zeros((cache.vocab_size, demb.shape[-1]), demb.dtype).at[cache.X].add(demb)
    return _all_devices(dC, axis_name)  # (V, E)


def flatten_consecutive_forward(x: jax.Array, n: int) -> tuple[jax.Array, tuple[int, ...]]:
    """The lecture's FlattenConsecutive(n): (B, T, C) -> (B, T/n, C*n), n neighbours side by side;
    a length-1 time axis is squeezed, (B, 1, C*n) -> (B, C*n), as the lecture does. The cache is
    the input's shape: the backward is the reshape back."""
    B, T, C = x.shape
    out = x.reshape(B, T // n, C * n)
    return (out[:, 0] if T // n == 1 else out), x.shape


def flatten_consecutive_backward(dout: jax.Array, shape: tuple[int, ...]) -> jax.Array:
    """A reshape moves no value, so its backward is the reshape that undoes it: (B, T, C)."""
    return dout.reshape(shape)


class LinearCache(NamedTuple):
    x: jax.Array  # (..., I)
    W: jax.Array  # (I, O)


def linear_forward(
    x: jax.Array, W: jax.Array, b: jax.Array | None = None
) -> tuple[jax.Array, LinearCache]:
    """x @ W (+ b) over the last axis of x: (B, I) or (B, T, I) -> (..., O); b is optional, as
    the lecture's Linear(bias=False) before a BatchNorm."""
    out = x @ W
    return (out if b is None else out + along_last(b, out.ndim)), LinearCache(x, W)


def linear_backward(
    dout: jax.Array, cache: LinearCache, axis_name: str | None = None, bias: bool = True
) -> tuple[jax.Array, jax.Array, jax.Array | None]:
    """(dx, dW, db) of `x @ W + b` (db None without a bias). Every leading axis of x is a batch
    axis: dW sums over all of them, as a matmul of the flattened rows."""
    x2 = cache.x.reshape(-1, cache.x.shape[-1])  # (B*T, I)
    dout2 = dout.reshape(-1, dout.shape[-1])  # (B*T, O)
    dW, db = x2.T @ dout2, dout2.sum(0) if bias else None  # (I, O), (O,)
    dW, db = _all_devices((dW, db), axis_name)
    return dout @ cache.W.T, dW, db


class BatchNormCache(NamedTuple):
    bnraw: jax.Array  # (B, H) or (B, T, H): the normalized input
    bnvar_inv: jax.Array  # (1, H) or (1, 1, H)
    bngain: jax.Array  # (1, H) as the notebook's, or (H,) as the lecture's BatchNorm1d's gamma
    bnmean: jax.Array  # (1, H) or (1, 1, H): batch mean, kept for the running statistics
    bnvar: jax.Array  # likewise: Bessel-corrected batch variance


def batchnorm_forward(
    x: jax.Array, bngain: jax.Array, bnbias: jax.Array, eps: float, axis_name: str | None = None
) -> tuple[jax.Array, BatchNormCache]:
    """Training-mode BatchNorm with the notebook's unbiased (n-1) batch variance, over every axis
    but the last: (B, H), or (B, T, H) with n = B*T (the lecture's fixed BatchNorm1d).

    Two passes, as the notebook (mean, then the squared deviations from it): one all-reduce each
    when the batch is sharded.
    """
    n = batch_count(x, axis_name)
    bnmean = batch_sum(x, axis_name) / n  # (1, H)
    bndiff = x - bnmean  # (B, H)
    bnvar = batch_sum(bndiff**2, axis_name) / (n - 1)  # (1, H)
    bnvar_inv = (bnvar + eps) ** -0.5
    bnraw = bndiff * bnvar_inv  # (B, H)
    out = along_last(bngain, x.ndim) * bnraw + along_last(bnbias, x.ndim)
    return out, BatchNormCache(bnraw, bnvar_inv, bngain, bnmean, bnvar)


def batchnorm_backward(
    dhpreact: jax.Array, cache: BatchNormCache, axis_name: str | None = None
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """(dhprebn, dbngain, dbnbias), dhprebn in one expression (exercise 3); dbngain and dbnbias
    in bngain's shape.

    The n/(n-1) is Bessel's correction reaching the gradient through the variance. Its two batch
    sums are dbnbias and dbngain themselves: on a sharded batch, their all-reduces are all it needs.
    """
    n = batch_count(dhpreact, axis_name)
    bnraw, bnvar_inv = cache.bnraw, cache.bnvar_inv
    bngain = along_last(cache.bngain, dhpreact.ndim)  # (1, H)
    dbnbias = batch_sum(dhpreact, axis_name)  # (1, H)
    dbngain = batch_sum(dhpreact * bnraw, axis_name)  # (1, H)
    dhprebn = bngain * bnvar_inv / n * (n * dhpreact - dbnbias - n / (n - 1) * bnraw * dbngain)
    shape = cache.bngain.shape
    return dhprebn, dbngain.reshape(shape), dbnbias.reshape(shape)  # (B, H), (1, H), (1, H)


def batchnorm_eval(
    x: jax.Array,
    bngain: jax.Array,
    bnbias: jax.Array,
    bnmean: jax.Array,
    bnvar: jax.Array,
    eps: float,
) -> jax.Array:
    """Inference-mode BatchNorm with fixed statistics (calibrated or running), as the notebook's
    split_loss and sampling use it; every per-channel argument in its own shape."""
    gain, bias, mean, var = (along_last(v, x.ndim) for v in (bngain, bnbias, bnmean, bnvar))
    return gain * (x - mean) * (var + eps) ** -0.5 + bias


def tanh_forward(x: jax.Array) -> tuple[jax.Array, jax.Array]:
    h = jnp.tanh(x)
    return h, h


def tanh_backward(dh: jax.Array, h: jax.Array) -> jax.Array:
    return (1.0 - h**2) * dh


class CrossEntropyCache(NamedTuple):
    logits: jax.Array  # (B, V)
    Y: jax.Array  # (B,) int targets


def cross_entropy_forward(
    logits: jax.Array, Y: jax.Array, axis_name: str | None = None
) -> tuple[jax.Array, CrossEntropyCache]:
    """Mean negative log-likelihood of the targets (over the global batch under `axis_name`)."""
    logprobs = jax.nn.log_softmax(logits, axis=1)  # (B, V)
    picked = jnp.take_along_axis(logprobs, Y[:, None], axis=1)  # (B, 1)
    loss = -batch_sum(picked, axis_name)[0, 0] / batch_count(picked, axis_name)
    return loss, CrossEntropyCache(logits, Y)


def cross_entropy_backward(
    dloss: jax.Array, cache: CrossEntropyCache, axis_name: str | None = None
) -> jax.Array:
    """dlogits = (softmax - one_hot) / n (exercise 2), n the global batch size."""
    logits, Y = cache.logits, cache.Y
    n, V = batch_count(logits, axis_name), logits.shape[1]
    onehot = jax.nn.one_hot(Y, V, dtype=logits.dtype)  # (B, V)
    return (jax.nn.softmax(logits, axis=1) - onehot) * (dloss / n)


# --- the stack ---------------------------------------------------------------------------------


class Layer(NamedTuple):
    """One layer of a stack: its name (`linear1`), its parameters' names within it (`weight`),
    and its pair; `infer` is BatchNorm's inference forward (params, x, stats) -> out, None for a
    layer that trains and infers alike."""

    name: str
    params: tuple[str, ...]
    forward: Callable[[dict, jax.Array], tuple[jax.Array, Any]]
    backward: Callable[[jax.Array, Any], tuple[dict, jax.Array]]
    infer: Callable | None = None


class BNStats(NamedTuple):
    """A BatchNorm's statistics for inference: calibrated over the train split, or running."""

    mean: jax.Array  # the gain's shape: (1, H) in the MLP, (H,) in the WaveNet
    var: jax.Array  # likewise; Bessel-corrected


def embedding(name: str, axis_name: str | None = None) -> Layer:
    def backward(demb, cache):
        return {"weight": embedding_backward(demb, cache, axis_name)}, None  # X gets none

    return Layer(name, ("weight",), lambda p, X: embedding_forward(p["weight"], X), backward)


def flatten_consecutive(name: str, n: int) -> Layer:
    def backward(dout, shape):
        return {}, flatten_consecutive_backward(dout, shape)

    return Layer(name, (), lambda p, x: flatten_consecutive_forward(x, n), backward)


def linear(name: str, bias: bool = True, axis_name: str | None = None) -> Layer:
    def forward(p, x):
        return linear_forward(x, p["weight"], p["bias"] if bias else None)

    def backward(dout, cache):
        dx, dW, db = linear_backward(dout, cache, axis_name, bias)
        return ({"weight": dW, "bias": db} if bias else {"weight": dW}), dx

    return Layer(name, ("weight", "bias") if bias else ("weight",), forward, backward)


def batchnorm(name: str, eps: float, axis_name: str | None = None) -> Layer:
    def forward(p, x):
        return batchnorm_forward(x, p["gamma"], p["beta"], eps, axis_name)

    def backward(dout, cache):
        dx, dgamma, dbeta = batchnorm_backward(dout, cache, axis_name)
        return {"gamma": dgamma, "beta": dbeta}, dx

    def infer(p, x, stats: BNStats):
        return batchnorm_eval(x, p["gamma"], p["beta"], *stats, eps)

    return Layer(name, ("gamma", "beta"), forward, backward, infer)


def tanh(name: str) -> Layer:
    return Layer(name, (), lambda p, x: tanh_forward(x), lambda dh, h: ({}, tanh_backward(dh, h)))


def own(params: dict[str, jax.Array], layer: Layer) -> dict[str, jax.Array]:
    """A layer's parameters out of the stack's flat dict (`linear1.weight` -> `weight`)."""
    return {k: params[f"{layer.name}.{k}"] for k in layer.params}


def stack_forward(
    stack: tuple[Layer, ...], params: dict[str, jax.Array], x: jax.Array
) -> tuple[jax.Array, list[Any]]:
    """Every layer in order; the output and every layer's cache."""
    caches = []
    for layer in stack:
        x, cache = layer.forward(own(params, layer), x)
        caches.append(cache)
    return x, caches


def stack_backward(
    stack: tuple[Layer, ...], dout: jax.Array, caches: list[Any]
) -> dict[str, jax.Array]:
    """The caches walked in reverse: the gradient of every layer's output (by the layer's name)
    and of every parameter (`name.param`)."""
    grads = {}
    for layer, cache in zip(reversed(stack), reversed(caches), strict=True):
        grads[layer.name] = dout
        dparams, dout = layer.backward(dout, cache)
        grads.update({f"{layer.name}.{k}": g for k, g in dparams.items()})
    return grads


def batch_stats(stack: tuple[Layer, ...], caches: list[Any]) -> dict[str, BNStats]:
    """Each BatchNorm's batch statistics of a forward, in its gain's shape, for the running ones."""
    return {
        layer.name: BNStats(*(s.reshape(c.bngain.shape) for s in (c.bnmean, c.bnvar)))
        for layer, c in zip(stack, caches, strict=True)
        if isinstance(c, BatchNormCache)
    }


def stack_infer(
    stack: tuple[Layer, ...],
    params: dict[str, jax.Array],
    bn: dict[str, BNStats],
    x: jax.Array,
    until: str | None = None,
) -> jax.Array:
    """The inference forward, every BatchNorm on its fixed statistics `bn`; with `until`, the
    input of that layer (to calibrate it, the layers before it on theirs)."""
    for layer in stack:
        if layer.name == until:
            return x
        p = own(params, layer)
        x = layer.forward(p, x)[0] if layer.infer is None else layer.infer(p, x, bn[layer.name])
    return x
