"""The jax.grad reference: gradients of the parameters and of every intermediate.

An intermediate's gradient comes from a zero-valued tap added to it in `forward_chunked`:
d loss / d tap at tap = 0 is exactly d loss / d intermediate, with nothing else changed.
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp

from jaxninja.models.mlp import Params, forward_chunked


@partial(jax.jit, static_argnames="eps")
def grads_autodiff(
    params: Params, Xb: jax.Array, Yb: jax.Array, eps: float = 1e-5
) -> dict[str, jax.Array]:
    """jax.grad of the chunked forward's loss, keyed like `backward_atomic`'s result."""
    _, values = jax.eval_shape(partial(forward_chunked, eps=eps), params, Xb, Yb)
    taps = {k: jnp.zeros(s.shape, s.dtype) for k, s in values.items()}

    def loss_of(p, t):
        return forward_chunked(p, Xb, Yb, t, eps=eps)[0]

    dparams, dtaps = jax.grad(loss_of, argnums=(0, 1))(params, taps)
    return {**dtaps, **dparams}
