"""The hand-written backward passes, at the notebook's three grains. No jax.grad here.

`backward_atomic` is exercise 1: op by op through `forward_chunked`, in reverse order, one line
per d<name>, written out as the notebook writes it and calling nothing from layers.py.
`backward_fused` chains the layer backwards of layers.py: cross-entropy in one expression
(exercise 2), BatchNorm in one expression (exercise 3); it is what training uses. The two share
no code, so comparing them compares two derivations of every row they both make.
`loss` wraps the fused backward as a `jax.custom_vjp`, so jax.grad, vmap and optax run through
the hand-written gradient as if it were autodiff.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import jax
import jax.numpy as jnp

from jaxninja.models import layers
from jaxninja.models.mlp import PARAMS, Cache, Params, forward


@partial(jax.jit, static_argnames="eps")
def backward_atomic(
    params: Params, v: dict[str, jax.Array], Xb: jax.Array, Yb: jax.Array, eps: float = 1e-5
) -> dict[str, jax.Array]:
    """Exercise 1: the gradient of the loss w.r.t. every intermediate `v` and every parameter.

    The notebook's names are unpacked first, as in the exercise file (jaxninja/exercises), so
    each line below reads as the notebook's and can fill the file's blank of the same name.
    """
    C, W1, W2, bngain = params["C"], params["W1"], params["W2"], params["bngain"]
    emb, embcat, hprebn, bndiff, bndiff2, bnvar, bnvar_inv, bnraw, h, logits = (
        v[k] for k in ("emb", "embcat", "hprebn", "bndiff", "bndiff2", "bnvar", "bnvar_inv",
                       "bnraw", "h", "logits")
    )  # fmt: skip
    counts, counts_sum, counts_sum_inv, probs, logprobs = (
        v[k] for k in ("counts", "counts_sum", "counts_sum_inv", "probs", "logprobs")
    )
    n, V = logits.shape
    dlogprobs = jnp.zeros_like(logprobs).at[jnp.arange(n), Yb].set(-1.0 / n)  # (B, V)
    dprobs = (1.0 / probs) * dlogprobs  # (B, V)
    dcounts_sum_inv = (counts * dprobs).sum(1, keepdims=True)  # (B, 1)
    dcounts = counts_sum_inv * dprobs  # (B, V) first use of counts
    dcounts_sum = -(counts_sum**-2) * dcounts_sum_inv  # (B, 1)
    dcounts = dcounts + dcounts_sum  # (B, V) second use: counts_sum broadcasts back to every count
    dnorm_logits = counts * dcounts  # (B, V) exp' = exp
    dlogit_maxes = -dnorm_logits.sum(1, keepdims=True)  # (B, 1) zero in exact arithmetic
    argmax = jax.nn.one_hot(logits.argmax(1), V, dtype=dlogit_maxes.dtype)  # (B, V)
    dlogits = dnorm_logits + argmax * dlogit_maxes  # (B, V) the max routes to its first argmax
    dh = dlogits @ W2.T  # (B, H)
    dW2 = h.T @ dlogits  # (H, V)
    db2 = dlogits.sum(0)  # (V,)
    dhpreact = (1.0 - h**2) * dh  # (B, H) tanh' = 1 - tanh**2
    dbngain = (bnraw * dhpreact).sum(0, keepdims=True)  # (1, H)
    dbnbias = dhpreact.sum(0, keepdims=True)  # (1, H)
    dbnraw = bngain * dhpreact  # (B, H)
    dbnvar_inv = (bndiff * dbnraw).sum(0, keepdims=True)  # (1, H)
    dbndiff = bnvar_inv * dbnraw  # (B, H) first use of bndiff
    dbnvar = -0.5 * (bnvar + eps) ** -1.5 * dbnvar_inv  # (1, H)
    dbndiff2 = 1.0 / (n - 1) * jnp.ones_like(bndiff2) * dbnvar  # (B, H) Bessel's n-1
    dbndiff = dbndiff + 2 * bndiff * dbndiff2  # (B, H) second use, through bndiff2
    dbnmeani = -dbndiff.sum(0, keepdims=True)  # (1, H)
    dhprebn = dbndiff + 1.0 / n * jnp.ones_like(hprebn) * dbnmeani  # (B, H) both uses
    dembcat = dhprebn @ W1.T  # (B, T*E)
    dW1 = embcat.T @ dhprebn  # (T*E, H)
    db1 = dhprebn.sum(0)  # (H,) zero in exact arithmetic: BatchNorm removes the mean
    demb = dembcat.reshape(emb.shape)  # (B, T, E)
    dC = jnp.zeros_like(C).at[Xb].add(demb)  # (V, E) scatter-add: a repeated character adds up
    return {
        "logprobs": dlogprobs, "probs": dprobs, "counts_sum_inv": dcounts_sum_inv,
        "counts_sum": dcounts_sum, "counts": dcounts, "norm_logits": dnorm_logits,
        "logit_maxes": dlogit_maxes, "logits": dlogits, "h": dh, "W2": dW2, "b2": db2,
        "hpreact": dhpreact, "bngain": dbngain, "bnbias": dbnbias, "bnraw": dbnraw,
        "bnvar_inv": dbnvar_inv, "bnvar": dbnvar, "bndiff2": dbndiff2, "bndiff": dbndiff,
        "bnmeani": dbnmeani, "hprebn": dhprebn, "embcat": dembcat, "W1": dW1, "b1": db1,
        "emb": demb, "C": dC,
    }  # fmt: skip


# the rows the fused backward makes: the parameters and the layer boundaries
FUSED_ROWS = (
    "logits", "h", "W2", "b2", "hpreact", "bngain", "bnbias", "hprebn", "embcat", "W1", "b1", "C",
)  # fmt: skip


def dlogits_fused(logits: jax.Array, Yb: jax.Array) -> jax.Array:
    """Exercise 2 in its own seat: (logits (B, V), Yb (B,)) -> dlogits (B, V)."""
    return layers.cross_entropy_backward(1.0, layers.CrossEntropyCache(logits, Yb))


def dhprebn_fused(
    dhpreact: jax.Array, bngain: jax.Array, bnvar_inv: jax.Array, bnraw: jax.Array
) -> jax.Array:
    """Exercise 3 in its own seat: the notebook's four inputs -> dhprebn (B, H)."""
    bn = layers.BatchNormCache(bnraw, bnvar_inv, bngain, bnmean=None, bnvar=None)  # stats unused
    return layers.batchnorm_backward(dhpreact, bn)[0]


def backward_fused(
    cache: Cache,
    dloss: jax.Array | float = 1.0,
    axis_name: str | None = None,
    dhprebn_fn: Callable | None = None,
) -> dict[str, jax.Array]:
    """Exercises 2 + 3: the parameters' gradients and those of the layer boundaries.

    Not jitted itself (it runs inside the caller's jit, next to the forward that made `cache`).
    With `axis_name` (a batch sharded under shard_map), the per-example gradients stay local and
    each layer's backward all-reduces its weight gradients, sums over this device's examples,
    into the global ones. `dhprebn_fn` (the
    signature of `dhprebn_fused`; one device only) takes the seat of exercise 3: the mistake
    catalogue's tests put a mutated BatchNorm backward there.
    """
    dlogits = layers.cross_entropy_backward(dloss, cache.ce, axis_name)  # (B, V)
    dh, dW2, db2 = layers.linear_backward(dlogits, cache.lin2, axis_name)  # (B, H)
    dhpreact = layers.tanh_backward(dh, cache.tanh)  # (B, H)
    dhprebn, dbngain, dbnbias = layers.batchnorm_backward(dhpreact, cache.bn, axis_name)
    if dhprebn_fn is not None:
        bn = cache.bn
        dhprebn = dhprebn_fn(dhpreact, bn.bngain, bn.bnvar_inv, bn.bnraw)
    dembcat, dW1, db1 = layers.linear_backward(dhprebn, cache.lin1, axis_name)  # (B, T*E)
    demb = layers.flatten_consecutive_backward(dembcat, cache.flat)  # (B, T, E)
    dC = layers.embedding_backward(demb, cache.emb, axis_name)  # (V, E)
    return {
        "logits": dlogits, "h": dh, "W2": dW2, "b2": db2, "hpreact": dhpreact,
        "bngain": dbngain, "bnbias": dbnbias, "hprebn": dhprebn, "embcat": dembcat,
        "W1": dW1, "b1": db1, "C": dC,
    }  # fmt: skip


@partial(jax.jit, static_argnames="eps")
def loss_and_grads(
    params: Params, Xb: jax.Array, Yb: jax.Array, eps: float = 1e-5
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Compact forward + fused backward: the loss and every gradient `backward_fused` makes."""
    loss_value, cache = forward(params, Xb, Yb, eps)
    return loss_value, backward_fused(cache)


@partial(jax.custom_vjp, nondiff_argnums=(3,))
def loss(params: Params, Xb: jax.Array, Yb: jax.Array, eps: float = 1e-5) -> jax.Array:
    """The model's loss, differentiated by the hand-written fused backward (custom_vjp)."""
    return forward(params, Xb, Yb, eps)[0]


def _loss_fwd(params, Xb, Yb, eps):
    return forward(params, Xb, Yb, eps)


def _loss_bwd(eps, cache, dloss):
    grads = backward_fused(cache, dloss)
    return {k: grads[k] for k in PARAMS}, None, None  # the integer batch gets no cotangent


loss.defvjp(_loss_fwd, _loss_bwd)
