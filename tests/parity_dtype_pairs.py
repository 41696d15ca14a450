"""Pairs and bugs of the dtypes real ports run in, shared by tests/test_parity.py and
benchmarks/parity_sweep.py (tests/parity_pairs.py holds the float32 catalogue they extend).

FIXED: code that fixes its own computation dtype (flax's `Dense(dtype=jnp.float32)`, a
LayerNorm that computes in `.astype(jnp.float32)`, a float32 `custom_vjp` kernel, torch's
`softmax(..., dtype=torch.float32)`), as the port and as the reference, against torch, JAX and
NumPy originals; judged in float32. LOW: mixed-precision ports in bfloat16 and float16. The
right ones upcast statistics, softmax and accumulation to float32 as torch does on the CPU; each
bug is right in exact arithmetic (float64 passes it) and wrong in the low precision: it cancels
(a variance as E[x^2] - E[x]^2, a mean kept in bfloat16, on inputs of mean 8), accumulates (a
sum carried in bfloat16) or overflows and underflows (float16's exp and log).

Each pair is two sides, the port first and the original (the reference) second.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import torch
import torch.nn.functional as F

from jaxninja import parity as P
from jaxninja.parity import tap
from tests import parity_pairs as PP

EPS = PP.EPS
F32 = jnp.float32


class DPair(NamedTuple):
    port: P.Side
    original: P.Side
    inputs: Callable[[tuple[int, ...], float], tuple[Any, tuple]]
    shapes: tuple[tuple[int, ...], ...]
    dtypes: tuple[str, ...]
    scales: tuple[float, ...] = PP.SCALES


class DBug(NamedTuple):
    pair: str
    port: P.Side
    shapes: tuple[tuple[int, ...], ...]
    dtypes: tuple[str, ...]
    scales: tuple[float, ...] = PP.SCALES  # where it is a bug (an overflow needs large inputs)


def up(x):
    """x in float32 at least, float64 kept: the cast that lets float64 judge."""
    return x.astype(jnp.promote_types(x.dtype, F32))


# --- flax's Dense with a fixed dtype, and F.linear ----------------------------------------


def _dense(p, x, transpose=True):
    kernel = p["W"].T if transpose else p["W"]
    return nn.Dense(p["W"].shape[0], dtype=F32).apply(
        {"params": {"kernel": kernel, "bias": p["b"]}}, x
    )


def linear_torch_untransposed(p, x):
    return x @ p["W"] + p["b"]


# --- LayerNorm: fixed to float32, or upcast as torch does ---------------------------------


def layernorm_cast(p, x, cast=lambda x: x.astype(F32), unbiased=False):
    xf = cast(x)
    m = tap("mean", xf.mean(-1, keepdims=True))
    v = tap("var", ((xf - m) ** 2).sum(-1, keepdims=True) / (x.shape[-1] - unbiased))
    xhat = tap("xhat", (xf - m) / jnp.sqrt(v + EPS))
    return (xhat * up(p["w"])[None, :] + up(p["b"])[None, :]).astype(x.dtype)


def layernorm_moments(p, x):
    """The variance as E[x^2] - E[x]^2: right in exact arithmetic, cancels on an offset."""
    m = x.mean(-1, keepdims=True)
    v = (x * x).mean(-1, keepdims=True) - m * m
    return (x - m) / jnp.sqrt(v + EPS) * p["w"][None, :] + p["b"][None, :]


def layernorm_torch(p, x):
    return F.layer_norm(x, x.shape[-1:], p["w"], p["b"], eps=EPS)


def layernorm_offset_inputs(shape, scale):
    """Inputs of mean 8x their spread, as activations after a residual often are."""
    return {"w": P.normal(shape[-1:]), "b": P.normal(shape[-1:])}, (
        P.normal(shape, scale, 8.0 * scale),
    )


# --- a float32 custom_vjp kernel against its JAX reference (FlashAttention's use) ---------


def _kernel_fwd(x, full=True):
    xf = x.astype(F32)
    m = xf.mean(-1, keepdims=True)
    rstd = jax.lax.rsqrt(((xf - m) ** 2).mean(-1, keepdims=True) + EPS)
    return ((xf - m) * rstd).astype(x.dtype), ((xf - m) * rstd, rstd)


def _kernel_bwd(full, res, g):
    xhat, rstd = res
    g = g.astype(F32)
    dx = g - g.mean(-1, keepdims=True)
    if full:  # the term through the variance, the one a hand-written backward forgets
        dx = dx - xhat * (g * xhat).mean(-1, keepdims=True)
    return ((dx * rstd).astype(g.dtype),)


def _kernel(full: bool) -> Callable:
    f = jax.custom_vjp(lambda x: _kernel_fwd(x)[0])
    f.defvjp(lambda x: _kernel_fwd(x), partial(_kernel_bwd, full))
    return f


NORM_KERNEL, NORM_KERNEL_BUG = _kernel(True), _kernel(False)


def norm_kernel(p, x, kernel=NORM_KERNEL):
    return kernel(x)


def norm_reference(p, x):
    m = x.mean(-1, keepdims=True)
    return (x - m) / jnp.sqrt(((x - m) ** 2).mean(-1, keepdims=True) + EPS)


# --- softmax: a NumPy reference; torch's dtype=float32 (widened); upcast; overflow ------


def softmax_numpy(p, x, axis=-1):
    e = np.exp(x - x.max(axis, keepdims=True))
    return e / e.sum(axis, keepdims=True)


def softmax_jax(p, x, axis=-1):
    return jax.nn.softmax(x, axis=axis)


def softmax_torch_f32(p, x):
    """HF's attention: the softmax in float32 whatever the dtype, then back."""
    return torch.softmax(x, -1, dtype=torch.float32).to(x.dtype)


def softmax_up(p, x):
    return jax.nn.softmax(up(x), axis=-1).astype(x.dtype)


def softmax_unsafe(p, x):
    """exp without the max subtracted: float16's exp overflows past 11."""
    e = jnp.exp(x)
    return e / e.sum(-1, keepdims=True)


def softmax_torch(p, x):
    return torch.softmax(x, -1)


# --- linear, attention, GELU, cross-entropy in low precision -------------------------------


def linear_jax(p, x):
    return x @ p["W"].T + p["b"][None, :]


def linear_carried(p, x):
    """The product summed term by term with a carry in the input's dtype (a hand-written
    loop): every step rounds to bfloat16."""
    terms = jnp.swapaxes(x[:, :, None] * p["W"].T[None], 0, 1)  # (in, batch, out)
    total, _ = jax.lax.scan(lambda c, t: (c + t, None), jnp.zeros_like(terms[0]), terms)
    return total + p["b"][None, :]


def attention_up(p, q, k, v, scores_dtype=F32):
    """The scores accumulated and kept in float32 (torch's CPU kernel keeps them so), the
    softmax in float32; `scores_dtype=None` rounds the scores to the inputs' dtype."""
    t, d = q.shape[-2:]
    wide = jnp.promote_types(q.dtype, scores_dtype or q.dtype)
    scores = jnp.matmul(q, jnp.swapaxes(k, -1, -2), preferred_element_type=wide) * d**-0.5
    causal = jnp.tril(jnp.ones((t, t), bool))[None]
    probs = jax.nn.softmax(jnp.where(causal, up(scores), -jnp.inf), axis=-1)
    return probs.astype(q.dtype) @ v


def gelu_up(p, x):
    return jax.nn.gelu(up(x), approximate=False).astype(x.dtype)


def cross_entropy_up(p, logits, y):
    logprobs = jax.nn.log_softmax(up(logits), axis=-1)
    return -jnp.take_along_axis(logprobs, y[:, None], axis=1).mean().astype(logits.dtype)


def cross_entropy_log_of_softmax(p, logits, y):
    """log(softmax): right in exact arithmetic; float16's softmax underflows to 0, log to -inf."""
    logprobs = jnp.log(jax.nn.softmax(up(logits), axis=-1).astype(logits.dtype))
    return -jnp.take_along_axis(up(logprobs), y[:, None], axis=1).mean().astype(logits.dtype)


def cross_entropy_torch(p, logits, y):
    return F.cross_entropy(logits, y)


J, T, N = P.jax, P.torch, P.numpy
BOTH = ("bfloat16", "float16")

FIXED_PAIRS = {
    "flax Dense(dtype=float32)": DPair(
        J(_dense), T(PP.linear_torch), PP.linear_inputs, ((4, 6, 3), (5, 6, 6)), ("float32",)
    ),
    "LayerNorm in float32": DPair(
        J(layernorm_cast), T(PP.layernorm_torch), PP.layernorm_inputs, ((4, 8),), ("float32",)
    ),
    "torch softmax(dtype=float32)": DPair(
        J(softmax_jax), T(softmax_torch_f32), PP.x_only, ((4, 7),), ("float32",)
    ),
    "torch port, flax reference": DPair(
        T(PP.linear_torch), J(_dense), PP.linear_inputs, ((5, 6, 6),), ("float32",)
    ),
    "custom_vjp kernel, JAX reference": DPair(
        J(norm_kernel, "kernel"), J(norm_reference, "reference"), PP.x_only, ((4, 8),),
        ("float32",),
    ),
    "NumPy reference": DPair(J(softmax_jax), N(softmax_numpy), PP.x_only, ((4, 7),), ("float32",)),
}  # fmt: skip

FIXED_BUGS = {
    "flax Dense: W not transposed": DBug(
        "flax Dense(dtype=float32)", J(partial(_dense, transpose=False)), ((5, 6, 6),),
        ("float32",),
    ),
    "float32 LayerNorm: n - 1": DBug(
        "LayerNorm in float32", J(partial(layernorm_cast, unbiased=True)), ((4, 8),), ("float32",)
    ),
    "torch port: W not transposed": DBug(
        "torch port, flax reference", T(linear_torch_untransposed), ((5, 6, 6),), ("float32",)
    ),
    "kernel backward: a term lost": DBug(
        "custom_vjp kernel, JAX reference", J(partial(norm_kernel, kernel=NORM_KERNEL_BUG),
                                              "kernel"), ((4, 8),), ("float32",),
    ),
    "softmax over the wrong axis": DBug(
        "NumPy reference", J(partial(softmax_jax, axis=0)), ((5, 5),), ("float32",)
    ),
}  # fmt: skip

LOW_PAIRS = {
    "LayerNorm upcast": DPair(
        J(partial(layernorm_cast, cast=up)), T(layernorm_torch), layernorm_offset_inputs,
        ((4, 8), (8, 64)), BOTH,
    ),
    "LayerNorm fixed to float32": DPair(
        J(layernorm_cast), T(layernorm_torch), layernorm_offset_inputs, ((8, 64),), BOTH
    ),
    "softmax upcast": DPair(J(softmax_up), T(softmax_torch), PP.x_only, ((4, 7), (8, 64)), BOTH),
    "linear": DPair(J(linear_jax), T(PP.linear_torch), PP.linear_inputs, ((4, 6, 3), (8, 64, 16)),
                    BOTH),
    "attention, softmax upcast": DPair(
        J(attention_up), T(PP.attention_torch), PP.attention_inputs, ((2, 5, 4), (1, 8, 8)),
        ("bfloat16",),
    ),
    "GELU upcast": DPair(J(gelu_up), T(PP.gelu_torch), PP.x_only, ((4, 8), (8, 64)), BOTH),
    "cross-entropy upcast": DPair(
        J(cross_entropy_up), T(cross_entropy_torch), PP.cross_entropy_inputs, ((8, 5), (16, 27)),
        BOTH,
    ),
}  # fmt: skip

LOW_BUGS = {
    "variance as E[x^2] - E[x]^2": DBug(
        "LayerNorm upcast", J(layernorm_moments), ((4, 8), (8, 64)), BOTH
    ),
    "LayerNorm mean in bfloat16": DBug(
        "LayerNorm upcast", J(partial(layernorm_cast, cast=lambda x: x)), ((8, 64), (8, 256)),
        ("bfloat16",),
    ),
    "running sum, low precision": DBug(
        "linear", J(linear_carried), ((8, 64, 16), (8, 256, 16)), BOTH, (1.0, 10.0)
    ),  # at 0.1 the bias swamps the sum: the carry's error is under the output's rounding
    "attention scores rounded": DBug(
        "attention, softmax upcast", J(partial(attention_up, scores_dtype=None)), ((1, 8, 8),),
        ("bfloat16",), (10.0,),
    ),  # large logits: bfloat16 cannot hold a score of 280 to better than 2
    "softmax without its max": DBug(
        "softmax upcast", J(softmax_unsafe), ((4, 7), (8, 64)), ("float16",), (10.0,)
    ),
    "log of softmax": DBug(
        "cross-entropy upcast", J(cross_entropy_log_of_softmax), ((16, 27),), ("float16",),
        (10.0,),
    ),
}  # fmt: skip

PAIRS = FIXED_PAIRS | LOW_PAIRS
BUGS = FIXED_BUGS | LOW_BUGS


def case(name: str, shape: tuple[int, ...], scale: float, bug: str | None = None):
    """(port, original, params, *args) of a pair, or with its bug in the port's seat."""
    pair = PAIRS[name]
    params, args = pair.inputs(shape, scale)
    port = BUGS[bug].port if bug else pair.port
    return port, pair.original, params, *args
