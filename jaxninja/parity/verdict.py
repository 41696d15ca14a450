"""The verdict of one row (an output, a tap's value or gradient, an input's gradient, a model's
named gradient) on one input: the one rule every check in jaxninja applies.

First what values cannot hide: the row missing on a side, its shape, dtype, NaN or inf (unless
both sides hold the same ones). Then the values, twice:
  - float64: the two sides within F64_FACTOR x the row's own sensitivity, measured by running the
    reference again with every float input and cotangent moved by PERTURB_ULPS float64 ulps
    (which shows both the row's conditioning and its rounding noise as this input realizes it),
    plus F64_FLOOR (1e-12) of the largest magnitude that the row's kind is computed from and
    makes: values, the inputs and every value row; gradients, the cotangents and every gradient
    row. The floor is what a row that cancels to zero in exact arithmetic is made of: a
    perturbation cannot show the rounding of a cancellation inside the function (`d b1` under
    BatchNorm, `d max` of a softmax's subtracted max, attention's `dk` where softmax saturates);
  - the dtype under test (float32, bfloat16, float16): the reference's float64 run, on the same
    inputs, is the truth. The other side's distance from it must be within LOW_FACTOR times the
    yardstick's own distance (the reference's; for a model check, autodiff's) plus LOW_FLOOR_ULPS
    ulps of the row's scale in that dtype: a hand-written backward is right when it is about as
    accurate as autodiff is on that input. Where that bound reaches CANNOT_TELL of the row's
    scale the dtype cannot tell right from wrong: the row says `noise`, neither passing nor
    failing, and float64 judges it.

Why 16, for both factors: the fused formulas reorder the arithmetic (exercise 3's one expression
cancels three batch-sized terms), so on ill-conditioned inputs they are several times less
accurate than autodiff while being right. `python benchmarks/check_sweep.py` runs the float32
check on the project's own backward over 560 cases (seeds 0-19 x batch sizes 2 to 256 x hidden
sizes 1 to 512) and prints the largest ratio to autodiff's error and the closest any case came to
its bound; `python benchmarks/parity_sweep.py` does the same for the float64 factor on real
JAX/PyTorch pairs. Real port bugs can be smaller than float32's noise (LayerNorm's eps 1e-6 for
1e-5 moves the output by 4e-8 relative, under a float32 ulp): float64 sees them.
"""

from __future__ import annotations

from typing import Any

import jax.numpy as jnp
import numpy as np

from jaxninja.parity.sides import Key, Run
from jaxninja.parity.specs import is_float

F64_FACTOR = 16.0
F64_FLOOR = 1e-12
LOW_FACTOR = 16.0
LOW_FLOOR_ULPS = 4.0
F32_EPS = float(np.finfo(np.float32).eps)
# the dtype under test cannot tell right from wrong where its bound is this much of the row's
# scale: a mistake that moves the row by less would pass unseen, so neither verdict would mean much
CANNOT_TELL = 1e-2
# worst first; "structure": outputs whose trees differ; "one-sided": a tap on one side only;
# "noise": the dtype under test cannot tell (float64 judges)
SEVERITY = (
    "structure", "missing", "shape", "dtype", "nonfinite", "wrong", "one-sided", "noise", "ok",
)  # fmt: skip
PASSING = ("one-sided", "noise", "ok")


def worst(verdicts: list[str]) -> str:
    return min(verdicts, key=SEVERITY.index)


def _f64(x: np.ndarray) -> np.ndarray:
    return np.asarray(x, np.float64)


def maxdiff(a: np.ndarray, b: np.ndarray) -> float:
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


def mismatch(o: np.ndarray, r: np.ndarray, labels: tuple[str, str]) -> tuple[str, str] | None:
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


def float64_cell(
    error: float, sensitivity: float, family: float, ref: np.ndarray
) -> dict[str, Any]:
    """The float64 verdict of a row whose sides differ by `error`; `ref` the reference's row."""
    bound = F64_FACTOR * sensitivity + F64_FLOOR * family
    return {
        "verdict": "ok" if error <= bound else "wrong",
        "error": error,
        "bound": bound,
        "sensitivity": sensitivity,
        "scale": scale(ref),
    }


def low_bound(noise: float, row_scale: float, dtype: str) -> float:
    """How far from the truth a side may be in `dtype`: LOW_FACTOR x the yardstick's own
    distance, plus LOW_FLOOR_ULPS of the dtype's ulps of the row's scale."""
    return LOW_FACTOR * noise + LOW_FLOOR_ULPS * float(jnp.finfo(dtype).eps) * row_scale


def low_cell(error: float, noise: float, row_scale: float, dtype: str) -> dict[str, Any]:
    """The verdict in the dtype under test of a side `error` from the truth, where the
    yardstick is `noise` from it."""
    bound = low_bound(noise, row_scale, dtype)
    cannot_tell = row_scale > 0 and bound >= CANNOT_TELL * row_scale
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
            f"{LOW_FACTOR:g}x {ref}'s own {low['ref_error']:.3g} + ulps)"
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
    problem = mismatch(o64, r64, labels)
    if problem is None and lows[0] is not None:
        problem = mismatch(*lows, labels)
    if problem is not None:
        row["verdict"], row["message"] = problem
        return row
    if not is_float(o64):  # integers and booleans: exactly
        same = np.array_equal(o64, r64) and (lows[0] is None or np.array_equal(*lows))
        row["verdict"] = "ok" if same else "wrong"
        row["message"] = None if same else f"{labels[0]} and {labels[1]} differ (compared exactly)"
        return row
    row["float64"] = float64_cell(maxdiff(o64, r64), maxdiff(arrays["p64"], r64), family, r64)
    if lows[0] is not None:
        olo, rlo = lows
        row["low"] = low_cell(maxdiff(olo, r64), maxdiff(rlo, r64), scale(r64), dtype)
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
