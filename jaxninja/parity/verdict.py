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
accurate than autodiff while being right. `python benchmarks/check_sweep.py` runs the check
(float64, then float32) on the project's own backward over 560 cases (seeds 0-19 x batch sizes 2
to 256 x hidden sizes 1 to 512): no case failed; the sources came within 10.8x autodiff's own
float32 error at worst, and the closest any came to a bound was 0.457 of it in float32 and 0.009
in float64 (2-core CPU VM, jax 0.10.2, 1346 s). `python benchmarks/parity_sweep.py` does the same
for real JAX/PyTorch pairs. Real port bugs can be smaller than float32's noise (LayerNorm's eps
1e-6 for 1e-5 moves the output by 4e-8 relative, under a float32 ulp): float64 sees them.

bfloat16 and float16 (`low16_cell`): four of their ulps are 1.6% and 0.2% of a row's scale, so
the rule above would call every bfloat16 row noise, and float64 (exact arithmetic) would pass a
port that is right on paper and useless in bfloat16: a variance as E[x^2] - E[x]^2, a sum
accumulated in bfloat16. There the port's RMS distance from the truth must be within
LOW16_FACTOR times the reference's own RMS distance (plus LOW16_FLOOR_ULPS of the row's RMS),
and its max distance within the rule above's bound: the RMS sees a systematic error that each
element's rounding hides. `noise` only where the reference's own RMS error reaches
LOW16_CANNOT_TELL of the row's RMS: the reference itself carries no signal there (a row that
cancels to zero: BatchNorm's `d b1`).

A side that computes in a narrower dtype inside its float64 run (dtypes.py: flax's
`dtype=jnp.float32`, a fixed `.astype`) has no float64 result. As the port it is judged in that
dtype against the truth, by the rule of that dtype (`fixed_cells`); as the reference there is no
truth, and the sides must agree within 16x the reference's sensitivity measured in that dtype.
"""

from __future__ import annotations

from typing import Any

import jax.numpy as jnp
import numpy as np

from jaxninja.parity.reduce import max_abs, max_abs_diff
from jaxninja.parity.sides import Key
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
# "nondeterministic": a side gave two answers for the same inputs
SEVERITY = (
    "structure", "missing", "shape", "dtype", "nonfinite", "nondeterministic", "wrong",
    "one-sided", "noise", "ok",
)  # fmt: skip
PASSING = ("one-sided", "noise", "ok")
# bfloat16 and float16 (the module's docstring); the factor as benchmarks/parity_sweep.py set it
LOW16_FACTOR = 2.0
LOW16_FLOOR_ULPS = 0.25
LOW16_CANNOT_TELL = 0.5
LOW16 = ("bfloat16", "float16")


def worst(verdicts: list[str]) -> str:
    return min(verdicts, key=SEVERITY.index)


def _f64(x: np.ndarray) -> np.ndarray:
    return np.asarray(x, np.float64)


def maxdiff(a: np.ndarray, b: np.ndarray) -> float:
    """max |a - b| over the entries finite in both (elsewhere the sides were checked to agree)."""
    top = max_abs_diff(a, b)
    if np.isfinite(top):  # a NaN or inf on either side shows in the max: none (the fast path)
        return top
    a, b = _f64(a), _f64(b)
    ok = np.isfinite(a) & np.isfinite(b)
    return float(np.abs(a - b)[ok].max()) if ok.any() else 0.0


def scale(a: np.ndarray) -> float:
    top = max_abs(a)
    if np.isfinite(top):  # every entry finite (the fast path)
        return top
    a = np.abs(_f64(a))
    a = a[np.isfinite(a)]
    return float(a.max()) if a.size else 0.0


def rms(a: np.ndarray) -> float:
    a = _f64(a)
    a = a[np.isfinite(a)]
    return float(np.sqrt(np.mean(a * a))) if a.size else 0.0


def _rms_from(a: np.ndarray, truth: np.ndarray) -> float:
    """RMS of a - truth over the entries finite in both."""
    a, t = _f64(a), _f64(truth)
    ok = np.isfinite(a) & np.isfinite(t)
    return rms((a - t)[ok])


def row_name(kind: str, key: Key) -> str:
    prefix = "d " if kind == "grads" else ""
    return prefix + key[1]


def mismatch(
    o: np.ndarray, r: np.ndarray, labels: tuple[str, str], dtypes: bool = True
) -> tuple[str, str] | None:
    """(verdict, message) for what a value comparison cannot see, or None; float dtypes are
    not compared when `dtypes` is False (a float64 run with a side fixed to a narrower one)."""
    if o.shape != r.shape:
        return "shape", f"{labels[0]} has shape {o.shape}, {labels[1]} {r.shape}"
    if is_float(o) != is_float(r) or (dtypes and is_float(o) and o.dtype != r.dtype):
        return "dtype", f"{labels[0]} gives {o.dtype}, {labels[1]} {r.dtype}"
    if is_float(o) and not (np.isfinite(max_abs(o)) and np.isfinite(max_abs(r))):
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


def low16_cell(o: np.ndarray, r: np.ndarray, truth: np.ndarray, dtype: str) -> dict[str, Any]:
    """The bfloat16/float16 verdict of `o` (the other side) against the truth, where the
    reference gave `r`: RMS within LOW16_FACTOR x the reference's, max within low_bound."""
    err, ref, size = _rms_from(o, truth), _rms_from(r, truth), rms(truth)
    bound = LOW16_FACTOR * ref + LOW16_FLOOR_ULPS * float(jnp.finfo(dtype).eps) * size
    worst, ref_max = maxdiff(o, truth), maxdiff(r, truth)
    max_bound = low_bound(ref_max, scale(truth), dtype)
    if ref >= LOW16_CANNOT_TELL * size:
        verdict = "noise"
    else:
        verdict = "ok" if err <= bound and worst <= max_bound else "wrong"
    return {
        "verdict": verdict, "error": err, "ref_error": ref, "bound": bound, "measure": "rms",
        "max": worst, "ref_max": ref_max, "max_bound": max_bound,
    }  # fmt: skip


def low_verdict(o: np.ndarray, r: np.ndarray, truth: np.ndarray, dtype: str) -> dict[str, Any]:
    """The verdict in `dtype` of `o` against the truth, the reference's `r` the yardstick."""
    if dtype in LOW16:
        return low16_cell(o, r, truth, dtype)
    return low_cell(maxdiff(o, truth), maxdiff(r, truth), scale(truth), dtype)


def fixed_ref_cell(
    error: float, sensitivity: float, family: float, ref: np.ndarray, dtype: str
) -> dict[str, Any]:
    """float64_cell for a reference computing in `dtype` inside its float64 run (no truth):
    within F64_FACTOR x its sensitivity to a few `dtype` ulps, plus LOW_FLOOR_ULPS of them."""
    bound = F64_FACTOR * sensitivity + LOW_FLOOR_ULPS * float(jnp.finfo(dtype).eps) * family
    row_scale = scale(ref)
    cannot_tell = row_scale > 0 and bound >= CANNOT_TELL * row_scale
    verdict = "noise" if cannot_tell else ("ok" if error <= bound else "wrong")
    return {
        "verdict": verdict, "error": error, "bound": bound, "sensitivity": sensitivity,
        "scale": row_scale, "dtype": dtype,
    }  # fmt: skip


def _off(cell: dict, labels: tuple[str, str], dtype: str) -> str:
    """How far a failing low-precision cell's side is from the truth, against its bound."""
    other, ref = labels
    if cell.get("measure") == "rms" and cell["error"] > cell["bound"]:
        return (
            f"{other} is {cell['error']:.3g} RMS from the truth in {dtype} (bound "
            f"{cell['bound']:.3g}: {LOW16_FACTOR:g}x {ref}'s own {cell['ref_error']:.3g} + ulps)"
        )
    err, own, bound = (
        (cell["max"], cell["ref_max"], cell["max_bound"])
        if cell.get("measure") == "rms"
        else (cell["error"], cell["ref_error"], cell["bound"])
    )
    return (
        f"{other} is {err:.3g} from the truth in {dtype} (bound {bound:.3g}: "
        f"{LOW_FACTOR:g}x {ref}'s own {own:.3g} + ulps)"
    )


def _messages(f64: dict, low: dict | None, labels: tuple[str, str], dtype: str) -> str | None:
    other, ref = labels
    if f64["verdict"] == "wrong":
        tail = "" if low is None else f"; {dtype}: {low['verdict']}"
        if "ref_error" in f64:  # the other side computes in a narrower dtype: judged there
            return _off(f64, labels, f64["dtype"]) + f", the dtype it computes in{tail}"
        if "dtype" in f64:  # the reference does
            return (
                f"{other} is off by {f64['error']:.3g} from {ref}, which computes in "
                f"{f64['dtype']} (bound {f64['bound']:.3g}: {F64_FACTOR:g}x its sensitivity){tail}"
            )
        return f"{other} is off by {f64['error']:.3g} in float64 (bound {f64['bound']:.3g}){tail}"
    if low is not None and low["verdict"] == "wrong":
        return _off(low, labels, dtype)
    if low is not None and low["verdict"] == "noise":
        return f"{dtype} cannot tell here: judged in float64 only"
    return None


Fixed = tuple[str | None, str | None]  # the dtype the other side, the reference, computes in


def _bits(dtype: str) -> int:
    return jnp.dtype(dtype).itemsize * 8


def judged_in(fixed: Fixed) -> str | None:
    """The dtype a fixed reference's float64 cell is judged in: the coarser of the two sides'."""
    other, ref = fixed
    if ref is None:
        return None
    return ref if other is None or _bits(ref) <= _bits(other) else other


def wide_cell(arrays: dict[str, Any], family: float, fixed: Fixed) -> dict[str, Any]:
    """The float64 cell, or where a side computes in a narrower dtype, its stand-in."""
    o64, r64, p64 = arrays["o64"], arrays["r64"], arrays["p64"]
    if fixed[1] is not None:  # no truth: within the reference's sensitivity in its dtype
        return fixed_ref_cell(maxdiff(o64, r64), maxdiff(p64, r64), family, r64, judged_in(fixed))
    if fixed[0] is not None:  # the other against the truth, in the dtype it computes in
        return {**low_verdict(o64, arrays["rfix"], r64, fixed[0]), "dtype": fixed[0]}
    return float64_cell(maxdiff(o64, r64), maxdiff(p64, r64), family, r64)


def judge(
    kind: str, key: Key, arrays: dict[str, np.ndarray | None], family: float,
    labels: tuple[str, str], dtype: str, fixed: Fixed = (None, None),
) -> dict[str, Any]:  # fmt: skip
    """One row: `arrays` holds o64, r64, p64 (other, reference, reference perturbed; float64)
    and olo, rlo (the dtype under test; None when that is float64), and where the other side
    computes in a narrower dtype (`fixed`), rfix: the reference run in that dtype."""
    o64, r64 = arrays["o64"], arrays["r64"]
    row: dict[str, Any] = {
        "name": row_name(kind, key), "tap": key[1] if key[0] == "tap" else None,
        "kind": kind[:-1], "float64": None, "low": None, "message": None,
        "shapes": [None if x is None else list(x.shape) for x in (o64, r64)],
    }  # fmt: skip
    if o64 is None or r64 is None:
        has = labels[1] if o64 is None else labels[0]
        row["verdict"] = "one-sided" if key[0] == "tap" else "missing"
        row["message"], row["only"] = f"only on the {has} side", has
        return row
    lows = (arrays["olo"], arrays["rlo"])
    problem = mismatch(o64, r64, labels, dtypes=fixed == (None, None))
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
    row["float64"] = wide_cell(arrays, family, fixed)
    # a reference computing in `dtype` or narrower inside its float64 run gives no truth for it
    if lows[0] is not None and (fixed[1] is None or _bits(fixed[1]) > _bits(dtype)):
        row["low"] = low_verdict(*lows, r64, dtype)
    cells = [c for c in (row["float64"], row["low"]) if c is not None]
    row["verdict"] = worst([c["verdict"] for c in cells])
    row["message"] = _messages(row["float64"], row["low"], labels, dtype)
    return row
