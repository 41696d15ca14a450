"""Every row of one way (the other side against the reference) on one seed: verdict.judge on
each output, tap and gradient, and what concerns the rows together: outputs whose trees differ
(a list and a tuple of one length agree), a side that gave two answers for the same inputs, and
taps on one side only (with `strict_taps`, a failure; a close name on the other side, a typo).
"""

from __future__ import annotations

import difflib
from typing import Any

from jaxninja.parity.sides import Key, Run
from jaxninja.parity.specs import is_float
from jaxninja.parity.verdict import SEVERITY, Fixed, judge, scale


def _structure(o: Run, r: Run, labels: tuple[str, str]) -> dict[str, Any] | None:
    if o.out_tree == r.out_tree:
        return None
    po = [k for k in o.values if k[0] == "out"]
    pr = [k for k in r.values if k[0] == "out"]
    only = [(k, labels[0]) for k in po if k not in pr] + [(k, labels[1]) for k in pr if k not in po]
    if only:
        message = f"{only[0][0][1]} is only on the {only[0][1]} side"
    else:
        trees = (o.raw_tree or o.out_tree, r.raw_tree or r.out_tree)
        message = f"{labels[0]} returns {trees[0]}, {labels[1]} {trees[1]}"[:160]
    return {
        "name": "out", "tap": None, "kind": "value", "shapes": [None, None],
        "verdict": "structure", "message": "outputs differ in structure: " + message,
        "float64": None, "low": None,
    }  # fmt: skip


def sequence_note(o: Run, r: Run, labels: tuple[str, str]) -> str | None:
    """A note where the outputs agree as sequences but one side's list is the other's tuple."""
    if o.out_tree != r.out_tree or o.raw_tree == r.raw_tree:
        return None
    return (
        f"{labels[0]} returns {o.raw_tree}, {labels[1]} {r.raw_tree}: a list and a tuple of one "
        "length agree (compared element by element)"
    )[:300]


def _unstable(row: dict[str, Any], kind: str, key: Key, unstable: dict[str, set]) -> None:
    """A row of a side that gave two answers for the same inputs: nondeterministic, not wrong
    (its values where they differed; every gradient, which follows from them)."""
    for side, keys in unstable.items():
        hit = key in keys if kind == "values" else bool(keys)
        if hit and SEVERITY.index(row["verdict"]) > SEVERITY.index("nondeterministic"):
            row["verdict"] = "nondeterministic"
            row["message"] = (
                f"{side} gives different values for the same inputs: dropout, or a module in "
                "train mode? (call .eval())"
            )


def _one_sided(rows: list[dict[str, Any]], strict: bool) -> None:
    """A tap on one side only: named with the other side's closest one-sided tap (a typo?),
    and with `strict` a failure: its value, that is (a tap off the path to the outputs has a
    value on both sides and a gradient on JAX's only, as jax.vjp gives every tap one)."""
    only: dict[str, list[str]] = {}
    for r in rows:
        if r["verdict"] == "one-sided":
            only.setdefault(r["only"], []).append(r["name"])
    for r in (r for r in rows if r["verdict"] == "one-sided"):
        others = [n for side, names in only.items() if side != r["only"] for n in names]
        if close := difflib.get_close_matches(r["name"], others, n=1, cutoff=0.5):
            r["message"] += f" (a typo for {close[0]!r}?)"
        if strict and r["kind"] == "value":
            r["verdict"], r["message"] = "missing", r["message"] + "; strict_taps fails it"


def way_rows(
    runs: dict[str, Run], other: str, ref: str, dtype: str, sources: dict[str, float],
    fixed: Fixed = (None, None), unstable: dict[str, set] | None = None, strict_taps: bool = False,
) -> list[dict[str, Any]]:  # fmt: skip
    """Every row of one way (other against ref) on one seed. `runs` maps "o64", "r64", "p64",
    "olo", "rlo" (absent when the dtype is float64) and "rfix" (judge's) to each side's Run;
    `sources` the largest input ("values") and cotangent ("grads") magnitude; `fixed` the
    dtypes the sides compute in (judge's); `unstable` each side's value keys that differed
    between two runs on the same inputs."""
    labels = (other, ref)
    rows = [s] if (s := _structure(runs["o64"], runs["r64"], labels)) else []
    names = ("o64", "r64", "p64", "olo", "rlo", "rfix")
    for kind in ("values", "grads"):
        o, r = getattr(runs["o64"], kind), getattr(runs["r64"], kind)
        keys = sorted(dict.fromkeys([*r, *o]), key=lambda k: k[0] != "tap")  # stable: taps first
        family = max([scale(x) for x in r.values() if x is not None and is_float(x)], default=0.0)
        family = max(family, sources[kind])
        for key in keys:
            arrays = {
                name: getattr(run, kind).get(key) if run is not None else None
                for name, run in ((n, runs.get(n)) for n in names)
            }
            rows.append(judge(kind, key, arrays, family, labels, dtype, fixed))
            _unstable(rows[-1], kind, key, unstable or {})
    _one_sided(rows, strict_taps)
    return rows
