"""compare, assert_parity, check_backward: the sides run on each seed, the ways judged.

Per seed: the inputs drawn (rounded to the dtype under test), every side run in float64 on them
upcast, each reference side run once more on the few-ulp perturbation of its inputs and
cotangents (the float64 bound's calibration), then every side in the dtype under test.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from functools import lru_cache, partial
from typing import Any

import jax.numpy as jnp
import numpy as np

from jaxninja.errors import UsageError
from jaxninja.parity.assertion import assert_ok
from jaxninja.parity.dtypes import fixed_note
from jaxninja.parity.kinds import Side, as_sides, runner
from jaxninja.parity.kinds import labels as side_labels
from jaxninja.parity.report import Report
from jaxninja.parity.rows import sequence_note, way_rows
from jaxninja.parity.sides import Run, jax_side, torch_available, torch_side
from jaxninja.parity.specs import (
    DTYPES,
    EPS64,
    cotangent,
    draw,
    flatten_inputs,
    is_float,
    perturb,
)
from jaxninja.parity.spill import seed_folder, spill
from jaxninja.parity.verdict import Fixed, judged_in, scale
from jaxninja.parity.watch import Progress, watched_prints


def _perturbed_cotangent(
    seed: int, i: int, shape: tuple[int, ...], dtype: Any, eps: float = EPS64
) -> np.ndarray:
    return np.asarray(perturb(cotangent(seed, i, shape, np.float64), seed, 1, i, eps), dtype)


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


def _fixed(r64: dict[str, Run], other: str, ref: str) -> Fixed:
    """The dtypes the two sides compute in where their float64 runs are not float64 (casts
    that torch widened are float64 after all)."""
    o, r = (n.dtype if (n := r64[s].narrow) and not n.widened else None for s in (other, ref))
    return o, r


def _unstable(side: Callable, first: Run, again: Callable) -> set:
    """The value keys where a torch or numpy side, run again on the same inputs, differs
    (JAX is deterministic: not run again). `again(dtype)` runs it once more."""
    if getattr(side, "kind", "jax") in ("jax", "manual"):
        return set()
    second = again("float64")
    return {
        k for k, v in first.values.items()
        if k in second.values and not np.array_equal(v, second.values[k], equal_nan=is_float(v))
    }  # fmt: skip


def _wide(x: np.ndarray) -> np.ndarray:
    return x.astype(np.float64) if is_float(x) else x


class _Seed:
    """One seed's inputs, and the runs of every side on them, each run at most once."""

    def __init__(self, sides: dict, leaves: list, treedef: Any, seed: int, dtype: str, grads: bool,
                 progress: Progress, label: str) -> None:  # fmt: skip
        self.sides, self.treedef, self.seed = sides, treedef, seed
        self.dtype, self.grads = dtype, grads
        self.paths = [p for p, _ in leaves]
        self.inputs = draw(leaves, seed, dtype)
        self.progress, self.label, self.cache = progress, label, {}
        self.cot = _Largest(partial(cotangent, seed))
        self.folder = seed_folder()  # the runs' large arrays, until the seed is judged

    def run(self, side: str, dt: str, moved: float | None = None, again: bool = False) -> Run:
        """`side` in `dt` on the drawn inputs; with `moved`, on the inputs and cotangents
        perturbed by ulps of that size; `again`: once more, values only."""
        key = (side, dt, moved, again)
        if key not in self.cache:
            what = " (perturbed)" if moved else " (again)" if again else ""
            self.progress.stage(f"{self.label}: {side} in {dt}{what}")
            xs, cot = self.wide() if dt == "float64" else self.inputs, self.cot
            if dt not in ("float64", self.dtype):  # a fixed side's dtype: the inputs rounded
                xs = [np.asarray(x, jnp.dtype(dt)) if is_float(x) else x for x in self.inputs]
            if moved:
                xs = [perturb(_wide(x), self.seed, 0, i, moved) for i, x in enumerate(self.inputs)]
                cot = partial(_perturbed_cotangent, self.seed, eps=moved)
            grads = self.grads and not again
            try:
                run = self.sides[side](xs, self.treedef, self.paths, dt, cot, grads)
                self.cache[key] = spill(run, self.folder)
            except UsageError as e:  # float64 ran first, and passed: the dtype is to blame
                if dt == "float64":
                    raise
                raise UsageError(f"{e}; in {dt} (float64 ran): choose a dtype it runs in") from None
        return self.cache[key]

    def wide(self) -> list:
        """The inputs upcast to float64, made for each run that needs them: a model's weights
        are not held twice over for the whole seed."""
        return [_wide(x) for x in self.inputs]

    def sources(self) -> dict[str, float]:
        """The largest input and cotangent magnitudes (the float64 floor's scales)."""
        values = max([scale(x) for x in self.inputs if is_float(x)], default=0.0)
        return {"values": values, "grads": self.cot.largest}


def _way_runs(s: _Seed, other: str, ref: str) -> tuple[dict[str, Run], Fixed]:
    """What judging `other` against `ref` needs on this seed (verdict.way_rows' runs)."""
    r64 = {side: s.run(side, "float64") for side in (other, ref)}
    fixed = _fixed(r64, other, ref)
    d = judged_in(fixed)
    eps = float(jnp.finfo(d).eps) if d else EPS64
    runs = {"o64": r64[other], "r64": r64[ref], "p64": s.run(ref, "float64", moved=eps)}
    if s.dtype != "float64":
        runs |= {"olo": s.run(other, s.dtype), "rlo": s.run(ref, s.dtype)}
    if fixed[0] is not None and fixed[1] is None:
        runs["rfix"] = s.run(ref, fixed[0])
    return runs, fixed


def run_ways(
    sides: dict[str, Callable],
    ways: list[tuple[str, str, str]],
    params: Any,
    args: tuple,
    seeds: Iterable[int],
    dtype: str,
    grads: bool,
    strict_taps: bool = False,
    notes: list[str] | None = None,
) -> Report:
    """Judge each way (name, other side, reference side) on every seed: every side in float64
    first, then what each way needs (verdict.way_rows)."""
    seeds = _check_options(seeds, dtype)
    leaves, treedef = flatten_inputs(params, args)
    notes, rows, unstable = list(notes or []), [], {}
    with watched_prints(notes), Progress("parity") as progress:
        for n, seed in enumerate(seeds):
            s = None  # the last seed's arrays go before this one's are drawn
            s = _Seed(sides, leaves, treedef, seed, dtype, grads, progress,
                      f"seed {seed} ({n + 1} of {len(seeds)})")  # fmt: skip
            for side in sides:
                first = s.run(side, "float64")
                if n == 0:
                    unstable[side] = _unstable(sides[side], first, partial(s.run, side, again=True))
            for name, other, ref in ways:
                runs, fixed = _way_runs(s, other, ref)
                found = way_rows(runs, other, ref, dtype, s.sources(), fixed, unstable, strict_taps)
                rows += [{"way": name, "seed": seed, "index": i, **r} for i, r in enumerate(found)]
                if n == 0:
                    kinds = {k: getattr(sides[k], "kind", "jax") for k in (other, ref)}
                    notes += _way_notes(runs, other, ref, kinds, notes)
    way_info = [{"way": n, "other": o, "reference": r} for n, o, r in ways]
    return Report(dtype, seeds, way_info, rows, tuple(notes))


def _way_notes(
    runs: dict[str, Run], other: str, ref: str, kinds: dict[str, str], seen: list
) -> list[str]:
    """A way's notes on its first seed: a side not float64 throughout, a list for a tuple."""
    out = []
    for label, run, role in ((other, runs["o64"], "other"), (ref, runs["r64"], "reference")):
        if run.narrow is not None:
            out.append(fixed_note(label, run.narrow, role, ref, kinds[label]))
    if note := sequence_note(runs["o64"], runs["r64"], (other, ref)):
        out.append(note)
    return [n for n in dict.fromkeys(out) if n not in seen]


def _reference(reference: str | None, sides: tuple[Side, Side], names: tuple[str, str]) -> int:
    """Which side (0 or 1) is the reference: the second unless `reference` names the other, by
    its label or by a kind only it has."""
    if reference is None:
        return 1
    kinds = [s.kind for s in sides]
    for i in (0, 1):
        if reference == names[i] or (reference == kinds[i] and kinds.count(reference) == 1):
            return i
    raise UsageError(f"reference {reference!r}: choose {names[0]!r} or {names[1]!r}")


def compare(
    a: Callable | Side,
    b: Callable | Side,
    params: Any,
    *args: Any,
    seeds: Iterable[int] = (0, 1, 2),
    dtype: str = "float32",
    grads: bool = True,
    reference: str | None = None,
    strict_taps: bool = False,
) -> Report:
    """Run `a(params, *args)` and `b(params, *args)` on the same values (numpy arrays, or specs
    drawn afresh per seed) and judge every output, tap and gradient: float64 first, then
    `dtype` against the reference's float64 run.

    `a`, `b`: a JAX function and a PyTorch function, or any two side objects: `parity.jax(fn)`,
    `parity.torch(fn)`, `parity.numpy(fn)` (values only). `reference` is the original being
    ported, by its label or kind: the second by default ("torch" for two plain functions).
    `strict_taps`: a tap on one side only fails (assert_parity's default) instead of being
    listed."""
    pair = as_sides(a, b)
    if "torch" in (pair[0].kind, pair[1].kind) and not torch_available():
        raise UsageError("parity.compare needs PyTorch: pip install 'jaxninja[torch]'")
    names = side_labels(*pair)
    r = _reference(reference, pair, names)
    notes = []
    if grads and "numpy" in (pair[0].kind, pair[1].kind):
        grads = False
        notes.append("values only: a numpy side has no gradients")
    sides = {names[i]: runner(pair[i], names[i]) for i in (0, 1)}
    way = (f"{names[0]}~{names[1]}", names[1 - r], names[r])
    return run_ways(sides, [way], params, args, seeds, dtype, grads, strict_taps, notes)


@lru_cache(maxsize=128)
def _output_of(forward: Callable) -> Callable:
    """forward's out without its cache: one function per forward, so its compile is reused."""
    return lambda p, *a: forward(p, *a)[0]


def assert_parity(*args: Any, strict_taps: bool = True, **kwargs: Any) -> Report:
    """compare(...), raising AssertionError with the table unless every row passes; a tap on
    one side only fails here (strict_taps=False lists it instead, as compare does)."""
    return assert_ok(compare(*args, strict_taps=strict_taps, **kwargs))


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
    and given `torch_fn`, (2) against torch autograd and (3) jax.vjp against torch autograd.

    `torch_fn(params, *args) -> out`: the layer's forward in PyTorch, given the same `params`
    tree and args as torch tensors (requiring grad), returning the forward's `out` alone (no
    cache), as tensors in the same tree."""
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
