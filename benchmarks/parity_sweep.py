"""The parity verdict against the judges port tests use today, on real pairs and real port bugs.

Every correct pair and every bug of tests/parity_pairs.py, over seeds x shapes x input scales
0.1, 1 and 10, each case (one seed) judged four ways:
  parity          jaxninja.parity.compare (float64 first, then float32 against the truth);
  assert_close    torch.testing.assert_close at its float32 defaults (rtol 1.3e-6, atol 1e-5);
  atol 1e-5       a fixed absolute tolerance, HuggingFace's PyTorch/Flax tests;
  flash 2x        FlashAttention's rule: the port's distance from a float64 reference at most 2x
                  the torch original's own float32 distance, + 1e-5.
The last three see the float32 outputs and input gradients (shared cotangent), as such tests
do; parity also sees the taps. A false alarm is a correct pair failed, a miss a bug passed.

    python benchmarks/parity_sweep.py            # seeds 0-4: 450 cases
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
from jaxninja.parity.sides import jax_side, torch_side
from jaxninja.parity.specs import cotangent, draw, flatten_inputs, is_float
from jaxninja.parity.verdict import F64_FACTOR
from jaxninja.parity.verdict import LOW_FACTOR as F32_FACTOR
from tests import parity_pairs as PP

JUDGES = ("parity", "assert_close", "atol 1e-5", "flash 2x")


def float32_rows(jax_fn, torch_fn, params, args, seed: int) -> list[tuple[np.ndarray, ...]]:
    """(jax float32, torch float32, torch float64 truth) of every output and input gradient,
    drawn and run by parity's own sides."""
    leaves, treedef = flatten_inputs(params, args)
    paths = [p for p, _ in leaves]
    inputs = draw(leaves, seed, "float32")
    wide = [x.astype(np.float64) if is_float(x) else x for x in inputs]
    cot = partial(cotangent, seed)

    def run(side, xs, dtype):
        return side(xs, treedef, paths, dtype, cot, True)

    truth = run(torch_side(torch_fn), wide, "float64")
    j, t = run(jax_side(jax_fn), inputs, "float32"), run(torch_side(torch_fn), inputs, "float32")
    rows = []
    for kind in ("values", "grads"):
        for key, want in getattr(truth, kind).items():
            if key[0] != "tap":
                rows.append((getattr(j, kind).get(key), getattr(t, kind).get(key), want))
    return rows


def _assert_close(a: np.ndarray, b: np.ndarray) -> bool:
    try:
        torch.testing.assert_close(torch.tensor(a), torch.tensor(b))
    except AssertionError:
        return False
    return True


def other_judges(rows: list[tuple[np.ndarray, ...]]) -> dict[str, bool]:
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
        verdicts["assert_close"] &= _assert_close(a, b)
        verdicts["atol 1e-5"] &= bool(np.abs(a64 - b64).max(initial=0.0) <= 1e-5)
        err, own = np.abs(a64 - t64).max(initial=0.0), np.abs(b64 - t64).max(initial=0.0)
        verdicts["flash 2x"] &= bool(err <= 2 * own + 1e-5)
    return verdicts


def judge_case(name: str, shape, scale: float, seed: int, bug: str | None, margins: dict) -> dict:
    jax_fn, torch_fn, params, *args = PP.case(name, shape, scale, bug=bug)
    report = parity.compare(jax_fn, torch_fn, params, *args, seeds=(seed,))
    if bug is None:
        _record_margins(report, margins)
    rows = float32_rows(jax_fn, torch_fn, params, tuple(args), seed)
    return {"parity": report.ok, **other_judges(rows)}


def _record_margins(report: parity.Report, margins: dict) -> None:
    """On correct pairs: how close each verdict came to its bound, and each factor (float32:
    the port's distance from the truth over torch's own; float64: the sides' distance over the
    reference's sensitivity) on the rows where the factor's term, not the floor, sets the bound."""
    for r in report.rows:
        for cell in ("float64", "low"):
            c = r[cell]
            if c and c["bound"] > 0:
                margins[cell] = max(margins[cell], c["error"] / c["bound"])
        f64, low = r["float64"], r["low"]
        if f64 and F64_FACTOR * f64["sensitivity"] >= f64["bound"] / 2:  # not the floor's
            margins["f64 factor"] = max(margins["f64 factor"], f64["error"] / f64["sensitivity"])
        if low and low["verdict"] == "ok" and F32_FACTOR * low["ref_error"] >= low["bound"] / 2:
            margins["factor"] = max(margins["factor"], low["error"] / low["ref_error"])


def sweep(seeds: range) -> None:
    counts = {j: {"false alarms": 0, "misses": 0} for j in JUDGES}
    per_case: dict[str, dict[str, int]] = defaultdict(lambda: dict.fromkeys(JUDGES, 0))
    totals: dict[str, int] = defaultdict(int)
    margins = {"float64": 0.0, "low": 0.0, "factor": 0.0, "f64 factor": 0.0}
    cases = [(n, p.shapes, None) for n, p in PP.PAIRS.items()]
    cases += [(b.pair, b.shapes, name) for name, b in PP.BUGS.items()]
    n_correct = n_bugs = 0
    for name, shapes, bug in cases:
        label = bug or name
        for shape in shapes:
            for scale in PP.SCALES:
                for seed in seeds:
                    passed = judge_case(name, shape, scale, seed, bug, margins)
                    totals[label] += 1
                    n_correct += bug is None
                    n_bugs += bug is not None
                    for j, ok in passed.items():
                        wrong = (not ok) if bug is None else ok
                        per_case[label][j] += wrong
                        counts[j]["misses" if bug else "false alarms"] += wrong
    _print(counts, per_case, totals, margins, n_correct, n_bugs)


def _print(counts, per_case, totals, margins, n_correct, n_bugs) -> None:
    print(f"{'judge':14s} {'false alarms':>14s} {'misses':>10s}   (of {n_correct} correct "
          f"cases, {n_bugs} bug cases)")  # fmt: skip
    for j in JUDGES:
        print(f"{j:14s} {counts[j]['false alarms']:14d} {counts[j]['misses']:10d}")
    print(
        f"\n{'case (correct: false alarms; bug: misses)':42s}"
        + "".join(f"{j:>13s}" for j in JUDGES)
    )
    for label, wrong in per_case.items():
        kind = "bug " if label in PP.BUGS else "pair"
        cells = "".join(f"{wrong[j]:>13d}" for j in JUDGES)
        print(f"{kind} {label:27s} ({totals[label]:3d} cases)" + cells)
    print(
        f"\ncorrect pairs, closest to the bound: float64 {margins['float64']:.3f} of it, float32 "
        f"{margins['low']:.3f}\nfloat32: the port within {margins['factor']:.1f}x torch's own "
        f"error (F32_FACTOR {F32_FACTOR:g}); float64: the sides within "
        f"{margins['f64 factor']:.1f}x the reference's sensitivity (F64_FACTOR {F64_FACTOR:g})"
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
