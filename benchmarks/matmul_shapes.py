"""The GPT step's matmuls alone: XLA's kernels (jitted JAX) against PyTorch's at each shape, and
the XLA options tried on the whole step.

    python benchmarks/matmul_shapes.py [--repeats 5] [--step]

makemore's GPT (n_embd 64, batch 32 rows of 16 positions: 512 rows) multiplies at four shapes,
each three ways: the forward `x @ W` (NN), the weight gradient `x.T @ dout` (TN, contracting
the 512 rows) and the input gradient `dout @ W.T` (NT). The step is about 80% matmuls
(benchmarks/gpt_profile.py), so their rate against PyTorch's bounds what jaxninja can gain on
makemore's loop (benchmarks/train_speed.py --model gpt). Each time is the best of `--repeats`
means of 300 calls, µs per call, and the last column JAX's time over PyTorch's for each product.
(The attention's 16 x 16 products and lm_head's 27 columns are a few percent of the step's
FLOPs and are not timed here.)

With --step it also times the whole jitted chunk of GPT steps, in turns in one process, compiled
with and without per-executable XLA options (`compile(compiler_options=...)`): Eigen's matmuls
on one thread each, with the scheduler that runs independent kernels side by side.
"""

from __future__ import annotations

import argparse
import statistics
import time
from functools import partial

import numpy as np

SHAPES = ((512, 64, 192), (512, 64, 256), (512, 256, 64), (512, 64, 64))  # (rows, in, out)
PRODUCTS = (  # (x, W, dout) -> the forward, the weight gradient, the input gradient
    lambda x, W, d: x @ W,
    lambda x, W, d: x.T @ d,
    lambda x, W, d: d @ W.T,
)
OPTIONS = {
    "default": None,
    "one-thread matmuls, concurrent scheduler": {
        "xla_cpu_multi_thread_eigen": False,
        "xla_cpu_enable_concurrency_optimized_scheduler": True,
    },
}


def best_us(call, repeats: int, n: int = 300) -> float:
    """The best of `repeats` means of n calls, µs; `call()` returns something to wait on."""
    import jax

    jax.block_until_ready(call())
    runs = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(n):
            out = call()
        jax.block_until_ready(out)
        runs.append((time.perf_counter() - t0) / n * 1e6)
    return min(runs)


def matmul_rows(repeats: int) -> None:
    """Each shape's NN, TN and NT products, jax.jit against torch (2 threads), µs per call."""
    import jax
    import torch

    rng = np.random.default_rng(0)
    print(f"{'rows x in x out':16s} {'MFLOP':>6s} {'jax NN/TN/NT µs':>17s} "
          f"{'torch NN/TN/NT µs':>19s} {'jax / torch':>16s}")  # fmt: skip
    for m, k, n in SHAPES:
        x, W, dout = (rng.standard_normal(s, np.float32) for s in ((m, k), (k, n), (m, n)))
        jitted = [partial(jax.jit(f), x, W, dout) for f in PRODUCTS]
        eager = [partial(f, *map(torch.from_numpy, (x, W, dout))) for f in PRODUCTS]
        jx, tt = ([best_us(call, repeats) for call in calls] for calls in (jitted, eager))
        cells = ["/".join(f"{t:.0f}" for t in ts) for ts in (jx, tt)]
        ratios = "/".join(f"{j / t:.1f}" for j, t in zip(jx, tt, strict=True))
        shape, mflop = f"{m}x{k}x{n}", 2 * m * k * n / 1e6
        print(f"{shape:16s} {mflop:6.1f} {cells[0]:>17s} {cells[1]:>19s} {ratios:>16s}")


def step_rows(repeats: int, steps: int = 200) -> None:
    """The GPT's jitted chunk compiled with each of OPTIONS, timed in turns: median µs/step."""
    import jax
    import jax.numpy as jnp

    from jaxninja.config import model_config, training_config
    from jaxninja.data import load_rows, resolve_data_path
    from jaxninja.training.step import chunk_runner, init_state

    rows = load_rows(resolve_data_path())
    X, Y = map(jnp.asarray, rows.data["train"])
    mc = model_config("gpt", "train", vocab_size=rows.vocab.size, block_size=X.shape[1])
    tc = training_config("gpt", chunk_steps=steps)
    seed, loops = np.uint32(tc.seed), {}
    for name, options in OPTIONS.items():
        state = init_state(mc, tc)
        lowered = chunk_runner(mc, tc).jitted.lower(state, 0, X, Y, seed, n_steps=steps)
        run = lowered.compile(compiler_options=options)
        loops[name] = [run, jax.block_until_ready(run(state, 0, X, Y, seed))[0], []]
    for r in range(repeats):
        for run, state, times in loops.values():
            t0 = time.perf_counter()
            state, losses, _ = run(state, (r + 1) * steps, X, Y, seed)
            np.asarray(losses)
            times.append((time.perf_counter() - t0) / steps * 1e6)
    for name, (_, _, times) in loops.items():
        print(f"GPT step, {name:42s} {statistics.median(times):8.0f} µs/step (median)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=5, help="repeats, the best kept (5)")
    ap.add_argument(
        "--step", action="store_true",
        help="also time the GPT's jitted chunk with and without the XLA options tried",
    )  # fmt: skip
    args = ap.parse_args()
    if args.repeats < 1:
        ap.error(f"--repeats must be >= 1, got {args.repeats}")
    import torch

    torch.set_num_threads(2)
    matmul_rows(args.repeats)
    if args.step:
        step_rows(args.repeats)


if __name__ == "__main__":
    main()
