"""Many seeds at once: `train(seeds=K)` against training the seeds one after another.

    python benchmarks/seeds_speed.py [--seeds 32] [--steps 10000] [--repeats 3] [--json F]

At the notebook's sizes (n_hidden 200, batch 32), in one process, through `jaxninja.training.loop`
(compilation excluded, as its train_seconds reports), in µs per model-step:
  (a) one seed at a time, the plain single-model loop (a few seeds stand for all 32: their
      steps cost the same, and they share one compiled program),
  (b) the K seeds vmapped in one program on one device (timed once),
  (c) the K seeds vmapped and split over one device per core (jaxninja's default for --seeds),
and how busy the cores were during (c): process CPU seconds over wall seconds, compile included.
(a) and (c) alternate, --repeats times, and the medians are compared, so that a machine whose
speed drifts (a shared VM) weighs on both alike.
The issue's targets, on the 2-core CPU: (c) <= 45 µs per model-step and (a)/(c) >= 2.
On a GPU, (c) is the one device and --seeds 1024 is the interesting size.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import tempfile
import time

from flops import limit_line, matmul_flops_per_s, step_flops


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", type=int, default=32, help="models trained at once (32)")
    ap.add_argument("--steps", type=int, default=10000, help="steps of every run (10000)")
    ap.add_argument("--repeats", type=int, default=3, help="runs of (a) and of (c) (3)")
    ap.add_argument("--data", default=None)
    ap.add_argument("--json", help="also write the results to this file")
    args = ap.parse_args()

    from jaxninja.training import parallel

    parallel.start(cpu_devices=parallel.cpu_cores())  # before JAX starts: one device per core
    import jax

    from jaxninja.config import ModelConfig, TrainConfig
    from jaxninja.data import load_splits, resolve_data_path
    from jaxninja.training.loop import train

    splits = load_splits(resolve_data_path(args.data), 3)
    data, vocab = splits.data["train"], splits.vocab
    mc = ModelConfig(vocab_size=vocab.size, n_hidden=200)
    tc = TrainConfig(steps=args.steps, checkpoint_every=10**9)

    def per_model_step(seed: int, seeds: int, devices: int | None) -> tuple[float, float]:
        with tempfile.TemporaryDirectory() as out:
            cpu0, wall0 = cpu_seconds(), time.perf_counter()
            r = train(
                mc, TrainConfig(**{**tc.__dict__, "seed": seed}), data, vocab, out,
                seeds=seeds, devices=devices, progress=False, log=lambda _: None,
            )  # fmt: skip
            busy = (cpu_seconds() - cpu0) / (time.perf_counter() - wall0)
        return r.train_seconds / (r.steps_run * seeds) * 1e6, busy

    alone, together, busy = [], [], []
    for r in range(args.repeats):
        alone.append(per_model_step(tc.seed + r, 1, None)[0])
        us, cores = per_model_step(tc.seed, args.seeds, None)
        together.append(us)
        busy.append(cores)
    a, c, busy = (statistics.median(x) for x in (alone, together, busy))
    b, _ = per_model_step(tc.seed, args.seeds, 1)
    devices = jax.devices()
    results = {
        "(a) one seed at a time": a,
        f"(b) {args.seeds} seeds vmapped, 1 device": b,
        f"(c) {args.seeds} seeds vmapped, {len(devices)} devices": c,
    }
    print(
        f"jax {jax.__version__} on {len(devices)} {devices[0].platform} device(s) "
        f"({devices[0].device_kind}), {parallel.cpu_cores()} cores; {args.steps} steps a run; "
        f"medians of {args.repeats} for (a) and (c)"
    )
    flops = step_flops(tc.batch_size, mc.block_size, mc.n_embd, mc.n_hidden, mc.vocab_size)
    limit_us = flops / matmul_flops_per_s() * 1e6
    print(limit_line(flops, flops / limit_us * 1e6))
    print(
        f"{'run':36s} {'µs/model-step':>14s} {'throughput vs (a)':>18s} {'x the FLOP limit':>17s}"
    )
    for name, us in results.items():
        print(f"{name:36s} {us:14.1f} {a / us:17.2f}x {us / limit_us:16.1f}x")
    results["FLOP limit µs/model-step"] = limit_us
    print(f"cores busy during (c): {busy:.2f} (CPU seconds per wall second)")
    print("(a) runs: " + ", ".join(f"{x:.1f}" for x in alone))
    print("(c) runs: " + ", ".join(f"{x:.1f}" for x in together))
    print(f"targets: (c) <= 45 µs/model-step: {c:.1f}; (a)/(c) >= 2: {a / c:.2f}x")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({**results, "cores busy (c)": busy}, f, indent=2)


if __name__ == "__main__":
    main()
