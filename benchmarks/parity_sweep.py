"""The parity verdict against the judges port tests use today, on real pairs and real port bugs.

Three sets, over seeds x shapes x input scales 0.1, 1 and 10, each case (one seed) judged four
ways. float32: every pair and bug of tests/parity_pairs.py. fixed dtype: code that fixes its
own computation dtype (flax's Dense(dtype=float32), a float32 custom_vjp kernel, torch's
softmax(dtype=float32)), as port and as reference, against torch, JAX and NumPy originals
(tests/parity_dtype_pairs.py), in float32. bfloat16/float16: mixed-precision ports right (the
statistics, softmax and accumulation upcast as torch does) and wrong (they cancel, accumulate or
overflow in the low precision), in each dtype they are run in. The judges:
  parity          jaxninja.parity.compare (float64 first, then the dtype against the truth);
  assert_close    torch.testing.assert_close at its defaults for the dtype (float32: rtol
                  1.3e-6, atol 1e-5; bfloat16: 1.6e-2, 1e-5; float16: 1e-3, 1e-5);
  atol 1e-5       a fixed absolute tolerance, HuggingFace's PyTorch/Flax tests;
  flash 2x        FlashAttention's rule: the port's distance from a float64 reference at most 2x
                  the original's own distance in the dtype, + 1e-5.
The last three see the outputs and input gradients (shared cotangent), as such tests do; parity
also sees the taps. A false alarm is a correct pair failed, a miss a bug passed.

    python benchmarks/parity_sweep.py            # seeds 0-4
    python benchmarks/parity_sweep.py --seeds 2  # quicker
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import defaultdict
from functools import partial
from pathlib import Path

import jax
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from jaxninja import parity
from jaxninja.parity.kinds import Side, runner
from jaxninja.parity.specs import cotangent, draw, flatten_inputs, is_float
from jaxninja.parity.verdict import F64_FACTOR, LOW16_FACTOR
from jaxninja.parity.verdict import LOW_FACTOR as F32_FACTOR
from tests import parity_dtype_pairs as PD
from tests import parity_pairs as PP

JUDGES = ("parity", "assert_close", "atol 1e-5", "flash 2x")
SETS = ("float32", "fixed dtype", "bfloat16/float16")


def judged_rows(port: Side, original: Side, params, args, seed: int, dtype: str) -> list[tuple]:
    """(port, original, original in float64: the truth) of every output and input gradient in
    `dtype`, drawn and run by parity's own sides."""
    leaves, treedef = flatten_inputs(params, args)
    paths = [p for p, _ in leaves]
    inputs = draw(leaves, seed, dtype)
    wide = [x.astype(np.float64) if is_float(x) else x for x in inputs]
    cot = partial(cotangent, seed)
    grads = "numpy" not in (port.kind, original.kind)

    def run(side, xs, dt):
        return runner(side, side.kind)(xs, treedef, paths, dt, cot, grads)

    truth = run(original, wide, "float64")
    p, o = run(port, inputs, dtype), run(original, inputs, dtype)
    rows = []
    for kind in ("values", "grads"):
        for key, want in getattr(truth, kind).items():
            if key[0] != "tap":
                rows.append((getattr(p, kind).get(key), getattr(o, kind).get(key), want))
    return rows


def _tensor(a: np.ndarray) -> torch.Tensor:
    if a.dtype.name == "bfloat16":  # numpy has no bfloat16 of its own: through float32
        return torch.from_numpy(a.astype(np.float32)).to(torch.bfloat16)
    return torch.from_numpy(np.array(a))


def _assert_close(a: np.ndarray, b: np.ndarray) -> bool:
    try:
        torch.testing.assert_close(_tensor(a), _tensor(b))
    except AssertionError:
        return False
    return True


def other_judges(rows: list[tuple]) -> dict[str, bool]:
    """Each judge's pass (True) over every row; a row missing on a side fails them all."""
    verdicts = {"assert_close": True, "atol 1e-5": True, "flash 2x": True}
    for a, b, truth in rows:
        if a is None or b is None or a.shape != b.shape:
            return dict.fromkeys(verdicts, False)
        if not is_float(a):
            same = np.array_equal(a, b)
            verdicts = {k: v and same for k, v in verdicts.items()}
            continue
        a64, b64, t64 = (np.asarray(x, np.float64) for x in (a, b, truth))
        with np.errstate(invalid="ignore"):
            err, own = np.abs(a64 - t64).max(initial=0.0), np.abs(b64 - t64).max(initial=0.0)
            diff = np.abs(a64 - b64).max(initial=0.0)
        verdicts["assert_close"] &= _assert_close(a, b)
        verdicts["atol 1e-5"] &= bool(diff <= 1e-5)  # NaN compares False: fails
        verdicts["flash 2x"] &= bool(err <= 2 * own + 1e-5)
    return verdicts


def cases():
    """(set, label, is_bug, dtype, build): every case of the three sets, one per seed."""
    for name, pair in PP.PAIRS.items():
        for shape in pair.shapes:
            for scale in PP.SCALES:
                yield "float32", name, False, "float32", partial(PP.case, name, shape, scale)
    for bug_name, bug in PP.BUGS.items():
        for shape in bug.shapes:
            for scale in PP.SCALES:
                build = partial(PP.case, bug.pair, shape, scale, bug=bug_name)
                yield "float32", bug_name, True, "float32", build
    for table, is_bug in ((PD.PAIRS, False), (PD.BUGS, True)):
        for name, item in table.items():
            label = "fixed dtype" if name in PD.FIXED_PAIRS | PD.FIXED_BUGS else SETS[2]
            pair = item.pair if is_bug else name
            for dtype in item.dtypes:
                for shape in item.shapes:
                    for scale in item.scales:
                        build = partial(PD.case, pair, shape, scale, bug=name if is_bug else None)
                        yield label, name, is_bug, dtype, build


def _sides(case: tuple) -> tuple[Side, Side, tuple]:
    a, b, params, *args = case
    if not isinstance(a, Side):  # the float32 catalogue: (JAX, PyTorch)
        a, b = parity.jax(a), parity.torch(b)
    return a, b, (params, *args)


def judge_case(build, seed: int, dtype: str, is_bug: bool, margins: dict) -> dict[str, bool]:
    port, original, (params, *args) = _sides(build())
    report = parity.compare(port, original, params, *args, seeds=(seed,), dtype=dtype)
    _record_margins(report, margins, is_bug)
    rows = judged_rows(port, original, params, tuple(args), seed, dtype)
    return {"parity": report.ok, **other_judges(rows)}


def _cell_kind(cell: dict, is_f64: bool) -> str:
    if cell.get("measure") == "rms":
        return "low16"
    if is_f64:
        return "fixed" if "dtype" in cell else "float64"
    return "low"


def _ratio(cell: dict) -> float:
    """How far along its bound a cell is (bfloat16/float16: the RMS's or the max's, the worse)."""
    ratio = cell["error"] / cell["bound"]
    if cell.get("measure") == "rms":
        ratio = max(ratio, cell["max"] / cell["max_bound"])
    return ratio


def _record_margins(report: parity.Report, margins: dict, is_bug: bool) -> None:
    """On correct pairs: how close each kind of cell came to its bound, and each factor. On
    bugs in bfloat16 and float16 (those without NaNs): how far past its bound the
    least-failing case went."""
    worst16 = 0.0
    for r in report.rows:
        for cell, is_f64 in ((r["float64"], True), (r["low"], False)):
            if not cell or cell["bound"] <= 0 or cell["verdict"] == "noise":
                continue
            kind = _cell_kind(cell, is_f64)
            if not is_bug:
                margins[kind] = max(margins[kind], _ratio(cell))
            elif kind == "low16":
                worst16 = max(worst16, _ratio(cell))
        if not is_bug:
            _record_factors(r, margins)
    if is_bug and worst16 > 0 and not any(r["verdict"] == "nonfinite" for r in report.rows):
        margins["bug16"] = min(margins["bug16"], worst16)


def _record_factors(r: dict, margins: dict) -> None:
    """Each factor on the rows where its term, not the floor, sets the bound (float64: the
    sides' distance over the reference's sensitivity; float32: the port's distance from the
    truth over the original's own; bfloat16/float16: the RMS distances' ratio)."""
    f64 = r["float64"]
    if f64 and f64.get("sensitivity") and F64_FACTOR * f64["sensitivity"] >= f64["bound"] / 2:
        margins["f64 factor"] = max(margins["f64 factor"], f64["error"] / f64["sensitivity"])
    for c in (r["low"], f64):
        if not c or c["verdict"] != "ok" or not c.get("ref_error"):
            continue
        name, factor = ("factor16", LOW16_FACTOR) if c.get("measure") else ("factor", F32_FACTOR)
        if factor * c["ref_error"] >= c["bound"] / 2:
            margins[name] = max(margins[name], c["error"] / c["ref_error"])


def sweep(seeds: range) -> None:
    counts = {(s, j): {"false alarms": 0, "misses": 0} for s in SETS for j in JUDGES}
    per_case: dict[tuple, dict[str, int]] = defaultdict(lambda: dict.fromkeys(JUDGES, 0))
    totals: dict[tuple, int] = defaultdict(int)
    n_cases: dict[tuple, int] = defaultdict(int)
    margins = dict.fromkeys(("float64", "fixed", "low", "low16", "factor", "f64 factor"), 0.0)
    margins |= {"factor16": 0.0, "bug16": float("inf")}
    for set_, label, is_bug, dtype, build in cases():
        for seed in seeds:
            passed = judge_case(build, seed, dtype, is_bug, margins)
            key = (set_, "bug" if is_bug else "pair", label, dtype)
            totals[key] += 1
            n_cases[(set_, is_bug)] += 1
            for j, ok in passed.items():
                wrong = (not ok) if not is_bug else ok
                per_case[key][j] += wrong
                counts[(set_, j)]["misses" if is_bug else "false alarms"] += wrong
    _print(counts, per_case, totals, n_cases, margins)


def _print(counts, per_case, totals, n_cases, margins) -> None:
    for set_ in SETS:
        print(f"{set_}: {n_cases[(set_, False)]} correct cases, {n_cases[(set_, True)]} bug cases")
        print(f"  {'judge':14s} {'false alarms':>14s} {'misses':>10s}")
        for j in JUDGES:
            c = counts[(set_, j)]
            print(f"  {j:14s} {c['false alarms']:14d} {c['misses']:10d}")
    head = "".join(f" {j:>12s}" for j in JUDGES)
    print(f"\n{'case (pair: false alarms; bug: misses)':42s} {'cases':>5s}{head}")
    for (set_, kind, label, dtype), wrong in per_case.items():
        name = f"{kind} {label}" + (f" ({dtype})" if dtype != "float32" else "")
        cells = "".join(f" {wrong[j]:>12d}" for j in JUDGES)
        print(f"{name[:42]:42s} {totals[(set_, kind, label, dtype)]:5d}" + cells)
    m = margins
    print(
        f"\ncorrect pairs, closest to the bound: float64 {m['float64']:.3f} of it, float32 "
        f"{m['low']:.3f},\n  fixed-dtype sides {m['fixed']:.3f}, bfloat16/float16 {m['low16']:.3f}"
        f"\nfactors: float64, the sides within {m['f64 factor']:.1f}x the reference's "
        f"sensitivity (F64_FACTOR {F64_FACTOR:g});\n  float32, the port within "
        f"{m['factor']:.1f}x the original's own error (F32_FACTOR {F32_FACTOR:g});\n  "
        f"bfloat16/float16, the port's RMS within {m['factor16']:.1f}x the original's "
        f"(LOW16_FACTOR {LOW16_FACTOR:g})\nbfloat16/float16 bugs (those without NaNs): the "
        f"least-failing one {m['bug16']:.2f}x its bound"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5, help="seeds 0..N-1 per shape and scale")
    args = parser.parse_args()
    jax.config.update("jax_enable_x64", True)  # as the tests run: float64 available
    start = time.perf_counter()
    sweep(range(args.seeds))
    print(f"({time.perf_counter() - start:.0f} s)")


if __name__ == "__main__":
    main()
