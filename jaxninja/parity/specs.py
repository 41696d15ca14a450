"""What `compare` feeds both sides: the inputs (numpy arrays or specs, drawn per seed), the shared
cotangents, and the few-ulp perturbation that calibrates the float64 bound.

Every draw comes from its own generator, `default_rng([seed, stream, leaf index])`, so a leaf's
values depend on the seed and its place in the tree only: the same on both sides, and a cotangent
of a given size is the same values whichever shape a side gives its output.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxninja.errors import UsageError

# the generator streams: one per kind of draw
INPUTS, COTANGENTS, PERTURBATION = 0, 1, 2
# the float64 calibration run moves every float input and cotangent by this many ulps (relative)
PERTURB_ULPS = 4.0
EPS64 = float(np.finfo(np.float64).eps)
DTYPES = ("float64", "float32", "bfloat16", "float16")


@dataclass(frozen=True)
class Spec:
    """A leaf drawn afresh for each seed: `kind` is normal (a, b = scale, mean), uniform (a, b =
    low, high) or integers (a, b = low, high, high excluded)."""

    kind: str
    shape: tuple[int, ...]
    a: float
    b: float

    def draw(self, rng: np.random.Generator) -> np.ndarray:
        if self.kind == "normal":
            return rng.standard_normal(self.shape) * self.a + self.b
        if self.kind == "uniform":
            return rng.uniform(self.a, self.b, self.shape)
        return rng.integers(int(self.a), int(self.b), self.shape)


def _shape(shape: Any, kind: str) -> tuple[int, ...]:
    shape = (shape,) if isinstance(shape, int | np.integer) else shape
    if not isinstance(shape, tuple | list) or not all(
        isinstance(n, int | np.integer) and not isinstance(n, bool) and n >= 0 for n in shape
    ):
        raise UsageError(f"parity.{kind}: shape {shape!r} is not a tuple of non-negative ints")
    return tuple(int(n) for n in shape)


def normal(shape: tuple[int, ...] | int, scale: float = 1.0, mean: float = 0.0) -> Spec:
    """Standard normal values times `scale`, plus `mean` (an offset is what makes a variance
    formula cancel: E[x^2] - E[x]^2 on inputs of mean 8 loses bfloat16's every bit)."""
    return Spec("normal", _shape(shape, "normal"), float(scale), float(mean))


def uniform(shape: tuple[int, ...] | int, low: float = 0.0, high: float = 1.0) -> Spec:
    if not low < high:
        raise UsageError(f"parity.uniform: low {low} must be below high {high}")
    return Spec("uniform", _shape(shape, "uniform"), float(low), float(high))


def integers(shape: tuple[int, ...] | int, low: int, high: int) -> Spec:
    """Integers in [low, high): indices, targets. Compared exactly, never differentiated."""
    if not (isinstance(low, int) and isinstance(high, int) and low < high):
        raise UsageError(f"parity.integers: need ints low < high, got low={low!r}, high={high!r}")
    return Spec("integers", _shape(shape, "integers"), low, high)


def is_float(x: np.ndarray) -> bool:
    return jnp.issubdtype(x.dtype, jnp.floating)


def input_path(path: tuple) -> str:
    """'params['W']' or 'args[0]' for a leaf of the (params, args) tree."""
    head = "params" if path[0].idx == 0 else "args"
    return head + jax.tree_util.keystr(path[1:])


def flatten_inputs(params: Any, args: tuple) -> tuple[list[tuple[str, Any]], Any]:
    """The (path, leaf) of every leaf of (params, args), each checked, and the tree's structure."""
    with_path, treedef = jax.tree_util.tree_flatten_with_path(
        (params, args), is_leaf=lambda x: isinstance(x, Spec)
    )
    leaves = []
    for path, x in with_path:
        name = input_path(path)
        if isinstance(x, jax.Array | np.generic):
            x = np.asarray(x)
        if isinstance(x, Spec):
            pass
        elif not isinstance(x, np.ndarray):
            raise UsageError(
                f"{name} is a {type(x).__name__}: each leaf of params and args must be a numpy "
                "array or a spec (parity.normal(shape), ...); close over other values"
            )
        elif not (is_float(x) or jnp.issubdtype(x.dtype, jnp.integer) or x.dtype == bool):
            raise UsageError(f"{name} has dtype {x.dtype}: give floats, integers or booleans")
        leaves.append((name, x))
    return leaves, treedef


def draw(leaves: list[tuple[str, Any]], seed: int, dtype: str) -> list[np.ndarray]:
    """Each leaf for this seed: specs drawn, float leaves rounded to `dtype` (the float64 run
    upcasts these same values, so both runs see one set of inputs)."""
    out = []
    for i, (_, x) in enumerate(leaves):
        if isinstance(x, Spec):
            x = x.draw(np.random.default_rng([seed, INPUTS, i]))
        out.append(_rounded(x, jnp.dtype(dtype)) if is_float(x) else np.array(x))
    return out


def _rounded(x: Any, dtype: np.dtype) -> np.ndarray:
    """x in `dtype`: the caller's own array where it already is (a model's weights are not
    copied; no side writes to its inputs), else a copy."""
    if isinstance(x, np.ndarray) and x.dtype == dtype and x.flags.writeable:
        return x
    return np.array(x, dtype)


def cotangent(seed: int, i: int, shape: tuple[int, ...], dtype: Any) -> np.ndarray:
    """The shared cotangent of output leaf `i`: standard normal, drawn by size, then shaped."""
    rng = np.random.default_rng([seed, COTANGENTS, i])
    return rng.standard_normal(math.prod(shape)).reshape(shape).astype(dtype)


def perturb(x: np.ndarray, seed: int, stream: int, i: int, eps: float = EPS64) -> np.ndarray:
    """x moved by PERTURB_ULPS ulps of size `eps` (float64's; relative), each element in a
    random direction."""
    if not is_float(x):
        return x
    sign = np.random.default_rng([seed, PERTURBATION, stream, i]).choice([-1.0, 1.0], x.shape)
    return np.asarray(x * (1.0 + PERTURB_ULPS * eps * sign))
