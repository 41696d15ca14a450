"""Where part 6's training step spends its time: jax.profiler over jitted chunks of the GPT's
step, the hand-written backward's (jaxninja) and jax.grad's, the time of each XLA kernel summed
over the chunk and grouped by what it is.

    python benchmarks/gpt_profile.py [--steps 200] [--top 25]

The trace is the profiler's Perfetto JSON (no TensorBoard needed). Its events are XLA's CPU
kernels: `ynn_fusion`/`dot` (matmuls, with what XLA fused into them), `*fusion*` (elementwise
work fused), `scatter`/`gather`, `copy`/`transpose`, and the loop's own bookkeeping.
"""

from __future__ import annotations

import argparse
import glob
import gzip
import json
import re
import tempfile
from collections import defaultdict

import numpy as np


def kernel_times(trace_dir: str) -> dict[str, float]:
    """µs per event name, over the trace's complete events, the Python and runtime frames left
    out."""
    path = glob.glob(f"{trace_dir}/**/perfetto_trace.json.gz", recursive=True)[0]
    with gzip.open(path) as f:
        events = json.load(f)
    events = events["traceEvents"] if isinstance(events, dict) else events
    total: dict[str, float] = defaultdict(float)
    for e in events:
        name = e.get("name", "")
        if e.get("ph") == "X" and not name.startswith("$") and "::" not in name:
            total[name] += e.get("dur", 0.0)
    return dict(total)


def group(name: str) -> str:
    """A kernel's kind, by XLA's naming of it."""
    for kind, pattern in (
        ("matmul (ynn/dot fusions)", r"ynn|dot|gemm|matmul"),
        ("scatter / gather", r"scatter|gather|dynamic"),
        ("transpose / copy", r"transpose|copy|bitcast"),
        ("reduce", r"reduce"),
        ("elementwise fusion", r"fusion|exp|tanh|add|multiply|select|log"),
        ("loop / other", r".*"),
    ):
        if re.search(pattern, name):
            return kind
    return "loop / other"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=200, help="steps profiled, one chunk (200)")
    ap.add_argument("--top", type=int, default=25, help="kernels listed (25)")
    args = ap.parse_args()

    import jax
    import jax.numpy as jnp

    from jaxninja.config import model_config, training_config
    from jaxninja.data import load_rows, resolve_data_path
    from jaxninja.training.step import chunk_runner, init_state

    rows = load_rows(resolve_data_path())
    X, Y = map(jnp.asarray, rows.data["train"])
    mc = model_config("gpt", "train", vocab_size=rows.vocab.size)
    for gradients in ("manual", "autodiff"):
        tc = training_config("gpt", gradients=gradients)
        state, seed = init_state(mc, tc), np.uint32(tc.seed)
        run, _ = chunk_runner(mc, tc).executable(args.steps, state, 0, X, Y, seed)
        jax.block_until_ready(run(state, 0, X, Y, seed))
        with tempfile.TemporaryDirectory() as d:
            with jax.profiler.trace(d, create_perfetto_trace=True):
                jax.block_until_ready(run(state, 0, X, Y, seed))
            times = kernel_times(d)
        step_us = {k: v / args.steps for k, v in times.items()}
        busy = sum(step_us.values())
        print(f"\n{gradients}: {busy:.0f} µs/step in kernels")
        kinds: dict[str, float] = defaultdict(float)
        for name, us in step_us.items():
            kinds[group(name)] += us
        for kind, us in sorted(kinds.items(), key=lambda x: -x[1]):
            print(f"  {kind:28s} {us:8.1f} µs  {us / busy:5.1%}")
        for name, us in sorted(step_us.items(), key=lambda x: -x[1])[: args.top]:
            print(f"    {name[:60]:60s} {us:8.1f} µs")


if __name__ == "__main__":
    main()
