"""The verdict of one row (an output, a tap's value or gradient, an input's gradient) on one seed.

First what values cannot hide: the row missing on a side, its shape, dtype, NaN or inf (unless
both sides hold the same ones). Then the values, twice:
  - float64: the two sides within F64_FACTOR x the row's own sensitivity, measured by running the
    reference again with every float input and cotangent moved by PERTURB_ULPS float64 ulps
    (which shows both the row's conditioning and its rounding noise as this input realizes it),
    plus F64_FLOOR (1e-12) of the largest magnitude that the row's kind is computed from and
    makes: values, the inputs and every value row; gradients, the cotangents and every gradient
    row. It is what a row that cancels to zero in exact arithmetic is made of;
  - the dtype under test: against the reference's float64 run as the truth, jaxninja check's
    float32 verdict (verify.float32_bound, verify.F32_CANNOT_TELL), with the dtype's own ulps.
"""

from __future__ import annotations

from typing import Any

import jax.numpy as jnp
import numpy as np

from jaxninja.check import verify
from jaxninja.parity.sides import Key, Run
from jaxninja.parity.specs import is_float

# The float64 factor: the two sides' distance over the reference's own sensitivity; the sweep
# (benchmarks/parity_sweep.py) prints the largest ratio it saw on correct pairs. The floor is
# check's for rows that are zero in exact arithmetic (verify.ZERO_REL, 1e-12), here of the
# largest magnitude of the row's kind: a perturbation cannot show the rounding of a cancellation
# inside the function (attention's dk where softmax saturates: 1e-12 made of roundings of O(10)
# terms; softmax's d max where the input gradient is 1e-5: made of the cotangent's O(1)).
F64_FACTOR = 16.0
F64_FLOOR = verify.ZERO_REL
# check's verdicts, and parity's two more: outputs whose trees differ, a tap on one side only
SEVERITY = ("structure", *verify.SEVERITY[:-2], "one-sided", *verify.SEVERITY[-2:])
PASSING = ("one-sided", *verify.PASSING)


def worst(verdicts: list[str]) -> str:
    return min(verdicts, key=SEVERITY.index)


def _f64(x: np.ndarray) -> np.ndarray:
    return np.asarray(x, np.float64)


def _maxdiff(a: np.ndarray, b: np.ndarray) -> float:
    """max |a - b| over the entries finite in both (elsewhere the sides were checked to agree)."""
    a, b = _f64(a), _f64(b)
    ok = np.isfinite(a) & np.isfinite(b)
    return float(np.abs(a - b)[ok].max()) if ok.any() else 0.0


def scale(a: np.ndarray) -> float:
    a = np.abs(_f64(a))
    a = a[np.isfinite(a)]
    return float(a.max()) if a.size else 0.0


def row_name(kind: str, key: Key) -> str:
    prefix = "d " if kind == "grads" else ""
    return prefix + key[1]


def _problem(o: np.ndarray, r: np.ndarray, labels: tuple[str, str]) -> tuple[str, str] | None:
    """(verdict, message) for what a value comparison cannot see, or None."""
    if o.shape != r.shape:
        return "shape", f"{labels[0]} has shape {o.shape}, {labels[1]} {r.shape}"
    if is_float(o) != is_float(r) or (is_float(o) and o.dtype != r.dtype):
        return "dtype", f"{labels[0]} gives {o.dtype}, {labels[1]} {r.dtype}"
    if is_float(o):
        fo, fr = _f64(o), _f64(r)
        bad_o, bad_r = ~np.isfinite(fo), ~np.isfinite(fr)
        if (bad_o | bad_r).any() and not (
            np.array_equal(bad_o, bad_r) and np.array_equal(fo[bad_o], fr[bad_r], equal_nan=True)
        ):
            n_o, n_r = int(bad_o.sum()), int(bad_r.sum())
            return "nonfinite", f"NaN or inf: {labels[0]} {n_o}, {labels[1]} {n_r} of {o.size}"
    return None


def _float64_cell(o: np.ndarray, r: np.ndarray, p: np.ndarray, family: float) -> dict[str, Any]:
    error, sensitivity = _maxdiff(o, r), _maxdiff(p, r)
    bound = F64_FACTOR * sensitivity + F64_FLOOR * family
    return {
        "verdict": "ok" if error <= bound else "wrong",
        "error": error,
        "bound": bound,
        "sensitivity": sensitivity,
        "scale": scale(r),
    }


def _low_cell(o: np.ndarray, r: np.ndarray, truth: np.ndarray, dtype: str) -> dict[str, Any]:
    """The dtype under test: the other side's distance from the truth against the reference's
    own. The floor's ulps are the dtype's: float32_bound's floor scaled from float32's eps."""
    noise, error, row_scale = _maxdiff(r, truth), _maxdiff(o, truth), scale(truth)
    eps = float(jnp.finfo(dtype).eps)
    bound = verify.float32_bound(noise, row_scale * eps / verify.F32_EPS)
    cannot_tell = row_scale > 0 and bound >= verify.F32_CANNOT_TELL * row_scale
    verdict = "noise" if cannot_tell else ("ok" if error <= bound else "wrong")
    return {"verdict": verdict, "error": error, "ref_error": noise, "bound": bound}


def _messages(f64: dict, low: dict | None, labels: tuple[str, str], dtype: str) -> str | None:
    other, ref = labels
    if f64["verdict"] == "wrong":
        tail = "" if low is None else f"; {dtype}: {low['verdict']}"
        return f"{other} is off by {f64['error']:.3g} in float64 (bound {f64['bound']:.3g}){tail}"
    if low is not None and low["verdict"] == "wrong":
        return (
            f"{other} is {low['error']:.3g} from the truth in {dtype} (bound {low['bound']:.3g}: "
            f"{verify.F32_FACTOR:g}x {ref}'s own {low['ref_error']:.3g} + ulps)"
        )
    if low is not None and low["verdict"] == "noise":
        return f"{dtype} cannot tell here: judged in float64 only"
    return None


def judge(
    kind: str, key: Key, arrays: dict[str, np.ndarray | None], family: float,
    labels: tuple[str, str], dtype: str,
) -> dict[str, Any]:  # fmt: skip
    """One row: `arrays` holds o64, r64, p64 (other, reference, reference perturbed; float64)
    and olo, rlo (the dtype under test; None when that is float64)."""
    o64, r64 = arrays["o64"], arrays["r64"]
    row: dict[str, Any] = {
        "name": row_name(kind, key), "tap": key[1] if key[0] == "tap" else None,
        "kind": kind[:-1], "float64": None, "low": None, "message": None,
        "shapes": [None if x is None else list(x.shape) for x in (o64, r64)],
    }  # fmt: skip
    if o64 is None or r64 is None:
        has = labels[1] if o64 is None else labels[0]
        row["verdict"] = "one-sided" if key[0] == "tap" else "missing"
        row["message"] = f"only on the {has} side"
        return row
    lows = (arrays["olo"], arrays["rlo"])
    problem = _problem(o64, r64, labels)
    if problem is None and lows[0] is not None:
        problem = _problem(*lows, labels)
    if problem is not None:
        row["verdict"], row["message"] = problem
        return row
    if not is_float(o64):  # integers and booleans: exactly
        same = np.array_equal(o64, r64) and (lows[0] is None or np.array_equal(*lows))
        row["verdict"] = "ok" if same else "wrong"
        row["message"] = None if same else f"{labels[0]} and {labels[1]} differ (compared exactly)"
        return row
    row["float64"] = _float64_cell(o64, r64, arrays["p64"], family)
    if lows[0] is not None:
        row["low"] = _low_cell(*lows, r64, dtype)
    cells = [c for c in (row["float64"], row["low"]) if c is not None]
    row["verdict"] = worst([c["verdict"] for c in cells])
    row["message"] = _messages(row["float64"], row["low"], labels, dtype)
    return row


def _structure(o: Run, r: Run, labels: tuple[str, str]) -> dict[str, Any] | None:
    if o.out_tree == r.out_tree:
        return None
    po = [k for k in o.values if k[0] == "out"]
    pr = [k for k in r.values if k[0] == "out"]
    only = [(k, labels[0]) for k in po if k not in pr] + [(k, labels[1]) for k in pr if k not in po]
    if only:
        message = f"{only[0][0][1]} is only on the {only[0][1]} side"
    else:
        message = f"{labels[0]} returns {o.out_tree}, {labels[1]} {r.out_tree}"[:160]
    return {
        "name": "out", "tap": None, "kind": "value", "shapes": [None, None],
        "verdict": "structure", "message": "outputs differ in structure: " + message,
        "float64": None, "low": None,
    }  # fmt: skip


def way_rows(
    runs: dict[str, Run], other: str, ref: str, dtype: str, sources: dict[str, float]
) -> list[dict[str, Any]]:
    """Every row of one way (other against ref) on one seed. `runs` maps "o64", "r64", "p64",
    "olo", "rlo" to each side's Run ("olo", "rlo" absent when the dtype is float64); `sources`
    the largest input ("values") and cotangent ("grads") magnitude."""
    labels = (other, ref)
    rows = [s] if (s := _structure(runs["o64"], runs["r64"], labels)) else []
    for kind in ("values", "grads"):
        o, r = getattr(runs["o64"], kind), getattr(runs["r64"], kind)
        keys = sorted(dict.fromkeys([*r, *o]), key=lambda k: k[0] != "tap")  # stable: taps first
        family = max([scale(x) for x in r.values() if x is not None and is_float(x)], default=0.0)
        family = max(family, sources[kind])
        for key in keys:
            arrays = {
                name: getattr(run, kind).get(key) if run is not None else None
                for name, run in ((n, runs.get(n)) for n in ("o64", "r64", "p64", "olo", "rlo"))
            }
            rows.append(judge(kind, key, arrays, family, labels, dtype))
    return rows
