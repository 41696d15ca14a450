"""parity.compare_modules at GPT-2's sizes: time and peak memory of a whole-model comparison.

nanoGPT's GPT-2 in PyTorch against a plain-JAX port (tests/gpt_pairs.py), random weights, batch
1, a short sequence, a tap on every block (torch's hooks three names deep, `transformer.h.3`;
the JAX function's own taps): every output, block and weight gradient judged, float64 first,
then float32, over the default three seeds. Each size runs in a process of its own and reports
its own peak resident memory (ru_maxrss: XLA's and torch's buffers included, which
tracemalloc does not see).

    python benchmarks/parity_scale.py                    # GPT-2 small (124M) and medium (350M)
    python benchmarks/parity_scale.py --sizes small --seq 64 --seeds 0 1 2
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def child(size: str, seq: int, seeds: list[int], layers: int | None) -> None:
    import resource

    sys.path.insert(0, str(ROOT))
    from jaxninja import parity
    from tests import gpt_pairs as G

    cfg = {"small": G.GPT2_SMALL, "medium": G.GPT2_MEDIUM}[size]
    cfg = cfg._replace(n_layer=layers or cfg.n_layer)
    t0 = time.perf_counter()
    model = G.torch_gpt(cfg)
    n_params = sum(p.numel() for p in model.parameters())
    t1 = time.perf_counter()
    report = parity.compare_modules(
        model, G.gpt_jax(cfg), G.jax_weights(cfg), parity.integers((1, seq), 0, cfg.vocab),
        depth=3, seeds=tuple(seeds),
    )  # fmt: skip
    t2 = time.perf_counter()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB -> GiB
    print(json.dumps({
        "size": size, "params": n_params, "layers": cfg.n_layer, "seq": seq, "seeds": seeds,
        "ok": report.ok, "rows": len(report.rows), "build_s": t1 - t0, "compare_s": t2 - t1,
        "peak_gib": peak,
    }))  # fmt: skip
    if not report.ok:
        print(report.format(), file=sys.stderr)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", nargs="+", default=["small", "medium"])
    ap.add_argument("--seq", type=int, default=64)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--layers", type=int, default=None, help="fewer blocks (a quick proxy)")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        return child(a.child, a.seq, a.seeds, a.layers)
    print(f"{'model':8s} {'params':>8s} {'seeds':>5s} {'rows':>5s} {'time':>8s} {'peak':>9s}  ok")
    for size in a.sizes:
        cmd = [sys.executable, __file__, "--child", size, "--seq", str(a.seq), "--seeds"]
        cmd += [str(s) for s in a.seeds] + (["--layers", str(a.layers)] if a.layers else [])
        done = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
        if done.returncode != 0:
            print(f"{size}: failed\n{done.stderr[-2000:]}")
            continue
        r = json.loads(done.stdout.strip().splitlines()[-1])
        print(
            f"{size:8s} {r['params'] / 1e6:7.0f}M {len(r['seeds']):5d} {r['rows']:5d} "
            f"{r['compare_s']:7.1f}s {r['peak_gib']:7.2f}GiB  {r['ok']}"
        )


if __name__ == "__main__":
    main()
