"""The sides that `compare` and `check_backward` run: a JAX function (its VJP by `jax.vjp`), a
hand-written layer (forward and backward), a PyTorch function (autograd). Each takes the drawn
inputs in the run's dtype and returns a `Run`: outputs, taps and gradients as numpy arrays.

JAX sides run jitted, one compile per function, tree and dtype, reused over seeds; the function
is traced under `jax.disable_jit()`, so a `jax.jit` inside it is inlined: its taps are seen even
when it was compiled before outside `compare`, and their values leave through the outer trace.
A function that cannot be traced (Python control flow on values) is named, as bad input.
"""

from __future__ import annotations

import importlib.util
import os
import traceback
from collections.abc import Callable
from contextlib import ExitStack
from functools import lru_cache
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxninja.compile_cache import quick_jit
from jaxninja.errors import UsageError
from jaxninja.parity.dtypes import (
    Narrowing,
    jax_narrowings,
    library_dirs,
    narrowest,
    output_narrowings,
    torch_watch,
)
from jaxninja.parity.specs import is_float
from jaxninja.parity.taps import JaxTaps, TorchTaps, recording

_TRACER_ERRORS = (
    jax.errors.ConcretizationTypeError,
    jax.errors.TracerArrayConversionError,
    jax.errors.TracerIntegerConversionError,
)
Key = tuple[str, str]  # ("tap", name), ("out", path) or ("in", path)
SHARED_BYTES = 2**20  # _torch_inputs: a leaf this large is given uncloned in float64
CotangentOf = Callable[[int, tuple[int, ...], Any], np.ndarray]  # leaf index, shape, dtype


class Run(NamedTuple):
    """One side's results on one seed and dtype. `values`: taps in call order, then outputs;
    `grads`: the taps' in reverse call order (the order the backward reaches them), then the
    float inputs'; None where a side made no gradient. `out_tree`: the outputs' structure, a
    list read as a tuple (`raw_tree` keeps which); `narrow`: in a float64 run, the narrower
    float the side computed in (dtypes.py), or None."""

    out_tree: Any
    values: dict[Key, np.ndarray]
    grads: dict[Key, np.ndarray | None]
    narrow: Narrowing | None = None
    raw_tree: Any = None


def raised(label: str, e: BaseException) -> str:
    """One line: the exception, its message's first line, and the last frame in the user's code."""
    skip = library_dirs()
    frames = [f for f in traceback.extract_tb(e.__traceback__) if not f.filename.startswith(skip)]
    where = f" ({os.path.relpath(frames[-1].filename)}:{frames[-1].lineno})" if frames else ""
    text = (str(e).strip().splitlines() or [""])[0][:200]
    return f"the {label} function raised {type(e).__name__}: {text}{where}"


def call(fn: Callable, label: str, *args: Any) -> Any:
    try:
        return fn(*args)
    except (UsageError, *_TRACER_ERRORS):
        raise
    except Exception as e:
        raise UsageError(raised(label, e)) from None


def canonical_tree(out: Any) -> Any:
    """The structure of `out` with every list read as a tuple: sequences of the same length
    agree whichever each side returns."""

    def canon(x: Any) -> Any:
        if isinstance(x, list) or type(x) is tuple:
            return tuple(canon(v) for v in x)
        if type(x) is dict:
            return {k: canon(v) for k, v in x.items()}
        return x

    return jax.tree.structure(canon(out))


def _out_leaves(out: Any, label: str, array_type: type) -> list[tuple[str, Any]]:
    with_path = jax.tree_util.tree_flatten_with_path(out)[0]
    for path, x in with_path:
        if not isinstance(x, array_type):
            raise UsageError(
                f"the {label} function returned a {type(x).__name__} at out"
                f"{jax.tree_util.keystr(path)}: return arrays (or a pytree of them)"
            )
    return [("out" + jax.tree_util.keystr(p), x) for p, x in with_path]


def _merge(floats: list, others: list, mask: tuple[bool, ...]) -> list:
    f, o = iter(floats), iter(others)
    return [next(f) if m else next(o) for m in mask]


def _zeros(tap_shapes: dict) -> dict:
    return {k: jnp.zeros(s.shape, s.dtype) for k, s in tap_shapes.items() if is_float(s)}


@lru_cache(maxsize=128)
def _jax_program(fn: Callable, treedef: Any, mask: tuple, grads: bool, label: str):
    """(forward, program): forward(floats, others, perturb) -> (float outputs, (out, taps));
    program(floats, others, cotangents) -> (out, taps, d floats, d taps)."""

    def forward(floats, others, perturb):
        rec = JaxTaps(perturb)
        with recording(rec), jax.disable_jit():
            params, args = jax.tree_util.tree_unflatten(treedef, _merge(floats, others, mask))
            out = call(fn, label, params, *args)
        leaves = [x for _, x in _out_leaves(out, label, jax.Array)]
        return [x for x in leaves if is_float(x)], (out, rec.values)

    def program(floats, others, cots):
        if not grads:
            return (*forward(floats, others, {})[1], None, None)
        perturb = _zeros(jax.eval_shape(forward, floats, others, {})[1][1])
        _, vjp_fn, (out, taps) = jax.vjp(
            lambda f, p: forward(f, others, p), floats, perturb, has_aux=True
        )
        return (out, taps, *vjp_fn(cots))

    return forward, quick_jit(program, small=False)


@lru_cache(maxsize=128)
def _manual_program(forward_fn: Callable, backward_fn: Callable, treedef: Any, mask: tuple):
    """A hand-written layer as a side: forward(params, *args) -> (out, cache) and
    backward(dout, cache) -> (dparams, dargs)."""

    def forward(floats, others, perturb):
        rec = JaxTaps({})
        with recording(rec), jax.disable_jit():
            params, args = jax.tree_util.tree_unflatten(treedef, _merge(floats, others, mask))
            out, cache = _pair(call(forward_fn, "forward", params, *args))
        leaves = [x for _, x in _out_leaves(out, "forward", jax.Array)]
        return [x for x in leaves if is_float(x)], (out, rec.values, cache)

    def program(floats, others, cots):
        _, (out, taps, cache) = forward(floats, others, {})
        cot = iter(cots)
        leaves, out_tree = jax.tree.flatten(out)
        dout = [next(cot) if is_float(x) else jnp.zeros_like(x) for x in leaves]
        with jax.disable_jit():
            d = call(backward_fn, "backward", jax.tree.unflatten(out_tree, dout), cache)
        dleaves = _grad_leaves(d, treedef)
        return out, taps, [g for g, m in zip(dleaves, mask, strict=True) if m], {}

    def shapes_only(floats, others, perturb):
        diff, (out, taps, _) = forward(floats, others, perturb)
        return diff, (out, taps)

    return shapes_only, quick_jit(program, small=False)


def _pair(result: Any) -> tuple[Any, Any]:
    if not (isinstance(result, tuple) and len(result) == 2):
        raise UsageError("forward must return (out, cache), as the layers of layers.py do")
    return result


def _grad_leaves(d: Any, treedef: Any) -> list:
    """backward's (dparams, dargs), one entry per input leaf (None where it gives none)."""
    if not (isinstance(d, tuple | list) and len(d) == 2 and isinstance(d[1], tuple | list)):
        raise UsageError("backward must return (dparams, dargs): dargs a tuple, one per arg")
    try:
        return treedef.flatten_up_to((d[0], tuple(d[1])))
    except (ValueError, TypeError) as e:
        first = (str(e).strip().splitlines() or [""])[0][:160]
        raise UsageError(
            f"backward's (dparams, dargs) do not match (params, args): {first}"
        ) from None


def torch_available() -> bool:
    """PyTorch is installed (looked for, not imported: that is slow)."""
    return importlib.util.find_spec("torch") is not None


def check_context(dtype: str) -> ExitStack:
    """What every check runs under: full float32 matmuls (a GPU's TF32 would break parity), x64
    only for float64, and rank promotion allowed, so a `(64,)` where `(1, 64)` belongs reaches
    the table as a shape error instead of raising inside the backward."""
    stack = ExitStack()
    stack.enter_context(jax.default_matmul_precision("highest"))
    stack.enter_context(jax.numpy_rank_promotion("allow"))
    if dtype == "float64":
        stack.enter_context(jax.enable_x64(True))
    return stack


def _jax_context(dtype: str) -> ExitStack:
    stack = check_context(dtype)
    if dtype != "float64":  # the dtype under test as a user runs it: without x64
        stack.enter_context(jax.enable_x64(False))
    return stack


def _run_program(shapes_fn, program, inputs, cot_of, label: str, dtype: str) -> tuple:
    """(out, taps, d floats, d taps, the narrowings of a float64 run's program)."""
    mask = tuple(is_float(x) for x in inputs)
    # device_put: one copy (jnp.asarray makes two of a numpy array, for a moment)
    floats = [jax.device_put(x) for x, m in zip(inputs, mask, strict=True) if m]
    others = [jax.device_put(x) for x, m in zip(inputs, mask, strict=True) if not m]
    try:
        out_shapes = jax.tree.leaves(jax.eval_shape(shapes_fn, floats, others, {})[1][0])
        cots = [cot_of(i, s.shape, s.dtype) for i, s in enumerate(out_shapes) if is_float(s)]
        # the trace is jit's own (cached), so looking at it costs no second trace
        found = []
        if dtype == "float64":
            found = jax_narrowings(program.trace(floats, others, cots).jaxpr)
        return (*program(floats, others, cots), found)
    except _TRACER_ERRORS as e:  # Python control flow on values: jax.vjp cannot trace it
        raise UsageError(raised(label, e) + ": use jnp.where or jax.lax.cond") from None
    except UsageError:
        raise
    except Exception as e:  # compiling it: a dtype XLA has no kernel for (float16's LAPACK)
        raise UsageError(raised(label, e)) from None


def jax_side(fn: Callable, label: str = "jax", backward: Callable | None = None) -> Callable:
    """A side running a JAX function, or with `backward` the hand-written layer (fn, backward)."""

    def run(inputs, treedef, paths, dtype, cot_of, grads) -> Run:
        mask = tuple(is_float(x) for x in inputs)
        if backward is None:
            shapes_fn, program = _jax_program(fn, treedef, mask, grads, label)
        else:
            shapes_fn, program = _manual_program(fn, backward, treedef, mask)
        with _jax_context(dtype):
            *results, found = _run_program(shapes_fn, program, inputs, cot_of, label, dtype)
        result = _as_run(*results, paths, mask, label)
        if dtype == "float64":
            values = result.values.items()
            outs = [(p, x) for (kind, p), x in values if kind == "out" and is_float(x)]
            result = result._replace(narrow=narrowest(found + output_narrowings(outs)))
        return result

    run.kind = "jax" if backward is None else "manual"
    return run


def _as_run(out, taps, dfloats, dtaps, paths, mask, label) -> Run:
    values = {("tap", k): np.asarray(v) for k, v in taps.items()}
    values |= {("out", p): np.asarray(x) for p, x in _out_leaves(out, label, jax.Array)}
    grads: dict[Key, np.ndarray | None] = {}
    if dfloats is not None:
        for k in reversed(list(taps)):
            if k in dtaps:
                grads[("tap", k)] = np.asarray(dtaps[k])
        float_paths = [p for p, m in zip(paths, mask, strict=True) if m]
        for p, g in zip(float_paths, dfloats, strict=True):
            grads[("in", p)] = None if g is None else np.asarray(g)
    return Run(canonical_tree(out), values, grads, raw_tree=jax.tree.structure(out))


def _torch_to_numpy(t: Any) -> np.ndarray:
    import torch

    t = t.detach()
    if t.dtype == torch.bfloat16:  # numpy has no bfloat16: through float32, exactly
        return t.float().numpy().astype(jnp.bfloat16)
    return t.numpy()  # its own memory already: a gradient, a tap's clone, an output


def _torch_dtype_name(t: Any) -> str:
    return str(t.dtype).removeprefix("torch.")


def _torch_inputs(
    inputs: list[np.ndarray], dtype: str, grads: bool, shared: bool = False
) -> tuple[list, list]:
    """(leaves to read gradients from, what the function gets): each float leaf a fresh tensor
    of its own, given as a clone so an in-place op on it is allowed and stays on this side.
    `shared`: leaves of SHARED_BYTES or more are given as they are (a float64 run's inputs are
    the engine's own fresh copies; a model's weights are not held a third time); autograd
    refuses an in-place op on one, and the run is made again with clones."""
    import torch

    leaves, given = [], []
    for x in inputs:
        if not is_float(x):
            leaves.append(None)
            given.append(torch.from_numpy(np.array(x, bool if x.dtype == bool else np.int64)))
            continue
        wide = np.float64 if dtype == "float64" else np.float32
        t = torch.from_numpy(np.asarray(x, wide)).to(getattr(torch, dtype))  # the run's copy
        leaves.append(t.requires_grad_() if grads else t)
        big = shared and t.numel() * t.element_size() >= SHARED_BYTES
        given.append(t.clone() if grads and not big else t)
    return leaves, given


def torch_side(fn: Callable, label: str = "torch") -> Callable:
    """A side running a PyTorch function, its gradients by autograd."""

    def run(inputs, treedef, paths, dtype, cot_of, grads, shared: bool = True) -> Run:
        import torch

        leaves, given = _torch_inputs(inputs, dtype, grads, shared and dtype == "float64")
        params, args = jax.tree_util.tree_unflatten(treedef, given)
        rec = TorchTaps()
        watch = torch_watch() if dtype == "float64" else ExitStack()
        try:
            with recording(rec), watch:
                out = call(fn, label, params, *args)
        except UsageError as e:  # an in-place op on a large leaf given as it is: on clones
            if not (shared and "leaf Variable that requires grad" in str(e)):
                raise
            return run(inputs, treedef, paths, dtype, cot_of, grads, shared=False)
        outs = _out_leaves(out, label, torch.Tensor)
        values = {("tap", k): _torch_to_numpy(v) for k, v in rec.values.items()}
        values |= {("out", p): _torch_to_numpy(x) for p, x in outs}
        grad_rows: dict[Key, np.ndarray | None] = {}
        if grads:
            _torch_backward(outs, cot_of, label)
            grad_rows = _torch_grads(rec, leaves, paths)
        narrow = None
        if dtype == "float64":
            narrow = narrowest(watch.found + output_narrowings(outs))
        raw = jax.tree.structure(out)
        return Run(canonical_tree(out), values, grad_rows, narrow, raw)

    run.kind = "torch"
    return run


def _torch_backward(outs: list[tuple[str, Any]], cot_of: CotangentOf, label: str) -> None:
    """autograd with the shared cotangent of each float output (drawn in float64, rounded to
    the output's dtype as the JAX side rounds it)."""
    import torch

    tensors, cots = [], []
    for i, (_, x) in enumerate(outs):
        if x.is_floating_point() and x.requires_grad:
            tensors.append(x)
            cot = np.asarray(cot_of(i, tuple(x.shape), np.float64))
            cots.append(torch.from_numpy(cot).to(x.dtype))
    if tensors:
        call(torch.autograd.backward, label, tensors, cots)


def _torch_grads(rec: TorchTaps, leaves: list, paths: list[str]) -> dict[Key, np.ndarray | None]:
    import torch

    grads: dict[Key, np.ndarray | None] = {}
    for k in reversed(list(rec.values)):
        if k in rec.grads:
            grads[("tap", k)] = _torch_to_numpy(rec.grads[k])
    for p, t in zip(paths, leaves, strict=True):
        if t is not None:  # no gradient reached it: zero, as jax.vjp says
            grad = t.grad if t.grad is not None else torch.zeros_like(t)
            grads[("in", p)] = _torch_to_numpy(grad)
    return grads
