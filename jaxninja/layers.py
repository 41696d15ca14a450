"""The model's layers, each a forward that returns `(out, cache)` and a backward `(dout, cache)`.

Pure functions on arrays, as in llm.c's doc/layernorm/layernorm.py. The backwards are the fused
ones of the notebook (exercise 2 for cross-entropy, exercise 3 for BatchNorm); the op-by-op
backward of exercise 1 lives in backward.py, next to the chunked forward it mirrors in model.py.
Biases are 1-D as in the notebook, so they are broadcast with an explicit `[None, :]`: the tests
run with jax_numpy_rank_promotion="raise".

Data parallel (train.py, under `shard_map`): the layers that reduce over the batch take an
`axis_name`; with one, each device holds a slice of the batch and their sums over it are
all-reduced (`psum`), so BatchNorm's statistics, their backward and the loss are those of the
global batch. With None (one device) the same code is the notebook's.
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp


def batch_sum(x: jax.Array, axis_name: str | None) -> jax.Array:
    """Sum over the batch (axis 0, kept as a 1-row axis), across devices too under `axis_name`."""
    s = x.sum(0, keepdims=True)
    return s if axis_name is None else jax.lax.psum(s, axis_name)


def batch_count(x: jax.Array, axis_name: str | None) -> int:
    """The global batch size: x's rows times the number of devices sharing the batch."""
    return x.shape[0] * (1 if axis_name is None else jax.lax.axis_size(axis_name))


class EmbeddingCache(NamedTuple):
    X: jax.Array  # (B, T) int indices into C
    vocab_size: int


def embedding_forward(C: jax.Array, X: jax.Array) -> tuple[jax.Array, EmbeddingCache]:
    """Look up and concatenate the context's embeddings: (B, T) -> embcat (B, T*E)."""
    emb = C[X]  # (B, T, E)
    return emb.reshape(emb.shape[0], -1), EmbeddingCache(X, C.shape[0])


def embedding_backward(dembcat: jax.Array, cache: EmbeddingCache) -> jax.Array:
    """dC: every row of demb scatter-added into the row of C it was read from."""
    B, T = cache.X.shape
    demb = dembcat.reshape(B, T, -1)  # (B, T, E)
    return jnp.zeros((cache.vocab_size, demb.shape[-1]), demb.dtype).at[cache.X].add(demb)


class LinearCache(NamedTuple):
    x: jax.Array  # (B, I)
    W: jax.Array  # (I, O)


def linear_forward(x: jax.Array, W: jax.Array, b: jax.Array) -> tuple[jax.Array, LinearCache]:
    return x @ W + b[None, :], LinearCache(x, W)  # (B, O)


def linear_backward(dout: jax.Array, cache: LinearCache) -> tuple[jax.Array, jax.Array, jax.Array]:
    """(dx, dW, db) of `x @ W + b`."""
    return dout @ cache.W.T, cache.x.T @ dout, dout.sum(0)


class BatchNormCache(NamedTuple):
    bnraw: jax.Array  # (B, H) the normalized input
    bnvar_inv: jax.Array  # (1, H)
    bngain: jax.Array  # (1, H)
    bnmean: jax.Array  # (1, H) batch mean, kept for the running statistics
    bnvar: jax.Array  # (1, H) Bessel-corrected batch variance, likewise


def batchnorm_forward(
    x: jax.Array, bngain: jax.Array, bnbias: jax.Array, eps: float, axis_name: str | None = None
) -> tuple[jax.Array, BatchNormCache]:
    """Training-mode BatchNorm with the notebook's unbiased (n-1) batch variance.

    Two passes, as the notebook (mean, then the squared deviations from it): one all-reduce each
    when the batch is sharded.
    """
    n = batch_count(x, axis_name)
    bnmean = batch_sum(x, axis_name) / n  # (1, H)
    bndiff = x - bnmean  # (B, H)
    bnvar = batch_sum(bndiff**2, axis_name) / (n - 1)  # (1, H)
    bnvar_inv = (bnvar + eps) ** -0.5
    bnraw = bndiff * bnvar_inv  # (B, H)
    return bngain * bnraw + bnbias, BatchNormCache(bnraw, bnvar_inv, bngain, bnmean, bnvar)


def batchnorm_backward(
    dhpreact: jax.Array, cache: BatchNormCache, axis_name: str | None = None
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """(dhprebn, dbngain, dbnbias), dhprebn in one expression (exercise 3).

    The n/(n-1) is Bessel's correction reaching the gradient through the variance. Its two batch
    sums are dbnbias and dbngain themselves: on a sharded batch, their all-reduces are all it needs.
    """
    n = batch_count(dhpreact, axis_name)
    bnraw, bnvar_inv, bngain = cache.bnraw, cache.bnvar_inv, cache.bngain
    dbnbias = batch_sum(dhpreact, axis_name)  # (1, H)
    dbngain = batch_sum(dhpreact * bnraw, axis_name)  # (1, H)
    dhprebn = bngain * bnvar_inv / n * (n * dhpreact - dbnbias - n / (n - 1) * bnraw * dbngain)
    return dhprebn, dbngain, dbnbias  # (B, H), (1, H), (1, H)


def batchnorm_eval(
    x: jax.Array,
    bngain: jax.Array,
    bnbias: jax.Array,
    bnmean: jax.Array,
    bnvar: jax.Array,
    eps: float,
) -> jax.Array:
    """Inference-mode BatchNorm with fixed statistics (calibrated or running), as the notebook's
    split_loss and sampling use it."""
    return bngain * (x - bnmean) * (bnvar + eps) ** -0.5 + bnbias


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
