"""compare, assert_parity, check_backward: the sides run on each seed, the ways judged.

Per seed: the inputs drawn (rounded to the dtype under test), every side run in float64 on them
upcast, each reference side run once more on the few-ulp perturbation of its inputs and
cotangents (the float64 bound's calibration), then every side in the dtype under test.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from functools import lru_cache, partial
from typing import Any

import numpy as np

from jaxninja.errors import UsageError
from jaxninja.parity.assertion import assert_ok
from jaxninja.parity.report import Report
from jaxninja.parity.sides import jax_side, torch_available, torch_side
from jaxninja.parity.specs import DTYPES, cotangent, draw, flatten_inputs, is_float, perturb
from jaxninja.parity.verdict import scale, way_rows


def _perturbed_cotangent(seed: int, i: int, shape: tuple[int, ...], dtype: Any) -> np.ndarray:
    return np.asarray(perturb(cotangent(seed, i, shape, np.float64), seed, 1, i), dtype)


class _Largest:
    """A cotangent source that remembers the largest magnitude it gave."""

    def __init__(self, draw: Callable) -> None:
        self.draw, self.largest = draw, 0.0

    def __call__(self, i: int, shape: tuple[int, ...], dtype: Any) -> np.ndarray:
        c = self.draw(i, shape, dtype)
        self.largest = max(self.largest, scale(c))
        return c


def _check_options(seeds: Iterable[int], dtype: str) -> tuple[int, ...]:
    if dtype not in DTYPES:
        raise UsageError(f"dtype {dtype!r}: choose one of {', '.join(DTYPES)}")
    seeds = tuple(seeds)
    if not seeds or not all(isinstance(s, int | np.integer) and s >= 0 for s in seeds):
        raise UsageError(f"seeds {seeds!r}: give one or more non-negative ints")
    return tuple(int(s) for s in seeds)


def _seed_runs(
    sides: dict[str, Callable], references: set[str], leaves: list, treedef: Any, seed: int,
    dtype: str, grads: bool,
) -> tuple[dict, dict, dict, dict[str, float]]:  # fmt: skip
    """Every side in float64, the references perturbed, every side in `dtype` (none when that
    is float64), and the largest input and cotangent magnitudes (the float64 floor's scales)."""
    paths = [p for p, _ in leaves]
    inputs = draw(leaves, seed, dtype)
    wide = [x.astype(np.float64) if is_float(x) else x for x in inputs]
    moved = [perturb(x, seed, 0, i) for i, x in enumerate(wide)]

    def run(side: Callable, xs: list, dt: str, cot: Callable) -> Any:
        return side(xs, treedef, paths, dt, cot, grads)

    cot = _Largest(partial(cotangent, seed))
    r64 = {s: run(side, wide, "float64", cot) for s, side in sides.items()}
    sources = {"values": max([scale(x) for x in wide if is_float(x)], default=0.0)}
    sources["grads"] = cot.largest
    moved_cot = partial(_perturbed_cotangent, seed)
    p64 = {s: run(sides[s], moved, "float64", moved_cot) for s in references}
    low = {}
    if dtype != "float64":
        low = {s: run(side, inputs, dtype, cot) for s, side in sides.items()}
    return r64, p64, low, sources


def run_ways(
    sides: dict[str, Callable],
    ways: list[tuple[str, str, str]],
    params: Any,
    args: tuple,
    seeds: Iterable[int],
    dtype: str,
    grads: bool,
) -> Report:
    """Judge each way (name, other side, reference side) on every seed."""
    seeds = _check_options(seeds, dtype)
    leaves, treedef = flatten_inputs(params, args)
    references = {ref for _, _, ref in ways}
    rows = []
    for seed in seeds:
        r64, p64, low, sources = _seed_runs(sides, references, leaves, treedef, seed, dtype, grads)
        for name, other, ref in ways:
            runs = {"o64": r64[other], "r64": r64[ref], "p64": p64[ref]}
            if low:
                runs |= {"olo": low[other], "rlo": low[ref]}
            for i, row in enumerate(way_rows(runs, other, ref, dtype, sources)):
                rows.append({"way": name, "seed": seed, "index": i, **row})
    way_info = [{"way": n, "other": o, "reference": r} for n, o, r in ways]
    return Report(dtype, seeds, way_info, rows)


def compare(
    jax_fn: Callable,
    torch_fn: Callable,
    params: Any,
    *args: Any,
    seeds: Iterable[int] = (0, 1, 2),
    dtype: str = "float32",
    grads: bool = True,
    reference: str = "torch",
) -> Report:
    """Run `jax_fn(params, *args)` and `torch_fn(params, *args)` on the same values (numpy
    arrays, or specs drawn afresh per seed) and judge every output, tap and gradient: float64
    first, then `dtype` against the reference's float64 run. `reference` is the original being
    ported ("torch", the default, or "jax")."""
    if reference not in ("torch", "jax"):
        raise UsageError(f"reference {reference!r}: choose 'torch' or 'jax'")
    if not torch_available():
        raise UsageError("parity.compare needs PyTorch: pip install 'jaxninja[torch]'")
    sides = {"jax": jax_side(jax_fn), "torch": torch_side(torch_fn)}
    other = "jax" if reference == "torch" else "torch"
    return run_ways(sides, [("jax~torch", other, reference)], params, args, seeds, dtype, grads)


@lru_cache(maxsize=128)
def _output_of(forward: Callable) -> Callable:
    """forward's out without its cache: one function per forward, so its compile is reused."""
    return lambda p, *a: forward(p, *a)[0]


def assert_parity(*args: Any, **kwargs: Any) -> Report:
    """compare(...), raising AssertionError with the table unless every row passes."""
    return assert_ok(compare(*args, **kwargs))


def check_backward(
    forward: Callable,
    backward: Callable,
    params: Any,
    *args: Any,
    torch_fn: Callable | None = None,
    seeds: Iterable[int] = (0, 1, 2),
    dtype: str = "float32",
) -> Report:
    """A hand-written layer, `forward(params, *args) -> (out, cache)` and `backward(dout, cache)
    -> (dparams, dargs)`, checked the project's three ways: (1) against jax.vjp of its forward,
    and given `torch_fn`, (2) against torch autograd and (3) jax.vjp against torch autograd."""
    sides = {
        "manual": jax_side(forward, "manual", backward=backward),
        "jax.vjp": jax_side(_output_of(forward), "jax.vjp"),
    }
    ways = [("(1) jax.vjp", "manual", "jax.vjp")]
    if torch_fn is not None:
        if not torch_available():
            raise UsageError("check_backward with torch_fn needs PyTorch: pip install torch")
        sides["torch"] = torch_side(torch_fn)
        ways += [("(2) torch", "manual", "torch"), ("(3) jax~torch", "jax.vjp", "torch")]
    return run_ways(sides, ways, params, args, seeds, dtype, grads=True)
