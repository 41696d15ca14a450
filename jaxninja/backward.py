"""The hand-written backward passes, at the notebook's three grains. No jax.grad here.

`backward_atomic` is exercise 1: op by op through `forward_chunked`, in reverse order, one line
per d<name>. `backward_fused` chains the layer backwards of layers.py: cross-entropy in one
expression (exercise 2), BatchNorm in one expression (exercise 3); it is what training uses.
`loss` wraps the fused backward as a `jax.custom_vjp`, so jax.grad, vmap and optax run through
the hand-written gradient as if it were autodiff.
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp

from jaxninja import layers
from jaxninja.model import PARAMS, Cache, Params, forward


@partial(jax.jit, static_argnames="eps")
def backward_atomic(
    params: Params, v: dict[str, jax.Array], Xb: jax.Array, Yb: jax.Array, eps: float = 1e-5
) -> dict[str, jax.Array]:
    """Exercise 1: the gradient of the loss w.r.t. every intermediate `v` and every parameter."""
    W1, W2, bngain = params["W1"], params["W2"], params["bngain"]
    n, V = v["logits"].shape
    dlogprobs = jnp.zeros_like(v["logprobs"]).at[jnp.arange(n), Yb].set(-1.0 / n)  # (B, V)
    dprobs = (1.0 / v["probs"]) * dlogprobs  # (B, V)
    dcounts_sum_inv = (v["counts"] * dprobs).sum(1, keepdims=True)  # (B, 1)
    dcounts = v["counts_sum_inv"] * dprobs  # (B, V) first use of counts
    dcounts_sum = -(v["counts_sum"] ** -2) * dcounts_sum_inv  # (B, 1)
    dcounts = dcounts + dcounts_sum  # (B, V) second use: counts_sum broadcasts back to every count
    dnorm_logits = v["counts"] * dcounts  # (B, V) exp' = exp
    dlogit_maxes = -dnorm_logits.sum(1, keepdims=True)  # (B, 1) zero in exact arithmetic
    argmax = jax.nn.one_hot(v["logits"].argmax(1), V, dtype=dlogit_maxes.dtype)  # (B, V)
    dlogits = dnorm_logits + argmax * dlogit_maxes  # (B, V) the max routes to its first argmax
    dh, dW2, db2 = layers.linear_backward(dlogits, layers.LinearCache(v["h"], W2))
    dhpreact = layers.tanh_backward(dh, v["h"])  # (B, H)
    dbngain = (v["bnraw"] * dhpreact).sum(0, keepdims=True)  # (1, H)
    dbnbias = dhpreact.sum(0, keepdims=True)  # (1, H)
    dbnraw = bngain * dhpreact  # (B, H)
    dbnvar_inv = (v["bndiff"] * dbnraw).sum(0, keepdims=True)  # (1, H)
    dbndiff = v["bnvar_inv"] * dbnraw  # (B, H) first use of bndiff
    dbnvar = -0.5 * (v["bnvar"] + eps) ** -1.5 * dbnvar_inv  # (1, H)
    dbndiff2 = 1.0 / (n - 1) * jnp.ones_like(v["bndiff2"]) * dbnvar  # (B, H) Bessel's n-1
    dbndiff = dbndiff + 2 * v["bndiff"] * dbndiff2  # (B, H) second use, through bndiff2
    dbnmeani = -dbndiff.sum(0, keepdims=True)  # (1, H)
    dhprebn = dbndiff + 1.0 / n * jnp.ones_like(v["hprebn"]) * dbnmeani  # (B, H) both uses
    dembcat, dW1, db1 = layers.linear_backward(dhprebn, layers.LinearCache(v["embcat"], W1))
    demb = dembcat.reshape(v["emb"].shape)  # (B, T, E)
    dC = layers.embedding_backward(dembcat, layers.EmbeddingCache(Xb, params["C"].shape[0]))
    return {
        "logprobs": dlogprobs, "probs": dprobs, "counts_sum_inv": dcounts_sum_inv,
        "counts_sum": dcounts_sum, "counts": dcounts, "norm_logits": dnorm_logits,
        "logit_maxes": dlogit_maxes, "logits": dlogits, "h": dh, "W2": dW2, "b2": db2,
        "hpreact": dhpreact, "bngain": dbngain, "bnbias": dbnbias, "bnraw": dbnraw,
        "bnvar_inv": dbnvar_inv, "bnvar": dbnvar, "bndiff2": dbndiff2, "bndiff": dbndiff,
        "bnmeani": dbnmeani, "hprebn": dhprebn, "embcat": dembcat, "W1": dW1, "b1": db1,
        "emb": demb, "C": dC,
    }  # fmt: skip


def backward_fused(
    cache: Cache, dloss: jax.Array | float = 1.0, axis_name: str | None = None
) -> dict[str, jax.Array]:
    """Exercises 2 + 3: the parameters' gradients and those of the layer boundaries.

    Not jitted itself (it runs inside the caller's jit, next to the forward that made `cache`).
    With `axis_name` (a batch sharded under shard_map), the per-example gradients stay local and
    the weight gradients, sums over this device's examples, are all-reduced into the global ones;
    dbngain and dbnbias come out of BatchNorm's backward already reduced.
    """
    dlogits = layers.cross_entropy_backward(dloss, cache.ce, axis_name)  # (B, V)
    dh, dW2, db2 = layers.linear_backward(dlogits, cache.lin2)  # (B, H)
    dhpreact = layers.tanh_backward(dh, cache.tanh)  # (B, H)
    dhprebn, dbngain, dbnbias = layers.batchnorm_backward(dhpreact, cache.bn, axis_name)
    dembcat, dW1, db1 = layers.linear_backward(dhprebn, cache.lin1)  # (B, T*E)
    dC = layers.embedding_backward(dembcat, cache.emb)  # (V, E)
    if axis_name is not None:
        dC, dW1, db1, dW2, db2 = jax.lax.psum((dC, dW1, db1, dW2, db2), axis_name)
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
