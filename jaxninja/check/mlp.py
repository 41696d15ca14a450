"""`jaxninja check`: the part-4 MLP's hand-written backward, checked three ways on parity's engine.

On one seeded case (models.mlp.make_case) every gradient source runs, in float64 on the case
upcast and in the dtype under test: the atomic manual backward (exercise 1), the fused one
(exercises 2 + 3), jax.grad, PyTorch autograd and PyTorch's manual backward (torch_ref); and
jax.grad once more on the inputs moved by a few ulps, the rows' sensitivity. A *way* compares two
sources row by row, in the notebook's `cmp` order:
  (1) manual vs jax.grad;  (2) manual vs PyTorch autograd;
  (3) against each other: fused vs atomic, JAX manual vs PyTorch manual, jax.grad vs autograd.
Each row is judged by parity's rule (parity/named.py, parity/verdict.py). Without PyTorch the
torch ways are skipped, and said so.

The atomic backward (models/mlp_backward.backward_atomic) is written out line by line, as the
notebook's exercise 1, and calls nothing from layers.py; the fused one is built from the layers'
backwards. So `fused` compares two derivations of each row they share, not one code with itself.
A wrong backward is nowhere near its bound: tests/test_mistakes.py holds a catalogue of real
mistakes (Bessel's n for n-1, 1/(n-1) in the mean term, a dropped keepdims, the second use of
`counts` forgotten, `dC` by `.set`, `1 - h`, a missing transpose, `dbngain` summed over the wrong
axis), each failing in float32 at the defaults and in float64 at batch 32 and 2, naming its first
wrong tensor; a dropped `dlogit_maxes` term is not a mistake (it is zero in exact arithmetic).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import jax
import numpy as np

from jaxninja.check import sources as checked_sources
from jaxninja.check.sources import upcast
from jaxninja.compile_cache import quick_jit
from jaxninja.config import ModelConfig
from jaxninja.models.mlp import GRAD_ORDER, Case, forward, forward_chunked, to_device
from jaxninja.models.mlp_autodiff import grads_autodiff
from jaxninja.models.mlp_backward import FUSED_ROWS, backward_atomic, backward_fused
from jaxninja.parity.named import F64, MOVED, Rules, moved_cotangent, moved_inputs
from jaxninja.parity.table import Report

# Zero in exact arithmetic: d loss/d logit_maxes (softmax is shift invariant) and d loss/d b1
# (BatchNorm subtracts the batch mean, so b1 cannot change the loss). Each is a sum, over the
# axis named, of the gradient named; that gradient's size sets the size of the rounding left over.
EXACT_ZERO = {"logit_maxes": ("norm_logits", 1), "b1": ("hprebn", 0)}
# the rows each source makes
ROWS_OF = {
    "manual": GRAD_ORDER,
    "fused": FUSED_ROWS,
    "jax.grad": GRAD_ORDER,
    "torch autograd": GRAD_ORDER,
    "torch manual": GRAD_ORDER,
}
# way name -> (candidate, reference)
WAYS = {
    "jax.grad": ("manual", "jax.grad"),
    "torch": ("manual", "torch autograd"),
    "fused": ("fused", "manual"),
    "torch manual": ("manual", "torch manual"),
    "grad~torch": ("jax.grad", "torch autograd"),
}


def rules(
    shapes: dict[str, tuple[int, ...]], ways=WAYS, rows_of=ROWS_OF, order=GRAD_ORDER
) -> Rules:
    return Rules(ways, tuple(order), shapes, rows_of, sums=EXACT_ZERO)


def fused_gradients(
    params: dict[str, jax.Array], Xb: jax.Array, Yb: jax.Array, eps: float, **parts: Callable
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """The compact forward and the fused backward, exercise 3 optionally swapped for `parts`
    (backward_fused's `dhprebn_fn`)."""
    loss_value, cache = forward(params, Xb, Yb, eps)
    return loss_value, backward_fused(cache, **parts)


# each runs once or twice a check: compiled quickly (the models' own jits compile for training)
_fused_jit = quick_jit(fused_gradients, static_argnames="eps")
_forward_chunked = quick_jit(forward_chunked, static_argnames="eps")
_grads_autodiff = quick_jit(grads_autodiff, static_argnames="eps")


def run_sources(
    params: dict[str, np.ndarray], Xb, Yb, eps: float, with_torch: bool,
    atomic: Callable = backward_atomic, **parts: Callable,
) -> tuple[dict[str, dict[str, np.ndarray]], dict[str, float], dict[str, np.ndarray]]:  # fmt: skip
    """Every source's gradients by tensor name in the params' dtype (numpy), the losses, and
    the forward's intermediates. `atomic` stands in for exercise 1 (params, v, Xb, Yb) -> dict,
    `parts` for exercise 3 in the fused backward."""
    p = to_device(params)
    loss_chunked, values = _forward_chunked(p, Xb, Yb, eps=eps)
    if parts:  # a fresh trace: another's code is never run from a stale compile
        fused_fn = quick_jit(lambda q, x, y: fused_gradients(q, x, y, eps, **parts))
    else:
        fused_fn = partial(_fused_jit, eps=eps)
    loss_compact, fused = fused_fn(p, Xb, Yb)
    sources = {
        "manual": atomic(p, values, Xb, Yb),
        "fused": fused,
        "jax.grad": _grads_autodiff(p, Xb, Yb, eps=eps),
    }
    losses = {"chunked": float(loss_chunked), "compact": float(loss_compact)}
    if with_torch:
        import torch_ref

        torch_loss, _, sources["torch autograd"] = torch_ref.autograd(params, Xb, Yb, eps=eps)
        sources["torch manual"] = torch_ref.manual_backward(params, Xb, Yb, eps=eps)
        losses["torch"] = torch_loss
    return jax.tree.map(np.asarray, sources), losses, jax.tree.map(np.asarray, values)


def moved_truth(case: Case, eps: float, seed: int) -> dict[str, np.ndarray]:
    """jax.grad in float64 on the case's parameters moved by a few ulps, its cotangent too."""
    cot = moved_cotangent(seed)
    with jax.enable_x64(True):
        grads = _grads_autodiff(to_device(moved_inputs(case.params, seed)), case.Xb, case.Yb, eps)
        return {k: np.asarray(v) * cot for k, v in grads.items()}


def gradient_sources(
    case: Case, eps: float, with_torch: bool, atomic: Callable = backward_atomic, **parts: Callable
) -> tuple[dict, dict[str, float], dict[str, dict[str, np.ndarray]]]:
    """The engine's flat sources (named.py): each source in the case's dtype and, for a float32
    case, in float64 on the case upcast; the moved truth. Also the losses (the case's dtype) and
    the forward's intermediates by dtype ("float64" and the case's)."""
    dtype = str(next(iter(case.params.values())).dtype)
    sources, losses, values = run_sources(
        case.params, case.Xb, case.Yb, eps, with_torch, atomic, **parts
    )
    values_of = {dtype: values}
    if dtype != "float64":
        with jax.enable_x64(True):
            wide, _, values_of["float64"] = run_sources(
                upcast(case.params), case.Xb, case.Yb, eps, with_torch, atomic, **parts
            )
        sources |= {s + F64: g for s, g in wide.items()}
    sources[MOVED] = moved_truth(case, eps, 0)
    return sources, losses, values_of


def shapes_of(case: Case, values: dict[str, np.ndarray]) -> dict[str, tuple[int, ...]]:
    return {k: tuple(x.shape) for k, x in {**values, **case.params}.items()}


def run_check(
    cfg: ModelConfig,
    X: np.ndarray,
    Y: np.ndarray,
    batch_size: int = 32,
    seed: int = 0,
    with_torch: bool | None = None,
    atomic: Callable = backward_atomic,
    **parts: Callable,
) -> Report:
    """Build the seeded case from (X, Y) and compare every way on it.

    `atomic` and `parts` (`dhprebn_fn`) put other code in the seats of exercises 1 and 3 (the
    mistake catalogue's tests)."""

    def run(case: Case, with_torch: bool):
        sources, losses, values = gradient_sources(case, cfg.eps, with_torch, atomic, **parts)
        return sources, losses, rules(shapes_of(case, values[cfg.dtype]))

    model = checked_sources.ModelSources(run, WAYS)
    return checked_sources.run_check(model, cfg, X, Y, batch_size, seed, with_torch)[0]
