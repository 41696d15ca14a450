"""The model's layers, each a forward that returns `(out, cache)` and a backward `(dout, cache)`.

Pure functions on arrays, as in llm.c's doc/layernorm/layernorm.py. The backwards are the fused
ones of the notebook (exercise 2 for cross-entropy, exercise 3 for BatchNorm); the op-by-op
backward of exercise 1 lives in backward.py, next to the chunked forward it mirrors in model.py.
Biases are 1-D as in the notebook, so they are broadcast with an explicit `[None, :]`: the tests
run with jax_numpy_rank_promotion="raise".
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp


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
    x: jax.Array, bngain: jax.Array, bnbias: jax.Array, eps: float
) -> tuple[jax.Array, BatchNormCache]:
    """Training-mode BatchNorm with the notebook's unbiased (n-1) batch variance."""
    bnmean = x.mean(0, keepdims=True)  # (1, H)
    bnvar = x.var(0, ddof=1, keepdims=True)  # (1, H)
    bnvar_inv = (bnvar + eps) ** -0.5
    bnraw = (x - bnmean) * bnvar_inv  # (B, H)
    return bngain * bnraw + bnbias, BatchNormCache(bnraw, bnvar_inv, bngain, bnmean, bnvar)


def batchnorm_backward(
    dhpreact: jax.Array, cache: BatchNormCache
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """(dhprebn, dbngain, dbnbias), dhprebn in one expression (exercise 3).

    The n/(n-1) is Bessel's correction reaching the gradient through the variance.
    """
    n = dhpreact.shape[0]
    bnraw, bnvar_inv, bngain = cache.bnraw, cache.bnvar_inv, cache.bngain
    dhprebn = (
        bngain
        * bnvar_inv
        / n
        * (
            n * dhpreact
            - dhpreact.sum(0, keepdims=True)
            - n / (n - 1) * bnraw * (dhpreact * bnraw).sum(0, keepdims=True)
        )
    )  # (B, H)
    return dhprebn, (bnraw * dhpreact).sum(0, keepdims=True), dhpreact.sum(0, keepdims=True)


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


def cross_entropy_forward(logits: jax.Array, Y: jax.Array) -> tuple[jax.Array, CrossEntropyCache]:
    """Mean negative log-likelihood of the targets."""
    logprobs = jax.nn.log_softmax(logits, axis=1)  # (B, V)
    loss = -jnp.take_along_axis(logprobs, Y[:, None], axis=1).mean()
    return loss, CrossEntropyCache(logits, Y)


def cross_entropy_backward(dloss: jax.Array, cache: CrossEntropyCache) -> jax.Array:
    """dlogits = (softmax - one_hot) / n (exercise 2)."""
    logits, Y = cache.logits, cache.Y
    n, V = logits.shape
    onehot = jax.nn.one_hot(Y, V, dtype=logits.dtype)  # (B, V)
    return (jax.nn.softmax(logits, axis=1) - onehot) * (dloss / n)
