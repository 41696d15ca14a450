"""Real JAX/PyTorch pairs and a catalogue of real port bugs, shared by tests/test_parity.py and
benchmarks/parity_sweep.py.

Each pair: a JAX port, the PyTorch original (torch's own op wherever there is one), and its
inputs for a shape and an input scale. Each bug: a JAX port of one pair with one real mistake,
the shapes where it is one (a square input hides some), its first failing row and, with the
pair's taps, the first tap where the sides differ. Biases broadcast with an explicit `[None]`:
the tests run with rank promotion "raise".
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import torch
import torch.nn.functional as F

from jaxninja import parity as P
from jaxninja.config import ModelConfig
from jaxninja.models import layers
from jaxninja.models.mlp import init_params
from jaxninja.models.mlp_backward import loss as model_loss
from jaxninja.parity import tap
from torch_ref.notebook import _forward as notebook_forward

EPS = 1e-5
SCALES = (0.1, 1.0, 10.0)


class Pair(NamedTuple):
    jax_fn: Callable
    torch_fn: Callable
    inputs: Callable[[tuple[int, ...], float], tuple[Any, tuple]]  # (shape, scale) -> inputs
    shapes: tuple[tuple[int, ...], ...]


class Bug(NamedTuple):
    pair: str
    jax_fn: Callable
    shapes: tuple[tuple[int, ...], ...]
    first_row: str
    first_tap: str | None  # None: the pair has no taps


# --- LayerNorm over the last axis (and mean and var as taps) -------------------------------


def layernorm_jax(p, x, eps=EPS, eps_outside=False, keepdims=True):
    m = tap("mean", x.mean(-1, keepdims=keepdims))
    v = tap("var", ((x - m) ** 2).mean(-1, keepdims=True))
    xhat = (x - m) / (jnp.sqrt(v) + eps) if eps_outside else (x - m) / jnp.sqrt(v + eps)
    return tap("xhat", xhat) * p["w"][None, :] + p["b"][None, :]


def layernorm_torch(p, x):
    tap("mean", x.mean(-1, keepdim=True))
    tap("var", x.var(-1, unbiased=False, keepdim=True))
    return tap("xhat", F.layer_norm(x, x.shape[-1:], eps=EPS)) * p["w"] + p["b"]


def layernorm_inputs(shape, scale):
    return {"w": P.normal(shape[-1:]), "b": P.normal(shape[-1:])}, (P.normal(shape, scale),)


# --- GELU, softmax, log-softmax ----------------------------------------------------------


def gelu_jax(p, x, approximate=False):
    return jax.nn.gelu(x, approximate=approximate)


def gelu_torch(p, x):
    return F.gelu(x)


def softmax_jax(p, x, axis=-1):
    m = tap("max", x.max(-1, keepdims=True))  # its gradient is zero in exact arithmetic
    return tap("probs", jax.nn.softmax(x - m, axis=axis))


def softmax_torch(p, x):
    m = tap("max", x.max(-1, keepdim=True).values)
    return tap("probs", torch.softmax(x - m, -1))


def log_softmax_jax(p, x):
    return jax.nn.log_softmax(x, axis=-1)


def log_softmax_torch(p, x):
    return F.log_softmax(x, -1)


def x_only(shape, scale):
    return {}, (P.normal(shape, scale),)


# --- cross-entropy -------------------------------------------------------------------------


def cross_entropy_jax(p, logits, y, reduce=jnp.mean):
    logprobs = tap("logprobs", jax.nn.log_softmax(logits, axis=-1))
    return -reduce(jnp.take_along_axis(logprobs, y[:, None], axis=1))


def cross_entropy_torch(p, logits, y):
    return F.nll_loss(tap("logprobs", F.log_softmax(logits, -1)), y)  # F.cross_entropy's own


def cross_entropy_inputs(shape, scale):
    return {}, (P.normal(shape, scale), P.integers(shape[:1], 0, shape[1]))


# --- linear, W (out, in) as torch keeps it ----------------------------------------------


def linear_jax(p, x, transpose=True):
    return x @ (p["W"].T if transpose else p["W"]) + p["b"][None, :]


def linear_torch(p, x):
    return F.linear(x, p["W"], p["b"])


def linear_inputs(shape, scale):  # shape: (batch, in, out)
    n, i, o = shape
    return {"W": P.normal((o, i), i**-0.5), "b": P.normal((o,))}, (P.normal((n, i), scale),)


# --- conv1d --------------------------------------------------------------------------------


def conv1d_jax(p, x):
    k = p["W"].shape[-1]
    y = jax.lax.conv_general_dilated(
        x, p["W"], (1,), [(k // 2, k // 2)], dimension_numbers=("NCH", "OIH", "NCH")
    )
    return y + p["b"][None, :, None]


def conv1d_torch(p, x):
    return F.conv1d(x, p["W"], p["b"], padding=p["W"].shape[-1] // 2)


def conv1d_inputs(shape, scale):  # shape: (batch, in channels, length, out channels, kernel)
    n, c, length, o, k = shape
    params = {"W": P.normal((o, c, k), (c * k) ** -0.5), "b": P.normal((o,))}
    return params, (P.normal((n, c, length), scale),)


# --- causal scaled dot-product attention --------------------------------------------------


def attention_jax(p, q, k, v, offset=0):
    t, d = q.shape[-2:]
    scores = tap("scores", q @ jnp.swapaxes(k, -1, -2) * d**-0.5)
    causal = jnp.tril(jnp.ones((t, t), bool), k=offset)[None]
    probs = tap("probs", jax.nn.softmax(jnp.where(causal, scores, -jnp.inf), axis=-1))
    return probs @ v


def attention_torch(p, q, k, v):
    t, d = q.shape[-2:]
    scores = tap("scores", q @ k.transpose(-1, -2) * d**-0.5)  # taps beside torch's own kernel
    causal = torch.ones(t, t, dtype=torch.bool).tril()
    tap("probs", torch.softmax(scores.masked_fill(~causal, float("-inf")), -1))
    return F.scaled_dot_product_attention(q, k, v, is_causal=True)


def attention_inputs(shape, scale):  # shape: (batch, time, head size)
    return {}, tuple(P.normal(shape, scale) for _ in range(3))


# --- the project's BatchNorm (Bessel-corrected) in training mode, after a linear -------------


def batchnorm_jax(p, x):
    hprebn = tap("hprebn", layers.linear_forward(x, p["W"], p["b1"])[0])
    out, _ = layers.batchnorm_forward(hprebn, p["bngain"], p["bnbias"], EPS)
    return tap("hpreact", out)


def batchnorm_biased_jax(p, x):
    hprebn = tap("hprebn", x @ p["W"] + p["b1"][None, :])
    m = hprebn.mean(0, keepdims=True)
    v = ((hprebn - m) ** 2).mean(0, keepdims=True)  # torch's F.batch_norm normalizes so
    return tap("hpreact", p["bngain"] * (hprebn - m) / jnp.sqrt(v + EPS) + p["bnbias"])


def batchnorm_torch(p, x):
    hprebn = tap("hprebn", x @ p["W"] + p["b1"])
    m, v = hprebn.mean(0, keepdim=True), hprebn.var(0, keepdim=True)  # unbiased: n - 1
    return tap("hpreact", p["bngain"] * (hprebn - m) * (v + EPS) ** -0.5 + p["bnbias"])


def batchnorm_inputs(shape, scale):  # shape: (batch, in, hidden)
    n, i, h = shape
    params = {
        "W": P.normal((i, h), i**-0.5),
        "b1": P.normal((h,), 0.1),  # BatchNorm removes it: its gradient is zero exactly
        "bngain": P.uniform((1, h), 0.5, 1.5),
        "bnbias": P.normal((1, h), 0.1),
    }
    return params, (P.normal((n, i), scale),)


# --- the project's model: jaxninja's fused custom_vjp loss against the notebook in torch -----


def model_jax(p, X, Y):
    return model_loss(p, X, Y)


def model_torch(p, X, Y):
    return notebook_forward(p, X, Y)[0]


def model_inputs(shape, scale):  # shape: (batch, n_hidden); its own initialisation
    n, hidden = shape
    params = init_params(ModelConfig(vocab_size=27, n_hidden=hidden, dtype="float64"), 0)
    params["C"] = params["C"] * scale
    return params, (P.integers((n, 3), 0, 27), P.integers((n,), 0, 27))


PAIRS = {
    "layernorm": Pair(layernorm_jax, layernorm_torch, layernorm_inputs, ((4, 8), (6, 6))),
    "gelu": Pair(gelu_jax, gelu_torch, x_only, ((4, 8), (3, 5, 2))),
    "softmax": Pair(softmax_jax, softmax_torch, x_only, ((4, 7), (5, 5))),
    "log_softmax": Pair(log_softmax_jax, log_softmax_torch, x_only, ((4, 7), (2, 3, 9))),
    "cross_entropy": Pair(
        cross_entropy_jax, cross_entropy_torch, cross_entropy_inputs, ((8, 5), (16, 27))
    ),
    "linear": Pair(linear_jax, linear_torch, linear_inputs, ((4, 6, 3), (5, 6, 6))),
    "conv1d": Pair(conv1d_jax, conv1d_torch, conv1d_inputs, ((2, 3, 10, 4, 3), (1, 2, 7, 3, 5))),
    "attention": Pair(attention_jax, attention_torch, attention_inputs, ((2, 5, 4), (1, 8, 8))),
    "batchnorm": Pair(batchnorm_jax, batchnorm_torch, batchnorm_inputs, ((8, 5, 6), (32, 4, 3))),
    "model": Pair(model_jax, model_torch, model_inputs, ((32, 64), (8, 16))),
}

BUGS = {
    "layernorm eps 1e-6": Bug("layernorm", partial(layernorm_jax, eps=1e-6), ((4, 8),), "xhat",
                              "xhat"),
    "eps outside sqrt": Bug("layernorm", partial(layernorm_jax, eps_outside=True), ((4, 8),),
                            "xhat", "xhat"),
    "gelu tanh": Bug("gelu", partial(gelu_jax, approximate=True), ((4, 8),), "out", None),
    "biased variance": Bug("batchnorm", batchnorm_biased_jax, ((8, 5, 6),), "hpreact",
                           "hpreact"),
    "W not transposed": Bug("linear", partial(linear_jax, transpose=False), ((5, 6, 6),),
                            "out", None),
    "softmax wrong axis": Bug("softmax", partial(softmax_jax, axis=0), ((5, 5),), "probs",
                              "probs"),
    "causal mask off by one": Bug("attention", partial(attention_jax, offset=1), ((2, 5, 4),),
                                  "probs", "probs"),
    "sum for mean": Bug("cross_entropy", partial(cross_entropy_jax, reduce=jnp.sum), ((8, 5),),
                        "out", "logprobs"),
    "dropped keepdims": Bug("layernorm", partial(layernorm_jax, keepdims=False), ((6, 6),),
                            "mean", "mean"),
}  # fmt: skip


def case(name: str, shape: tuple[int, ...], scale: float, bug: str | None = None):
    """(jax_fn, torch_fn, params, *args) of a pair, or with its bug in the JAX seat."""
    pair = PAIRS[name]
    params, args = pair.inputs(shape, scale)
    jax_fn = BUGS[bug].jax_fn if bug else pair.jax_fn
    return jax_fn, pair.torch_fn, params, *args


def numpy_inputs(name: str, shape: tuple[int, ...], scale: float, seed: int) -> tuple:
    """A pair's inputs drawn as parity draws them, for judges that need the arrays."""
    from jaxninja.parity.specs import draw, flatten_inputs

    leaves, treedef = flatten_inputs(*PAIRS[name].inputs(shape, scale))
    drawn = draw(leaves, seed, "float32")
    return jax.tree_util.tree_unflatten(treedef, [np.asarray(x) for x in drawn])
