"""Sampling names from a trained model, as the notebook's last cell does, for n names at once.

All n contexts advance together under one jitted `lax.scan` of max_len steps; each name ends at
its first terminator. Seeded through a jax.random key.
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp

from jaxninja.config import ModelConfig
from jaxninja.data import Vocab
from jaxninja.errors import UsageError
from jaxninja.models import registry
from jaxninja.models.layers import BNStats


@partial(jax.jit, static_argnames=("logits_fn", "n", "block_size", "max_len"))
def _sample_ids(logits_fn, params, bn, key, temperature, n, block_size, max_len):
    def step(context, k):  # context (n, T)
        logits = logits_fn(params, bn, context) / temperature  # (n, V)
        ix = jax.random.categorical(k, logits, axis=-1).astype(context.dtype)  # (n,)
        return jnp.concatenate([context[:, 1:], ix[:, None]], axis=1), ix

    context = jnp.zeros((n, block_size), jnp.int32)
    _, ids = jax.lax.scan(step, context, jax.random.split(key, max_len))
    return ids.T  # (n, max_len)


def sample_names(
    cfg: ModelConfig,
    params: dict[str, jax.Array],
    bn: dict[str, BNStats],
    vocab: Vocab,
    n: int = 20,
    seed: int = 0,
    temperature: float = 1.0,
    max_len: int = 64,
) -> list[str]:
    """n names from the model `cfg` describes, BatchNorm on the statistics `bn` (by name), each
    cut at its terminator (or at max_len characters)."""
    if not n >= 1:
        raise UsageError(f"the number of names must be >= 1, got {n}")
    if not 0 < temperature < float("inf"):
        raise UsageError(f"temperature must be > 0, got {temperature}")
    ids = _sample_ids(
        registry.logits(cfg), params, bn, jax.random.key(seed), temperature, n, cfg.block_size,
        max_len,
    ).tolist()  # fmt: skip
    return [vocab.decode(row[: row.index(0)] if 0 in row else row) for row in ids]
