"""Part 6's layers, makemore.py's Transformer (`--type transformer`), each a forward that returns
`(out, cache)` and a hand-written backward `(dout, cache) -> (dparams, dx)`.

LayerNorm over the last axis (llm.c's doc/layernorm: mean and `rstd` cached, biased variance);
causal multi-head self-attention as makemore writes it (one `c_attn` Linear split into q, k, v,
the masked softmax, `c_proj`); NewGELU, makemore's tanh form; the token and position
embeddings; cross-entropy over (B, T) targets that ignores -1, as F.cross_entropy(ignore_index=-1).
Linear is layers.py's (weights (in, out)); the residual add is gpt.py's.

Data parallel: as in layers.py, a parameter's gradient is all-reduced over `axis_name` (each
device holds a slice of the batch); the loss's sum and count are too, so the loss and its
gradient are those of the global batch.
"""

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp

from jaxninja.data import IGNORE
from jaxninja.errors import UsageError
from jaxninja.models import layers
from jaxninja.models.layers import LinearCache, along_last

LN_EPS = 1e-5  # nn.LayerNorm's default, makemore's
GELU_C = math.sqrt(2.0 / math.pi)  # NewGELU's tanh approximation: tanh(c * (x + a * x^3))
GELU_A = 0.044715

Grads = dict[str, jax.Array]


def _all_devices(tree, axis_name: str | None):
    return tree if axis_name is None else jax.lax.psum(tree, axis_name)


def _sum_rows(x: jax.Array) -> jax.Array:
    """Sum over every axis but the last: a per-channel parameter's gradient, (C,)."""
    return x.reshape(-1, x.shape[-1]).sum(0)


# --- LayerNorm ---------------------------------------------------------------------------------


class LayerNormCache(NamedTuple):
    xhat: jax.Array  # (..., C): the normalized input
    rstd: jax.Array  # (..., 1): 1 / sqrt(var + eps), the biased variance over C
    weight: jax.Array  # (C,)


def layernorm_forward(
    x: jax.Array, weight: jax.Array, bias: jax.Array, eps: float = LN_EPS
) -> tuple[jax.Array, LayerNormCache]:
    """nn.LayerNorm over the last axis: (..., C) -> (..., C)."""
    mean = x.mean(-1, keepdims=True)  # (..., 1)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)  # (..., 1), biased: / C
    rstd = (var + eps) ** -0.5
    xhat = (x - mean) * rstd  # (..., C)
    out = xhat * along_last(weight, x.ndim) + along_last(bias, x.ndim)
    return out, LayerNormCache(xhat, rstd, weight)


def layernorm_backward(
    dout: jax.Array, cache: LayerNormCache, axis_name: str | None = None
) -> tuple[Grads, jax.Array]:
    """({weight, bias}, dx). dx as llm.c's: the mean and the variance each take out their part
    of dnorm, its mean and its projection on xhat."""
    xhat, rstd = cache.xhat, cache.rstd
    dparams = {"weight": _sum_rows(dout * xhat), "bias": _sum_rows(dout)}  # (C,), (C,)
    dnorm = dout * along_last(cache.weight, dout.ndim)  # (..., C)
    dx = dnorm - dnorm.mean(-1, keepdims=True) - xhat * (dnorm * xhat).mean(-1, keepdims=True)
    return _all_devices(dparams, axis_name), dx * rstd


# --- causal self-attention ---------------------------------------------------------------------


class AttentionCache(NamedTuple):
    c_attn: LinearCache  # x (B, T, C) -> qkv (B, T, 3C)
    q: jax.Array  # (B, nh, T, hs)
    k: jax.Array  # (B, nh, T, hs)
    v: jax.Array  # (B, nh, T, hs)
    att: jax.Array  # (B, nh, T, T): the softmax, exactly 0 above the diagonal
    c_proj: LinearCache  # y (B, T, C) -> out (B, T, C)


def split_heads(x: jax.Array, n_head: int) -> jax.Array:
    """(B, T, C) -> (B, nh, T, hs): makemore's view(B, T, nh, hs).transpose(1, 2)."""
    B, T, C = x.shape
    return x.reshape(B, T, n_head, C // n_head).transpose(0, 2, 1, 3)


def merge_heads(x: jax.Array) -> jax.Array:
    """(B, nh, T, hs) -> (B, T, C): the heads side by side again."""
    B, nh, T, hs = x.shape
    return x.transpose(0, 2, 1, 3).reshape(B, T, nh * hs)


def causal_mask(T: int) -> jax.Array:
    """(1, 1, T, T): True where position t may attend to s (s <= t), makemore's `tril` buffer."""
    return jnp.tril(jnp.ones((T, T), bool))[None, None]


def attention_forward(
    x: jax.Array, p: dict[str, jax.Array], n_head: int, qkv_tap: jax.Array | None = None
) -> tuple[jax.Array, AttentionCache]:
    """CausalSelfAttention: (B, T, C) -> (B, T, C). `p`: c_attn.weight (C, 3C), c_attn.bias,
    c_proj.weight (C, C), c_proj.bias. `qkv_tap`: zeros added to c_attn's output, whose
    gradient jax.grad then gives (the model check's reference)."""
    C = x.shape[-1]
    qkv, c_attn = layers.linear_forward(x, p["c_attn.weight"], p["c_attn.bias"])  # (B, T, 3C)
    qkv = qkv if qkv_tap is None else qkv + qkv_tap
    q, k, v = (split_heads(qkv[..., i * C : (i + 1) * C], n_head) for i in range(3))
    scores = (q @ k.swapaxes(-1, -2)) * (1.0 / math.sqrt(q.shape[-1]))  # (B, nh, T, T)
    scores = jnp.where(causal_mask(x.shape[1]), scores, -jnp.inf)
    att = jax.nn.softmax(scores, axis=-1)  # (B, nh, T, T)
    y = merge_heads(att @ v)  # (B, T, C)
    out, c_proj = layers.linear_forward(y, p["c_proj.weight"], p["c_proj.bias"])
    return out, AttentionCache(c_attn, q, k, v, att, c_proj)


def attention_backward(
    dout: jax.Array, cache: AttentionCache, axis_name: str | None = None
) -> tuple[Grads, jax.Array]:
    """({c_attn.weight, c_attn.bias, c_proj.weight, c_proj.bias}, dx), the forward in reverse."""
    dparams, dx, _ = attention_backward_qkv(dout, cache, axis_name)
    return dparams, dx


def attention_backward_qkv(
    dout: jax.Array, cache: AttentionCache, axis_name: str | None = None
) -> tuple[Grads, jax.Array, jax.Array]:
    """attention_backward's (dparams, dx), and the gradient of c_attn's output qkv (B, T, 3C):
    a row of the model's check."""
    q, k, v, att = cache.q, cache.k, cache.v, cache.att
    dy, dWp, dbp = layers.linear_backward(dout, cache.c_proj, axis_name)  # (B, T, C)
    dyh = split_heads(dy, q.shape[1])  # (B, nh, T, hs)
    datt = dyh @ v.swapaxes(-1, -2)  # (B, nh, T, T)
    dv = att.swapaxes(-1, -2) @ dyh  # (B, nh, T, hs)
    # softmax's backward, att * (datt - sum(datt * att)); att is exactly 0 where the mask put
    # -inf, so the masked scores get no gradient, as masked_fill's backward gives them none
    dscores = att * (datt - (datt * att).sum(-1, keepdims=True))
    dscores = dscores * (1.0 / math.sqrt(q.shape[-1]))  # (B, nh, T, T)
    dq, dk = dscores @ k, dscores.swapaxes(-1, -2) @ q  # (B, nh, T, hs) each
    dqkv = jnp.concatenate([merge_heads(d) for d in (dq, dk, dv)], axis=-1)  # (B, T, 3C)
    dx, dWa, dba = layers.linear_backward(dqkv, cache.c_attn, axis_name)
    dparams = {"c_attn.weight": dWa, "c_attn.bias": dba, "c_proj.weight": dWp, "c_proj.bias": dbp}
    return dparams, dx, dqkv


# --- NewGELU -----------------------------------------------------------------------------------


class GeluCache(NamedTuple):
    x: jax.Array  # (..., H)
    t: jax.Array  # (..., H): tanh(c * (x + a * x^3))


def gelu_forward(x: jax.Array) -> tuple[jax.Array, GeluCache]:
    """makemore's NewGELU: 0.5 * x * (1 + tanh(sqrt(2/pi) * (x + 0.044715 * x^3)))."""
    t = jnp.tanh(GELU_C * (x + GELU_A * x**3))
    return 0.5 * x * (1.0 + t), GeluCache(x, t)


def gelu_backward(dout: jax.Array, cache: GeluCache) -> tuple[Grads, jax.Array]:
    """({}, dx): the product rule, d tanh(u) = (1 - t^2) du, du = c (1 + 3a x^2) dx."""
    x, t = cache.x, cache.t
    du = GELU_C * (1.0 + 3.0 * GELU_A * x**2)
    return {}, dout * (0.5 * (1.0 + t) + 0.5 * x * (1.0 - t**2) * du)


# --- token and position embeddings -------------------------------------------------------------


class EmbeddingsCache(NamedTuple):
    wte: layers.EmbeddingCache  # X (B, T) into wte (V, C)
    block_size: int  # wpe's rows: the gradient's shape, whatever T this batch has


def embeddings_forward(
    wte: jax.Array, wpe: jax.Array, X: jax.Array
) -> tuple[jax.Array, EmbeddingsCache]:
    """tok_emb + pos_emb: X (B, T) -> (B, T, C); position t reads wpe's row t. T longer than
    wpe's rows is refused, as makemore's assert."""
    if X.shape[1] > wpe.shape[0]:
        raise UsageError(f"rows of {X.shape[1]} positions: the block size is {wpe.shape[0]}")
    tok_emb, c_wte = layers.embedding_forward(wte, X)  # (B, T, C)
    pos_emb = wpe[None, : X.shape[1]]  # (1, T, C)
    return tok_emb + pos_emb, EmbeddingsCache(c_wte, wpe.shape[0])


def embeddings_backward(
    dx: jax.Array, cache: EmbeddingsCache, axis_name: str | None = None
) -> tuple[Grads, None]:
    """({wte, wpe}, None): wte's rows scatter-added (layers.py); every row of the batch read the
    same position table, so its gradient is dx summed over the batch. X gets none."""
    dwte = layers.embedding_backward(dx, cache.wte, axis_name)  # (V, C)
    dpos = dx.sum(0)  # (T, C)
    dwpe = jnp.zeros((cache.block_size, dx.shape[-1]), dx.dtype).at[: dx.shape[1]].set(dpos)
    return {"wte": dwte, "wpe": _all_devices(dwpe, axis_name)}, None


# --- cross-entropy with ignored positions ------------------------------------------------------


class MaskedCrossEntropyCache(NamedTuple):
    logits: jax.Array  # (B, T, V)
    Y: jax.Array  # (B, T) int targets, IGNORE where padded
    count: jax.Array  # () the counted positions, over every device


def cross_entropy_forward(
    logits: jax.Array, Y: jax.Array, axis_name: str | None = None
) -> tuple[tuple[jax.Array, jax.Array], MaskedCrossEntropyCache]:
    """((loss, count), cache): the mean negative log-likelihood over the positions whose target
    is not IGNORE, F.cross_entropy(ignore_index=-1); count is how many (int32), over the global
    batch under `axis_name`. No counted position: 0/0, NaN, as torch gives."""
    counted = Y != IGNORE  # (B, T)
    logprobs = jax.nn.log_softmax(logits, axis=-1)  # (B, T, V)
    picked = jnp.take_along_axis(logprobs, jnp.where(counted, Y, 0)[..., None], axis=-1)[..., 0]
    total, count = _all_devices((jnp.where(counted, picked, 0.0).sum(), counted.sum()), axis_name)
    loss = -total / count
    return (loss, count), MaskedCrossEntropyCache(logits, Y, count)


def cross_entropy_backward(dloss: jax.Array, cache: MaskedCrossEntropyCache) -> jax.Array:
    """dlogits (B, T, V) = (softmax - one_hot) / count at the counted positions, 0 at the
    ignored ones."""
    counted = (cache.Y != IGNORE)[..., None]  # (B, T, 1)
    onehot = jax.nn.one_hot(cache.Y, cache.logits.shape[-1], dtype=cache.logits.dtype)
    dlogits = (jax.nn.softmax(cache.logits, axis=-1) - onehot) * (dloss / cache.count)
    return jnp.where(counted, dlogits, 0.0)
