"""Any two implementations: `parity.jax(fn)`, `parity.torch(fn)` and `parity.numpy(fn)` say which
library runs a function, so `compare` takes a Pallas kernel or a `custom_vjp` against a JAX
reference, two torch functions, or a NumPy reference, as well as JAX against PyTorch.

(`parity.jax` is `on_jax` here: this module uses the library names for the libraries.) A NumPy
side is values only: numpy has no autodiff, so a compare with one judges the outputs
and taps, not gradients. It runs in the dtype under test as numpy does (float32 and float16
natively, bfloat16 through ml_dtypes, where numpy's own functions may refuse it).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxninja.errors import UsageError
from jaxninja.parity.dtypes import narrowest, output_narrowings
from jaxninja.parity.sides import (
    Run,
    _out_leaves,
    call,
    canonical_tree,
    jax_side,
    torch_available,
    torch_side,
)
from jaxninja.parity.specs import is_float
from jaxninja.parity.taps import JaxTaps, recording

Kind = Literal["jax", "torch", "numpy"]


class Side(NamedTuple):
    """A function and the library that runs it; `label` names it in the report (its kind by
    default; two sides of one kind are told apart by their function names)."""

    kind: Kind
    fn: Callable
    label: str | None = None


def on_jax(fn: Callable, label: str | None = None) -> Side:
    """A JAX function `fn(params, *args)`: gradients by jax.vjp."""
    return Side("jax", fn, label)


def on_torch(fn: Callable, label: str | None = None) -> Side:
    """A PyTorch function `fn(params, *args)` on tensors: gradients by autograd."""
    return Side("torch", fn, label)


def on_numpy(fn: Callable, label: str | None = None) -> Side:
    """A NumPy function `fn(params, *args)` on arrays: values only, no gradients."""
    return Side("numpy", fn, label)


def as_sides(a: Any, b: Any) -> tuple[Side, Side]:
    """Two side objects, or two plain functions read as (JAX, PyTorch) as compare always has."""
    if isinstance(a, Side) != isinstance(b, Side):
        raise UsageError("give two side objects (parity.jax(fn), ...) or two plain functions")
    if not isinstance(a, Side):
        a, b = Side("jax", a), Side("torch", b)
    for s in (a, b):
        if s.kind not in ("jax", "torch", "numpy") or not callable(s.fn):
            raise UsageError(f"a side is parity.jax(fn), parity.torch(fn) or parity.numpy(fn), "
                             f"got kind {s.kind!r} with a {type(s.fn).__name__}")  # fmt: skip
    if "torch" in (a.kind, b.kind) and not torch_available():
        raise UsageError("a torch side needs PyTorch: pip install 'jaxninja[torch]'")
    return a, b


def labels(a: Side, b: Side) -> tuple[str, str]:
    """Each side's name in the report: its label, else its kind; two of one name are told
    apart by their functions' names, else numbered."""
    la, lb = a.label or a.kind, b.label or b.kind
    if la != lb:
        return la, lb
    na, nb = (getattr(s.fn, "__name__", "") for s in (a, b))
    if na != nb and "<lambda>" not in (na, nb) and na and nb:
        return f"{la} {na}", f"{lb} {nb}"
    return f"{la} 1", f"{lb} 2"


def runner(side: Side, label: str) -> Callable:
    """The side's runner, as engine.run_ways calls it."""
    if side.kind == "jax":
        return jax_side(side.fn, label)
    if side.kind == "torch":
        return torch_side(side.fn, label)
    return numpy_side(side.fn, label)


def numpy_side(fn: Callable, label: str = "numpy") -> Callable:
    """A side running a NumPy function on arrays of the run's dtype: values only."""

    def run(inputs, treedef, paths, dtype, cot_of, grads) -> Run:
        given = [np.array(x, jnp.dtype(dtype)) if is_float(x) else np.array(x) for x in inputs]
        params, args = jax.tree_util.tree_unflatten(treedef, given)
        rec = JaxTaps({})
        with recording(rec):
            out = call(fn, label, params, *args)
        outs = [(p, np.asarray(x)) for p, x in _out_leaves(out, label, np.ndarray | np.generic)]
        values = {("tap", k): np.asarray(v) for k, v in rec.values.items()}
        values |= {("out", p): x for p, x in outs}
        narrow = None
        if dtype == "float64":
            narrow = narrowest(output_narrowings([(p, x) for p, x in outs if is_float(x)]))
        raw = jax.tree.structure(out)
        return Run(canonical_tree(out), values, {}, narrow, raw)

    run.kind = "numpy"
    return run
