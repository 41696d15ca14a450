"""Evaluation of any model over a whole split, streamed: BatchNorm calibration and split losses.

Memory stays at a chunk's activations however large the split: the forward runs under jit on
chunks of EVAL_CHUNK targets (examples, or for makemore's rows EVAL_CHUNK // T rows of T
positions), and their sums are added up on the host in float64. Full chunks
go unmasked (XLA fuses the sum into the matmul); the last, partial one is padded and masked, to
the smallest of the chunk size, its half, quarter, ... (down to a sixteenth) that holds it: a
handful of shapes serve every split, and names.txt's val and test splits (22k examples) compute
on 32,768 rows, not 65,536. A model supplies two functions of
(params, bn, X), each made once per config so jit caches it: its inference logits, and the
input of a named BatchNorm (the layers before it on their statistics `bn`).

Calibration takes two exact passes over the split for each BatchNorm, as the notebook computes
it all at once: the mean first, then the sum of squared deviations from that mean, divided by
n - 1 (Bessel's correction, n counting every example and position), the chunks' sums added in
float64 on the host, so the result is as exact as the all-at-once computation. On names.txt the
streamed calibration and split losses equal a float64 all-at-once reference to 1e-6 (tested, with
one chunk and with 183).

`python benchmarks/eval_memory.py` (a generated 2M-word file, 11.4M train examples; calibration
and the three split losses, each way in its own process; 2-core x86-64 CPU VM, jax 0.10.2): all
at once, the notebook's way, 24.8 s and 10,979 MB peak; streamed, 5.2 s and 1,236 MB (mostly the
data itself), the split losses agreeing to 3e-7.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from functools import partial
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxninja.config import EVAL_CHUNK
from jaxninja.data import IGNORE
from jaxninja.models.layers import BNStats, along_last, batch_axes

# ~50 MB of activations a chunk at the MLP's 200 hidden units in float32


def chunks(
    X: np.ndarray | jax.Array, *more, size: int | None = None
) -> Iterator[tuple[list[np.ndarray], Any]]:
    """([X's chunk, more's chunks] of `size` rows (EVAL_CHUNK), None for a full chunk or the
    mask of a padded last one, of `padded_size` rows)."""
    n, size = len(X), size or EVAL_CHUNK
    for start in range(0, n, size):
        rows = slice(start, min(start + size, n))
        parts = [np.asarray(a[rows]) for a in (X, *more)]
        if len(parts[0]) == size:
            yield parts, None
            continue
        real = len(parts[0])
        padded = padded_size(real, size)
        parts = [np.pad(a, [(0, padded - real)] + [(0, 0)] * (a.ndim - 1)) for a in parts]
        yield parts, np.arange(padded) < real


def padded_size(rows: int, size: int) -> int:
    """The rows a partial chunk of `rows` is padded to: the smallest of size, size // 2, ...,
    size // 16 that holds them (a few shapes to compile, little padding to compute)."""
    padded = size
    for _ in range(4):
        if padded // 2 < rows:
            break
        padded //= 2
    return padded


@partial(jax.jit, static_argnames=("bn_input", "power"))
def _centered_sum(bn_input: Callable, params, bn, X, mask, center, power: int) -> jax.Array:
    """Sum over a chunk's real rows, and their positions, of (a BatchNorm's input - center) **
    power: (H,). One sum a call: XLA fuses it into the matmul, two at once it does not."""
    x = bn_input(params, bn, X)  # (N, H) or (N, T, H)
    d = x - along_last(center, x.ndim)
    if mask is not None:
        d = jnp.where(mask.reshape((-1,) + (1,) * (d.ndim - 1)), d, 0)
    return (d if power == 1 else d * d).sum(batch_axes(d))


def _total(bn_input: Callable, params, stats, X, center: np.ndarray, power: int) -> np.ndarray:
    """`_centered_sum` over every chunk of X, added up on the host in float64: (H,)."""
    acc = np.zeros(center.shape, np.float64)
    for (Xc,), mask in chunks(X):
        acc += np.asarray(_centered_sum(bn_input, params, stats, Xc, mask, center, power))
    return acc


def calibrate(
    bn_inputs: dict[str, Callable],
    shapes: dict[str, tuple[int, ...]],
    params: dict[str, jax.Array],
    X: np.ndarray | jax.Array,
) -> dict[str, BNStats]:
    """The notebook's calibration, for every BatchNorm in forward order: its mean and (n-1)
    variance over every example (and position) of X, with the BatchNorms before it on the
    statistics just calibrated; two passes each (the mean, then the squared deviations from
    it), as exact as all at once."""
    dtype = next(iter(params.values())).dtype
    stats: dict[str, BNStats] = {}
    for name, bn_input in bn_inputs.items():
        positions = jax.eval_shape(bn_input, params, stats, X[:1]).shape[1:-1]  # (), or (T,)
        count = len(X) * int(np.prod(positions))
        H = shapes[name][-1]
        mean = _total(bn_input, params, stats, X, np.zeros((H,), dtype), 1) / count
        var = _total(bn_input, params, stats, X, mean.astype(dtype), 2) / (count - 1)
        stats[name] = BNStats(*(jnp.asarray(v.reshape(shapes[name]), dtype) for v in (mean, var)))
    return stats


@partial(jax.jit, static_argnames="logits")
def _nll_sum(logits: Callable, params, bn, X, Y, mask) -> tuple[jax.Array, jax.Array]:
    """(the summed negative log-likelihood, the count) over a chunk's counted targets: every
    real row's one (N,), or the positions of its (N, T) not IGNORE."""
    z = logits(params, bn, X)  # (N, V) or (N, T, V)
    counted = Y != IGNORE
    if mask is not None:
        counted = counted & mask.reshape((-1,) + (1,) * (Y.ndim - 1))
    logprobs = jax.nn.log_softmax(z, axis=-1)
    nll = -jnp.take_along_axis(logprobs, jnp.where(counted, Y, 0)[..., None], axis=-1)[..., 0]
    if mask is None and Y.ndim == 1:  # every target counts: the unmasked sum XLA fuses
        return nll.sum(), jnp.asarray(len(Y))
    return jnp.where(counted, nll, 0).sum(), counted.sum()


def split_loss(logits: Callable, params, bn, X: np.ndarray, Y: np.ndarray) -> float:
    """The notebook's split_loss: mean cross-entropy over a whole split in inference mode, over
    its targets (N,), or over the counted positions of makemore's rows (N, T) (its evaluate:
    the sum over every counted position over their count). Chunks of EVAL_CHUNK targets."""
    if len(X) == 0:
        return float("nan")
    total, count = 0.0, 0
    size = max(1, EVAL_CHUNK // int(np.prod(np.shape(Y)[1:])))  # rows a chunk
    for (Xc, Yc), mask in chunks(X, Y, size=size):
        nll, n = _nll_sum(logits, params, bn, Xc, Yc, mask)
        total, count = total + float(nll), count + int(n)
    return total / count if count else float("nan")
