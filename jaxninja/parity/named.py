"""Named rows in a model's order: the engine's verdict for sources that compute their own rows.

A model check (check/) or a grader (learn/) does not hand parity two functions to run: it has
several *sources* of the same gradients (a hand-written backward, jax.grad, PyTorch autograd,
each layer's vjp, a learner's function), each giving its rows by the tensor's name. A *way*
compares two sources, row by row, in the model's backward order; each cell is judged by
verdict.py's rule, the same as every parity row:
  - shapes, dtypes, NaN and inf first, against the tensor's own shape (a `(64,)` where the
    tensor is `(1, 64)` broadcasts in `got - ref` and would pass a value check);
  - float64: the two sources within F64_FACTOR x the row's sensitivity (the truth source, run
    again on its inputs and cotangent moved by PERTURB_ULPS ulps) + F64_FLOOR of the largest
    gradient;
  - the dtype under test: each source's distance from the float64 truth within LOW_FACTOR x the
    yardsticks' own (autodiff's) + LOW_FLOOR_ULPS ulps of the row's scale; `noise` where that
    reaches CANNOT_TELL of the scale.
Rows that are zero in exact arithmetic (softmax's `logit_maxes`, BatchNorm's `b1`) are sums of
rounding: their scale is the gradient they sum, and their noise in the dtype under test that
gradient's times the count of terms summed (autodiff can cancel those roundings exactly by the
order it adds them in; a right backward may not).

The sources come as one flat dict: `sources[s]` is source s in the dtype under test,
`sources[s + F64]` the same source in float64 (absent when the dtype under test is float64), and
`sources[MOVED]` the truth source's float64 rows on the moved inputs.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, NamedTuple

import numpy as np

from jaxninja.parity.specs import perturb
from jaxninja.parity.verdict import (
    float64_cell,
    low_cell,
    maxdiff,
    scale,
    worst,
)

F64 = "@float64"  # a source's float64 run, beside its run in the dtype under test
MOVED = "moved" + F64  # the truth source on inputs and cotangent moved: the rows' sensitivity


class Rules(NamedTuple):
    """What a model says of its rows: the ways, the order, each tensor's shape, the rows each
    source makes, whose error is the noise in low precision, and which rows are exact zeros."""

    ways: Mapping[str, tuple[str, str]]  # way -> (candidate source, reference source)
    order: tuple[str, ...]  # the backward's order: the first failing row is where it enters
    shapes: Mapping[str, tuple[int, ...]]
    rows_of: Mapping[str, Iterable[str]]  # source -> the rows it makes
    truth: str = "jax.grad"  # its float64 run is the truth; its moved run the sensitivity
    yardsticks: tuple[str, ...] = ("jax.grad", "torch autograd")
    sums: Mapping[str, tuple[str, int]] = {}  # zero row -> (the row it sums, over which axis)


def moved_inputs(tree: Mapping[str, np.ndarray], seed: int) -> dict[str, np.ndarray]:
    """Each float leaf moved by PERTURB_ULPS float64 ulps in random directions (as compare's
    calibration run moves its inputs)."""
    return {
        k: perturb(np.asarray(v, np.float64), seed, 0, i) for i, (k, v) in enumerate(tree.items())
    }


def moved_cotangent(seed: int) -> float:
    """A scalar loss's cotangent 1, moved as compare moves a cotangent: every gradient row of
    the moved run is scaled by it."""
    return float(perturb(np.ones(1), seed, 1, 0)[0])


def _problem(source: str, grads: Mapping, name: str, shape: tuple, dtype: str):
    """(verdict, message) for what a value comparison could not see, or None."""
    if name not in grads:
        return "missing", f"{source}: d{name} is missing from its results"
    x = grads[name]
    if tuple(x.shape) != tuple(shape):
        return "shape", f"{source}: d{name} has shape {tuple(x.shape)}, {name} is {tuple(shape)}"
    if x.dtype != np.dtype(dtype):
        return "dtype", f"{source}: d{name} is {x.dtype}, {name} is {dtype}"
    if not np.isfinite(x).all():
        bad = int((~np.isfinite(x)).sum())
        return "nonfinite", f"{source}: d{name} holds {bad} NaN or inf of {x.size}"
    return None


def _runs(sources: Mapping, s: str, dtype: str) -> list[tuple[Mapping, str]]:
    """Source s's runs to check before values, (rows, their dtype): the dtype under test's
    first, as the user reads it, then float64's."""
    if dtype == "float64":
        return [(sources[s], "float64")]
    return [(sources[s], dtype), (sources[s + F64], "float64")]


class _Row:
    """One row's shared measures: the truth, its sensitivity, the low-precision noise."""

    def __init__(self, name: str, sources: Mapping, rules: Rules, dtype: str) -> None:
        truth_runs = (
            sources
            if dtype == "float64"
            else {s[: -len(F64)]: g for s, g in sources.items() if s.endswith(F64)}
        )
        self.truth = truth_runs[rules.truth]
        self.sensitivity = maxdiff(sources[MOVED][name], self.truth[name])
        summed = rules.sums.get(name)
        self.scale = scale(self.truth[summed[0] if summed else name])
        self.noise = None
        if dtype != "float64":
            sticks = [sources[s] for s in rules.yardsticks if s in sources]
            self.noise = max(maxdiff(y[name], self.truth[name]) for y in sticks)
            if summed:
                terms = self.truth[summed[0]].shape[summed[1]]
                self.noise = max(
                    self.noise,
                    terms * max(maxdiff(y[summed[0]], self.truth[summed[0]]) for y in sticks),
                )


def _value_cell(name: str, pair: tuple[str, str], sources, row: _Row, family, dtype) -> dict:
    cand, ref = pair
    f64 = (lambda s: sources[s + F64]) if dtype != "float64" else (lambda s: sources[s])
    got, want = f64(cand)[name], f64(ref)[name]
    cell: dict[str, Any] = {
        "float64": float64_cell(maxdiff(got, want), row.sensitivity, family, want)
    }
    cell["low"] = None
    if dtype != "float64":
        error = max(maxdiff(sources[s][name], row.truth[name]) for s in pair)
        cell["low"] = low_cell(error, row.noise, row.scale, dtype)
    deciding = (
        cell["low"] if cell["low"] and cell["float64"]["verdict"] == "ok" else cell["float64"]
    )
    cell["verdict"] = worst([c["verdict"] for c in (cell["float64"], cell["low"]) if c])
    cell["error"], cell["bound"] = deciding["error"], deciding["bound"]
    shown = (sources[cand][name], sources[ref][name])
    cell["maxdiff"] = maxdiff(*shown)
    cell["exact"] = bool(np.array_equal(*shown))
    cell["message"] = _message(name, cell, dtype)
    return cell


def _message(name: str, cell: dict, dtype: str) -> str | None:
    f64, low = cell["float64"], cell["low"]
    if f64["verdict"] == "wrong":
        tail = f"; {dtype}: {low['verdict']}" if low else ""
        return (
            f"d{name} is off by {f64['error']:.3g} in float64, more than {f64['bound']:.3g}{tail}"
        )
    if low and low["verdict"] == "wrong":
        return f"d{name} is off by {low['error']:.3g}, more than {low['bound']:.3g}"
    if low and low["verdict"] == "noise":
        return f"{dtype} cannot tell here: d{name} judged in float64 only"
    return None


def judge_rows(
    sources: Mapping[str, Mapping[str, np.ndarray]], rules: Rules, dtype: str, detail: bool = False
) -> list[dict[str, Any]]:
    """One row per tensor of rules.order: its float32 noise, and a cell per way (None where
    one of the way's sources does not make the row). A cell's error and bound are those of the
    verdict that decides it; `detail` keeps both, as its "float64" and "low" (the sweeps')."""
    truth = sources[rules.truth + F64] if dtype != "float64" else sources[rules.truth]
    family = max([1.0, *(scale(truth[n]) for n in rules.order if n in truth)])
    rows = [_judge_row(name, sources, rules, dtype, family) for name in rules.order]
    if not detail:
        for cell in (row[w] for row in rows for w in rules.ways if row[w]):
            cell.pop("float64", None), cell.pop("low", None)
    return rows


def _judge_row(name: str, sources, rules: Rules, dtype: str, family: float) -> dict[str, Any]:
    shape = tuple(rules.shapes[name])
    row: dict[str, Any] = {
        "name": name,
        "shape": list(shape),
        "noise": None,
        "cannot_tell": False,
        "written": True,
    }
    measures = _Row(name, sources, rules, dtype)
    if measures.noise is not None:
        row["noise"] = measures.noise / measures.scale if measures.scale else 0.0
        bound = low_cell(0.0, measures.noise, measures.scale, dtype)
        row["cannot_tell"] = bound["verdict"] == "noise"
    for way, pair in rules.ways.items():
        if not all(s in sources and name in rules.rows_of[s] for s in pair):
            row[way] = None
            continue
        problem = next(
            (
                p
                for s in pair
                for grads, dt in _runs(sources, s, dtype)
                if (p := _problem(s, grads, name, shape, dt))
            ),
            None,
        )
        if problem:
            got, want = (sources[s].get(name) for s in pair)
            row[way] = {
                "verdict": problem[0],
                "message": problem[1],
                "shapes": [None if x is None else list(x.shape) for x in (got, want)],
            }
            continue
        cell = _value_cell(name, pair, sources, measures, family, dtype)
        row[way] = {**cell, "shapes": [list(sources[s][name].shape) for s in pair]}
    return row
