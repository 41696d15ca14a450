"""Does `jaxninja check` in float32 ever cry wolf on the project's own, correct backward?

Runs the float32 check over seeds 0-19 x batch sizes 2, 3, 4, 5, 8, 32, 256 x hidden sizes
1, 17, 64, 512 (560 cases, the notebook's other sizes) and prints, per batch size:
  - cases that failed (a false alarm: must be 0) and rows float32 could not judge ("noise");
  - the hardest row: float32 autodiff's largest relative error from the float64 truth;
  - how close the project's sources (manual, fused, torch manual) came to the bound: their
    largest error / bound, and their largest error as a multiple of autodiff's own, against
    the factor verify.F32_FACTOR.
The closest margin over all cases closes the output. Takes a few minutes on 2 cores.

    python benchmarks/check_sweep.py [--seeds 20] [--batch-sizes 2,3,...] [--hidden 1,17,...]
"""

from __future__ import annotations

import argparse
import time
from collections import defaultdict

import jax
import numpy as np

from jaxninja.check import verify
from jaxninja.config import ModelConfig
from jaxninja.data import load_splits, resolve_data_path
from jaxninja.models.mlp import make_case

CANDIDATES = ("manual", "fused", "torch manual")


def case_figures(cfg: ModelConfig, X, Y, batch_size: int, seed: int) -> dict:
    """One float32 check, and the figures the sweep keeps of it."""
    case = make_case(cfg, X, Y, batch_size, seed)
    with verify.check_context("float32"):
        sources, _, shapes = verify.gradient_sources(case, cfg.eps, verify.torch_available())
    rows = verify.compare(sources, shapes, "float32")
    report = verify.Report("float32", batch_size, seed, verify.WAYS, rows, {}, True, [], None)
    truth = sources["truth"]
    fig = {"failed": not report.ok, "noise_rows": len(report.cannot_tell())}
    fig["hardest"] = max((r["noise"], r["name"]) for r in rows)
    err_bound, times_autodiff = (0.0, ""), (0.0, "")
    for r in rows:
        if r["cannot_tell"]:
            continue
        name = r["name"]
        noise, scale = verify.float32_noise(name, sources)
        bound = verify.float32_bound(noise, scale)
        for src in CANDIDATES:
            if src not in sources or name not in sources[src]:
                continue
            err = float(np.abs(sources[src][name] - truth[name]).max())
            err_bound = max(err_bound, (err / bound, f"{src} d{name}"))
            if err > verify.F32_FLOOR_ULPS * verify.F32_EPS * scale:  # beyond the floor
                times_autodiff = max(times_autodiff, (err / noise, f"{src} d{name}"))
    fig["err_bound"], fig["times_autodiff"] = err_bound, times_autodiff
    return fig


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
        f"float32 check, factor {verify.F32_FACTOR:g}, floor {verify.F32_FLOOR_ULPS:g} ulps, "
        f"'cannot tell' from {verify.F32_CANNOT_TELL:g} of a row's scale; "
        f"{sum(map(len, by_batch.values()))} cases in {time.perf_counter() - t0:.0f} s"
    )
    print(
        f"{'batch':>5s} {'cases':>5s} {'failed':>6s} {'noise rows':>10s}  "
        f"{'hardest row: autodiff rel. err':38s}  {'max error / bound':34s}  "
        "max error / autodiff's"
    )
    worst = (0.0, "")
    for b, figs in by_batch.items():
        hardest = max(
            (f["hardest"][0], f"d{f['hardest'][1]} (H {h}, seed {s})") for h, s, f in figs
        )
        eb = max((f["err_bound"][0], f"{f['err_bound'][1]} (H {h}, s {s})") for h, s, f in figs)
        ta = max((f["times_autodiff"][0], f["times_autodiff"][1]) for _, _, f in figs)
        worst = max(worst, (eb[0], f"batch {b}: {eb[1]}"))
        print(
            f"{b:5d} {len(figs):5d} {sum(f['failed'] for _, _, f in figs):6d} "
            f"{sum(f['noise_rows'] for _, _, f in figs):10d}  {hardest[0]:8.1e} {hardest[1]:29s}"
            f"  {eb[0]:5.3f} {eb[1]:28s}  {ta[0]:5.1f}x ({ta[1]}) vs {verify.F32_FACTOR:g}x"
        )
    print(f"closest margin: error/bound {worst[0]:.3f} at {worst[1]} (a false alarm needs > 1)")


if __name__ == "__main__":
    main()
