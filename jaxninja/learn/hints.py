"""Hints for exercises 1-3: what the mistake catalogue's mistakes look like from outside.

Given a case's report and its sources, the first failing row is matched against the shapes and
factors the classic mistakes leave: a sum that lost its axis, a transpose, Bessel's n/(n-1), a
batch size written in, `.set` for `dC`'s `.at[].add`, an error that is the same in every example
(the mean's term) or bnraw times a constant (the variance's term), a gradient that should be
zero. The grader (grader.py) attaches the hint to the case; the verdict is parity's.
"""

from __future__ import annotations

import numpy as np

from jaxninja.check import mlp as mlp_check
from jaxninja.parity.named import F64
from jaxninja.parity.table import Report


def hint(report: Report, sources: dict, Xb: np.ndarray, bnraw: np.ndarray) -> str | None:
    """A hint for the first failure of a case, where it looks like a known mistake."""
    first = report.first_failure()
    if first is None:
        return None
    name, n = first["name"], report.batch_size
    row = next(r for r in report.rows if r["name"] == name)
    if first["verdict"] == "shape":
        return _shape_hint(name, tuple(row["shape"]), tuple(np.shape(sources["yours"][name])))
    if first["verdict"] != "wrong":
        return None
    yours = np.asarray(sources["yours"][name], np.float64)
    ref = np.asarray(sources.get("jax.grad" + F64, sources["jax.grad"])[name], np.float64)
    if name in mlp_check.EXACT_ZERO:
        why = {
            "logit_maxes": "softmax is shift-invariant: subtracting the max cannot change the loss",
            "b1": "BatchNorm subtracts the batch mean, so b1 cannot change the loss",
        }[name]
        cell = row[first["way"]]
        return (
            f"d{name} is zero in exact arithmetic ({why}), but yours is {cell['error']:.3g} "
            f"away from it, more than rounding explains ({cell['bound']:.3g})"
        )
    if name == "C" and _wrong_only_where_repeated(yours, ref, Xb):
        return (
            "dC is wrong only in rows of characters read more than once in the batch: each read "
            "adds its gradient, so use .at[Xb].add(demb), not .set"
        )
    return _scale_hint(name, yours, ref, n) or _broadcast_hint(name, yours, ref, bnraw)


def _shape_hint(name: str, want: tuple, got: tuple) -> str:
    if tuple(d for d in want if d != 1) == got and got != want:
        return f"a sum lost its axis: keepdims=True keeps d{name} at {want}, the shape of {name}"
    if got == want[::-1]:
        return f"d{name} is transposed: which side of the matmul takes .T?"
    if len(got) == len(want) and sorted(got) != sorted(want):
        return f"summed over the wrong axis? {name} is {want}"
    return f"d{name} must have {name}'s shape, {want}"


def _scale_hint(name: str, yours: np.ndarray, ref: np.ndarray, n: int) -> str | None:
    """A hint where yours is the reference times a constant that names the mistake."""
    denom = float((ref * ref).sum())
    if denom == 0:
        return None
    r = float((yours * ref).sum()) / denom
    # the misfit against r * ref's own size: against ref's, any `yours` far smaller than ref
    # would fit, whatever its shape
    if r == 0 or np.abs(yours - r * ref).max() > 1e-3 * abs(r) * np.abs(ref).max():
        return None
    factors = {
        f"{n}/32": n / 32, f"32/{n}": 32 / n, f"{n}/{n - 1}": n / (n - 1),
        f"{n - 1}/{n}": (n - 1) / n, "-1": -1.0, "2": 2.0, "1/2": 0.5,
    }  # fmt: skip
    said = next((k for k, x in factors.items() if abs(r - x) < 1e-4 * abs(x)), None)
    if said is None:
        return f"d{name} is the right tensor times {r:.4g}"
    why = {
        f"{n}/32": "a batch size of 32 written in by hand? use n = the batch's own size",
        f"{n}/{n - 1}": "Bessel's correction: the variance divides by n-1, not n",
        "-1": "the sign is flipped",
    }
    why[f"32/{n}"], why[f"{n - 1}/{n}"] = why[f"{n}/32"], why[f"{n}/{n - 1}"]
    return f"d{name} is the right tensor times {said} at batch {n}: " + why.get(said, "a factor")


def _broadcast_hint(name: str, yours: np.ndarray, ref: np.ndarray, bnraw: np.ndarray):
    """A hint where dhprebn's error is the same in every example, or bnraw times a per-unit
    constant: its two batch-summed terms (the mean's 1/n; the variance's n/(n-1)). Only
    hprebn's: another tensor off by a constant (dprobs + 0.01) has no batch mean to blame."""
    diff = yours - ref
    if name != "hprebn" or diff.ndim != 2 or diff.shape[0] < 2:
        return None
    size = np.abs(diff).max()
    if np.abs(diff - diff[:1]).max() < 1e-3 * size:
        return (
            f"d{name} is off by the same amount in every example: check the term that reaches "
            "it through the batch mean (1/n, not 1/(n-1))"
        )
    if diff.shape == bnraw.shape:
        c = (diff * bnraw).sum(0) / np.maximum((bnraw * bnraw).sum(0), 1e-300)  # per unit
        if np.abs(diff - bnraw * c).max() < 1e-3 * size:
            return (
                f"d{name} is off by bnraw times a constant per unit: check the term that reaches "
                "it through the variance, with Bessel's n/(n-1)"
            )
    return None


def _wrong_only_where_repeated(yours: np.ndarray, ref: np.ndarray, Xb: np.ndarray) -> bool:
    counts = np.bincount(np.asarray(Xb).ravel(), minlength=len(ref))
    wrong = np.abs(yours - ref).max(1) > 1e-4 * np.abs(ref).max()
    return bool(wrong.any() and (counts[wrong] > 1).all())
