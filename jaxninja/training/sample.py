"""Sampling names from a trained model, as the notebook's last cell does (or makemore's
generate, for the GPT), for n names at once.

All n contexts advance together under one jitted `lax.scan` of max_len steps; each name ends at
its first terminator. A context window starts as the notebook's, all '.', and slides; a GPT's
row starts with its one start token and grows until it holds block_size tokens, then slides, as
makemore crops to the block size (registry.sampler). Seeded through a jax.random key.
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


@partial(jax.jit, static_argnames=("logits_at", "n", "block_size", "start", "max_len"))
def _sample_ids(logits_at, params, bn, key, temperature, n, block_size, start, max_len):
    """max_len tokens for n sequences. The window (n, T) holds the latest tokens: its first
    `start` are the start tokens (0), then each new token goes to the next free place, and once
    the window is full the window slides by one (makemore's crop to the block size)."""

    def step(carry, k):  # window (n, T), length: the tokens in it
        window, length = carry
        logits = logits_at(params, bn, window, length - 1) / temperature  # (n, V)
        ix = jax.random.categorical(k, logits, axis=-1).astype(window.dtype)  # (n,)
        full = length == block_size
        window = jnp.where(full, jnp.roll(window, -1, axis=1), window)
        window = window.at[:, jnp.where(full, block_size - 1, length)].set(ix)
        return (window, jnp.minimum(length + 1, block_size)), ix

    window = jnp.zeros((n, block_size), jnp.int32)
    carry = (window, jnp.asarray(start, jnp.int32))
    _, ids = jax.lax.scan(step, carry, jax.random.split(key, max_len))
    return ids.T  # (n, max_len)


def sample_names(
    cfg: ModelConfig,
    params: dict[str, jax.Array],
    bn: dict[str, BNStats],
    vocab: Vocab,
    n: int = 20,
    seed: int = 0,
    temperature: float = 1.0,
    max_len: int | None = None,
) -> list[str]:
    """n names from the model `cfg` describes, BatchNorm on the statistics `bn` (by name), each
    cut at its terminator (or at max_len characters; None: the model's, registry.sampler)."""
    if not n >= 1:
        raise UsageError(f"the number of names must be >= 1, got {n}")
    if not 0 < temperature < float("inf"):
        raise UsageError(f"temperature must be > 0, got {temperature}")
    logits_at, start, longest = registry.sampler(cfg)
    max_len = longest if max_len is None else max_len
    ids = _sample_ids(
        logits_at, params, bn, jax.random.key(seed), temperature, n, cfg.block_size, start,
        max_len,
    ).tolist()  # fmt: skip
    return [vocab.decode(row[: row.index(0)] if 0 in row else row) for row in ids]
