"""The notebook's MLP: C -> Linear(W1, b1) -> BatchNorm(n-1) -> tanh -> Linear(W2, b2) -> CE.

Parameters are a plain dict of arrays. `init_params` and `make_case` draw in numpy from seeded
generators, so JAX and PyTorch (torch_ref) start from bit-identical inputs. The forward comes
twice: `forward_chunked` is the notebook's, every intermediate under its notebook name (the
exercise-1 backward walks it in reverse); `forward` is the compact one built from layers.py,
whose caches feed the fused backward that training uses. Both give the same loss.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import lru_cache, partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxninja import memory
from jaxninja.config import ModelConfig, check_batch_size
from jaxninja.errors import UsageError
from jaxninja.models import evaluate, layers
from jaxninja.models.layers import BNStats

PARAMS = ("C", "W1", "b1", "W2", "b2", "bngain", "bnbias")
# every intermediate of the chunked forward, in forward order
INTERMEDIATES = (
    "emb", "embcat", "hprebn", "bnmeani", "bndiff", "bndiff2", "bnvar", "bnvar_inv", "bnraw",
    "hpreact", "h", "logits", "logit_maxes", "norm_logits", "counts", "counts_sum",
    "counts_sum_inv", "probs", "logprobs",
)  # fmt: skip
# the notebook's cmp order: the order in which the backward produces the gradients
GRAD_ORDER = (
    "logprobs", "probs", "counts_sum_inv", "counts_sum", "counts", "norm_logits", "logit_maxes",
    "logits", "h", "W2", "b2", "hpreact", "bngain", "bnbias", "bnraw", "bnvar_inv", "bnvar",
    "bndiff2", "bndiff", "bnmeani", "hprebn", "embcat", "W1", "b1", "emb", "C",
)  # fmt: skip

Params = dict[str, jax.Array]


def param_shapes(cfg: ModelConfig) -> dict[str, tuple[int, ...]]:
    V, T, E, H = cfg.vocab_size, cfg.block_size, cfg.n_embd, cfg.n_hidden
    return {
        "C": (V, E),
        "W1": (T * E, H),
        "b1": (H,),
        "W2": (H, V),
        "b2": (V,),
        "bngain": (1, H),
        "bnbias": (1, H),
    }


def n_params(cfg: ModelConfig) -> int:
    return sum(math.prod(shape) for shape in param_shapes(cfg).values())


def check_fits(cfg: ModelConfig) -> None:
    """Refuse a model too large for this machine, before a byte of it is allocated: an
    evaluation chunk holds hidden units and logits of each example."""
    memory.check_model(cfg, n_params(cfg), cfg.n_hidden + cfg.vocab_size)


def bn_shapes(cfg: ModelConfig) -> dict[str, tuple[int, ...]]:
    """The one BatchNorm's statistics, in its gain's shape."""
    return {"bn": (1, cfg.n_hidden)}


def init_params(cfg: ModelConfig, seed: int) -> dict[str, np.ndarray]:
    """The notebook's initialisation, every draw seeded, as numpy arrays of cfg.dtype.

    Drawn in float64 and then cast, so a float32 and a float64 model of one seed agree to
    float32 rounding. W1 is Kaiming-scaled for tanh (gain 5/3); b1 is kept although BatchNorm
    makes it useless, as in the notebook, so its gradient gets checked too.
    """
    check_fits(cfg)
    rng = np.random.default_rng([seed, 0])
    shapes = param_shapes(cfg)
    fan_in = cfg.n_embd * cfg.block_size
    params = {
        "C": rng.standard_normal(shapes["C"]),
        "W1": rng.standard_normal(shapes["W1"]) * (5 / 3) / fan_in**0.5,
        "b1": rng.standard_normal(shapes["b1"]) * 0.1,
        "W2": rng.standard_normal(shapes["W2"]) * 0.1,
        "b2": rng.standard_normal(shapes["b2"]) * 0.1,
        "bngain": 1.0 + 0.1 * rng.standard_normal(shapes["bngain"]),
        "bnbias": 0.1 * rng.standard_normal(shapes["bnbias"]),
    }
    return {k: v.astype(cfg.dtype) for k, v in params.items()}


class Case(NamedTuple):
    """One seeded gradient-check case: parameters and a batch, all numpy."""

    params: dict[str, np.ndarray]
    Xb: np.ndarray  # (B, T) int32
    Yb: np.ndarray  # (B,) int32


def make_case(
    cfg: ModelConfig,
    X: np.ndarray,
    Y: np.ndarray,
    batch_size: int,
    seed: int,
    init: Callable[[ModelConfig, int], dict[str, np.ndarray]] | None = None,
) -> Case:
    """Parameters initialised the notebook's way (or by `init`, another model's) and a batch
    drawn, with replacement, from X, Y."""
    check_batch_size(batch_size, len(X))
    if X.shape[1] != cfg.block_size:
        raise UsageError(f"X has block size {X.shape[1]}, the config {cfg.block_size}")
    ix = np.random.default_rng([seed, 1]).integers(0, len(X), batch_size)
    return Case((init or init_params)(cfg, seed), X[ix], Y[ix])


def to_device(params: dict[str, np.ndarray]) -> Params:
    return {k: jnp.asarray(v) for k, v in params.items()}


@partial(jax.jit, static_argnames="eps")
def forward_chunked(
    params: Params,
    Xb: jax.Array,
    Yb: jax.Array,
    taps: dict[str, jax.Array] | None = None,
    eps: float = 1e-5,
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """The notebook's forward, broken into the atomic ops whose backward exercise 1 writes.

    `taps`, if given, holds zero arrays added to each intermediate as it is made: the gradient of
    the loss w.r.t. a tap is the gradient w.r.t. that intermediate (autodiff.py uses this).
    Returns the loss and every intermediate by name.
    """
    C, W1, b1, W2, b2 = (params[k] for k in ("C", "W1", "b1", "W2", "b2"))
    bngain, bnbias = params["bngain"], params["bnbias"]
    n = Xb.shape[0]
    t = {} if taps is None else taps
    v: dict[str, jax.Array] = {}

    def keep(name: str, value: jax.Array) -> jax.Array:
        v[name] = value + t[name] if name in t else value
        return v[name]

    emb = keep("emb", C[Xb])  # (B, T, E)
    embcat = keep("embcat", emb.reshape(n, -1))  # (B, T*E)
    hprebn = keep("hprebn", embcat @ W1 + b1[None, :])  # (B, H)
    bnmeani = keep("bnmeani", 1 / n * hprebn.sum(0, keepdims=True))  # (1, H)
    bndiff = keep("bndiff", hprebn - bnmeani)  # (B, H)
    bndiff2 = keep("bndiff2", bndiff**2)  # (B, H)
    bnvar = keep("bnvar", 1 / (n - 1) * bndiff2.sum(0, keepdims=True))  # (1, H) Bessel's n-1
    bnvar_inv = keep("bnvar_inv", (bnvar + eps) ** -0.5)  # (1, H)
    bnraw = keep("bnraw", bndiff * bnvar_inv)  # (B, H)
    hpreact = keep("hpreact", bngain * bnraw + bnbias)  # (B, H)
    h = keep("h", jnp.tanh(hpreact))  # (B, H)
    logits = keep("logits", h @ W2 + b2[None, :])  # (B, V)
    logit_maxes = keep("logit_maxes", logits.max(1, keepdims=True))  # (B, 1)
    norm_logits = keep("norm_logits", logits - logit_maxes)  # (B, V) for numerical stability
    counts = keep("counts", jnp.exp(norm_logits))  # (B, V)
    counts_sum = keep("counts_sum", counts.sum(1, keepdims=True))  # (B, 1)
    counts_sum_inv = keep("counts_sum_inv", counts_sum**-1)  # (B, 1)
    probs = keep("probs", counts * counts_sum_inv)  # (B, V)
    logprobs = keep("logprobs", jnp.log(probs))  # (B, V)
    loss = -logprobs[jnp.arange(n), Yb].mean()
    return loss, v


class Cache(NamedTuple):
    """What the fused backward needs from the compact forward, one entry per layer."""

    emb: layers.EmbeddingCache
    flat: tuple[int, ...]
    lin1: layers.LinearCache
    bn: layers.BatchNormCache
    tanh: jax.Array
    lin2: layers.LinearCache
    ce: layers.CrossEntropyCache


def forward(
    params: Params, Xb: jax.Array, Yb: jax.Array, eps: float = 1e-5, axis_name: str | None = None
):
    """The compact forward: (loss, Cache). Not jitted itself; it is traced inside callers.

    Under `shard_map` with `axis_name`, Xb and Yb are this device's slice of the batch, and
    BatchNorm and the loss reduce over the global batch (layers.py).
    """
    emb, c_emb = layers.embedding_forward(params["C"], Xb)  # (B, T, E)
    embcat, c_flat = layers.flatten_consecutive_forward(emb, Xb.shape[1])  # (B, T*E)
    hprebn, c_lin1 = layers.linear_forward(embcat, params["W1"], params["b1"])  # (B, H)
    hpreact, c_bn = layers.batchnorm_forward(
        hprebn, params["bngain"], params["bnbias"], eps, axis_name
    )  # (B, H)
    h, c_tanh = layers.tanh_forward(hpreact)  # (B, H)
    logits, c_lin2 = layers.linear_forward(h, params["W2"], params["b2"])  # (B, V)
    loss, c_ce = layers.cross_entropy_forward(logits, Yb, axis_name)
    return loss, Cache(c_emb, c_flat, c_lin1, c_bn, c_tanh, c_lin2, c_ce)


@partial(jax.jit, static_argnames="eps")
def forward_loss(params: Params, Xb: jax.Array, Yb: jax.Array, eps: float = 1e-5) -> jax.Array:
    """The compact forward's loss, jitted."""
    return forward(params, Xb, Yb, eps)[0]


def _hprebn(params: Params, X: jax.Array) -> jax.Array:
    """BatchNorm's input: (N, T) -> hprebn (N, H)."""
    emb, _ = layers.embedding_forward(params["C"], X)  # (N, T, E)
    return layers.linear_forward(emb.reshape(len(X), -1), params["W1"], params["b1"])[0]


@partial(jax.jit, static_argnames="eps")
def logits_eval(params: Params, bn: BNStats, X: jax.Array, eps: float = 1e-5) -> jax.Array:
    """Inference forward with fixed BatchNorm statistics: (N, T) -> logits (N, V)."""
    hpreact = layers.batchnorm_eval(
        _hprebn(params, X), params["bngain"], params["bnbias"], *bn, eps
    )
    logits, _ = layers.linear_forward(jnp.tanh(hpreact), params["W2"], params["b2"])  # (N, V)
    return logits


@lru_cache
def eval_fns(eps: float) -> tuple[Callable, dict[str, Callable]]:
    """(logits, {"bn": BatchNorm's input}), each (params, bn, X) with bn {"bn": BNStats}: what
    evaluate.py streams, made once per eps so that its jit caches them."""

    def logits(params, bn, X):
        return logits_eval(params, bn["bn"], X, eps)

    return logits, {"bn": lambda params, bn, X: _hprebn(params, X)}


def calibrate_bn(params: Params, X: np.ndarray | jax.Array) -> BNStats:
    """The notebook's calibration: BatchNorm's mean and (n-1) variance over all of X, streamed
    (evaluate.calibrate)."""
    H = params["W1"].shape[1]
    return evaluate.calibrate(eval_fns(1e-5)[1], {"bn": (1, H)}, params, X)["bn"]


def split_loss(
    params: Params, bn: BNStats, X: np.ndarray, Y: np.ndarray, eps: float = 1e-5
) -> float:
    """The notebook's split_loss: mean cross-entropy over a whole split in inference mode,
    streamed over chunks (evaluate.split_loss)."""
    return evaluate.split_loss(eval_fns(eps)[0], params, {"bn": bn}, X, Y)
