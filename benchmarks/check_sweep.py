"""Does `jaxninja check` ever cry wolf on the project's own, correct backward?

Runs the check (float64 first, then float32 against the float64 truth: parity's verdict) over
seeds 0-19 x batch sizes 2, 3, 4, 5, 8, 32, 256 x hidden sizes 1, 17, 64, 512 (560 cases, the
notebook's other sizes) and prints, per batch size:
  - cases that failed (a false alarm: must be 0) and rows float32 could not judge ("noise");
  - the hardest row: float32 autodiff's largest relative error from the float64 truth;
  - how close the project's sources (manual, fused, torch manual) came to each bound: their
    largest float64 error / bound, and float32 error / bound;
  - their largest float32 error as a multiple of autodiff's own, against the factor 16
    (parity.verdict.LOW_FACTOR) that sets the bound.
The closest margins over all cases close the output. Takes several minutes on 2 cores.

    python benchmarks/check_sweep.py [--seeds 20] [--batch-sizes 2,3,...] [--hidden 1,17,...]
"""

from __future__ import annotations

import argparse
import time
from collections import defaultdict

import jax

from jaxninja.check import mlp
from jaxninja.config import ModelConfig
from jaxninja.data import load_splits, resolve_data_path
from jaxninja.models.mlp import make_case
from jaxninja.parity.named import judge_rows
from jaxninja.parity.sides import check_context, torch_available
from jaxninja.parity.verdict import F32_EPS, LOW_FACTOR, LOW_FLOOR_ULPS, PASSING

CANDIDATES = ("manual", "fused", "torch manual")


def case_figures(cfg: ModelConfig, X, Y, batch_size: int, seed: int) -> dict:
    """One float32 check, and the figures the sweep keeps of it."""
    case = make_case(cfg, X, Y, batch_size, seed)
    with check_context("float32"):
        sources, _, values = mlp.gradient_sources(case, cfg.eps, torch_available())
    rules = mlp.rules(mlp.shapes_of(case, values["float32"]))
    rows = judge_rows(sources, rules, "float32", detail=True)
    cells = [(r, w, r[w]) for r in rows for w in mlp.WAYS if r[w]]
    fig = {
        "failed": any(c["verdict"] not in PASSING for _, _, c in cells),
        "noise_rows": sum(r["cannot_tell"] for r in rows),
        "hardest": max((r["noise"], r["name"]) for r in rows),
    }
    margins = {"f64": (0.0, ""), "f32": (0.0, ""), "x autodiff": (0.0, "")}
    for r, way, c in cells:
        if mlp.WAYS[way][0] not in CANDIDATES:
            continue
        where = f"{way} d{r['name']}"
        f64, low = c["float64"], c["low"]
        margins["f64"] = max(margins["f64"], (f64["error"] / f64["bound"], where))
        if low["verdict"] == "noise":
            continue
        margins["f32"] = max(margins["f32"], (low["error"] / low["bound"], where))
        scale = low["bound"] - LOW_FACTOR * low["ref_error"]  # the floor's ulps of the scale
        if low["error"] > scale and low["ref_error"] > 0:  # beyond the floor
            margins["x autodiff"] = max(
                margins["x autodiff"], (low["error"] / low["ref_error"], where)
            )
    return fig | margins


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=20)
    ap.add_argument("--batch-sizes", default="2,3,4,5,8,32,256")
    ap.add_argument("--hidden", default="1,17,64,512")
    args = ap.parse_args()
    jax.config.update("jax_default_matmul_precision", "highest")
    splits = load_splits(resolve_data_path(None), 3)
    X, Y = splits.data["train"]
    by_batch = defaultdict(list)
    t0 = time.perf_counter()
    for b in map(int, args.batch_sizes.split(",")):
        for h in map(int, args.hidden.split(",")):
            cfg = ModelConfig(vocab_size=splits.vocab.size, n_hidden=h, dtype="float32")
            for seed in range(args.seeds):
                by_batch[b].append((h, seed, case_figures(cfg, X, Y, b, seed)))
    print(
        f"check: float64 then float32, factor {LOW_FACTOR:g}, floor {LOW_FLOOR_ULPS:g} ulps "
        f"({LOW_FLOOR_ULPS * F32_EPS:.2g}); {sum(map(len, by_batch.values()))} cases in "
        f"{time.perf_counter() - t0:.0f} s"
    )
    print(
        f"{'batch':>5s} {'cases':>5s} {'failed':>6s} {'noise':>5s}  {'hardest: autodiff':17s}  "
        f"{'f64 error/bound':30s}  {'f32 error/bound':30s}  f32 error / autodiff's"
    )
    worst = {"f64": (0.0, ""), "f32": (0.0, "")}
    for b, figs in by_batch.items():
        top = {k: max((f[k][0], f"{f[k][1]} (H {h}, s {s})") for h, s, f in figs) for k in worst}
        hardest = max(f["hardest"][0] for _, _, f in figs)
        times = max(f["x autodiff"] for _, _, f in figs)
        worst = {k: max(worst[k], (top[k][0], f"batch {b}: {top[k][1]}")) for k in worst}
        print(
            f"{b:5d} {len(figs):5d} {sum(f['failed'] for _, _, f in figs):6d} "
            f"{sum(f['noise_rows'] for _, _, f in figs):5d}  {hardest:17.1e}  "
            f"{top['f64'][0]:5.3f} {top['f64'][1]:24s}  {top['f32'][0]:5.3f} {top['f32'][1]:24s}"
            f"  {times[0]:5.1f}x ({times[1]})"
        )
    for k, (margin, where) in worst.items():
        print(f"closest {k} margin: error/bound {margin:.3f} at {where} (a false alarm needs > 1)")


if __name__ == "__main__":
    main()
