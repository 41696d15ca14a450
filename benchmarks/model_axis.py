"""Would one model be a run of K = 1 models? The cost of a leading model axis of 1.

    python benchmarks/model_axis.py [--steps 2000] [--repeats 9]

`train(seeds=K)` vmaps the step over a leading model axis; one model runs the plain step. Were
one model the K = 1 case, the two paths would be one. This times, in one process at the
notebook's sizes (n_hidden 200, batch 32), chunks of 1000 steps of
  (a) train's own chunk for one model (train.chunk_runner), the plain step,
  (b) the same chunk with its step vmapped over a model axis of size 1, as `train(seeds=K)`
      runs each model,
alternating, medians of --repeats, and prints (b)/(a). The issue asked for at most 1.03.
"""

from __future__ import annotations

import argparse
import statistics
import time

CHUNK = 1000


def vmapped_chunk(step):
    """A jitted (state, start, X, Y, seed) -> (state, losses) of CHUNK steps: train's chunk for
    one model, its step and batches vmapped over a model axis of 1, as `train(seeds=K)` runs
    each model."""
    import jax
    import jax.numpy as jnp

    from jaxninja.training.step import batches

    def run(state, start, X, Y, seed):
        steps = start + jnp.arange(CHUNK)
        ix = jax.vmap(lambda s: batches(s, steps, X.shape[0], 32), out_axes=1)(seed[None])
        return jax.lax.scan(jax.vmap(step), state, (X[ix], Y[ix]))  # ix: (n, 1, B)

    return jax.jit(run)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=2000, help="steps per timed repeat (2000)")
    ap.add_argument("--repeats", type=int, default=9, help="repeats of each; medians kept (9)")
    ap.add_argument("--data", default=None)
    args = ap.parse_args()

    import jax
    import jax.numpy as jnp
    import numpy as np

    from jaxninja.config import TrainConfig, training_model
    from jaxninja.data import load_splits, resolve_data_path
    from jaxninja.training.step import _train_step, chunk_runner, init_state

    splits = load_splits(resolve_data_path(args.data), 3)
    X, Y = map(jnp.asarray, splits.data["train"])
    mc, tc = training_model(vocab_size=splits.vocab.size), TrainConfig()
    seed, state = np.uint32(tc.seed), init_state(mc, tc)
    plain, _ = chunk_runner(mc, tc).executable(CHUNK, state, 0, X, Y, seed)  # train's own
    vmapped = vmapped_chunk(_train_step(mc, tc, None))
    runs = {
        "(a) one model, plain step": [plain, state, []],
        "(b) one model on a model axis of 1": [vmapped, jax.tree.map(lambda a: a[None], state), []],
    }
    for run in runs.values():  # compile and warm up
        run[1] = jax.block_until_ready(run[0](run[1], 0, X, Y, seed))[0]
    n = max(1, args.steps // CHUNK)
    for r in range(args.repeats):
        for run in runs.values():
            t0 = time.perf_counter()
            for c in range(n):
                run[1], losses, *_ = run[0](run[1], (1 + r * n + c) * CHUNK, X, Y, seed)
            np.asarray(losses)
            run[2].append((time.perf_counter() - t0) / (n * CHUNK) * 1e6)
    medians = [statistics.median(run[2]) for run in runs.values()]
    for name, us in zip(runs, medians, strict=True):
        print(f"{name}: {us:.1f} µs/step")
    print(f"(b)/(a): {medians[1] / medians[0]:.2f} (on {jax.devices()[0].device_kind})")


if __name__ == "__main__":
    main()
