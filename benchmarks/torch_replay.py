"""A jaxninja run replayed step for step by the lecture's own PyTorch loop: part 4's MLP (the
notebook's exercise-4 loop, `torch_ref.train_loop`) or part 5's WaveNet (the lecture's layer
classes, `torch_ref.wavenet.train_loop`), from the same initial parameters on the same batches.

    python benchmarks/torch_replay.py [--model mlp|wavenet] [--steps 5000]

The MLP at the notebook's sizes (n_hidden 200, lr decay at steps // 2), the WaveNet at the
lecture's (`--model wavenet`'s defaults). Prints the largest difference of a step's loss, of the
final parameters (and, for the WaveNet, of the running statistics), and of the split losses.
tests/test_train.py and tests/test_torch_wavenet.py replay a few hundred steps to the same
bounds; this is the long run behind the figures their docstrings quote (5000 steps: the MLP's
losses within 9.5e-7, its split losses within 1.2e-7; the WaveNet's losses within
1.4e-6, its parameters within 3.6e-6, its running statistics within 6.7e-6).

PyTorch runs on one thread, as in the tests: at batch 32 a second one buys nothing, and beside
XLA's threads on a 2-core machine it made the loop several times slower.
"""

from __future__ import annotations

import argparse
import tempfile
import time

import numpy as np


def _train_quietly(mc, tc, X, Y, vocab):
    """jaxninja's run of `tc` steps, in a folder of its own, its final checkpoint."""
    from jaxninja.training.loop import train

    with tempfile.TemporaryDirectory() as out:
        return train(mc, tc, (X, Y), vocab, out, progress=False, log=lambda _: None).checkpoint


def mlp(steps: int, data) -> None:
    import torch_ref
    from jaxninja.config import ModelConfig, TrainConfig
    from jaxninja.data import load_splits
    from jaxninja.models.mlp import init_params, split_loss, to_device
    from jaxninja.training.step import batch_indices

    splits = load_splits(data, 3)
    mc = ModelConfig(vocab_size=splits.vocab.size, n_hidden=200)
    tc = TrainConfig(steps=steps, chunk_steps=100, checkpoint_every=steps, lr_decay_step=steps // 2)
    X, Y = splits.data["train"]
    t0 = time.perf_counter()
    ours = _train_quietly(mc, tc, X, Y, splits.vocab)
    t1 = time.perf_counter()
    ix = batch_indices(tc.seed, steps, len(X), tc.batch_size)
    losses, params = torch_ref.train_loop(
        init_params(mc, tc.seed), X, Y, ix, tc.lr, tc.lr_decayed, tc.lr_decay_step
    )
    t2 = time.perf_counter()
    print(f"MLP, {steps} steps: jaxninja {t1 - t0:.1f} s, the notebook's loop {t2 - t1:.1f} s")
    print(f"  each step's loss within {np.abs(losses - ours.losses).max():.2e} (the test: 2e-6)")
    dp = max(np.abs(params[k] - ours.params[k]).max() for k in params)
    print(f"  final parameters within {dp:.2e}")
    bnmean, bnvar = torch_ref.calibrate_bn(params, X)
    for s in ("train", "val", "test"):
        a = split_loss(to_device(ours.params), ours.bn["bn"], *splits.data[s])
        b = torch_ref.split_loss(params, bnmean, bnvar, *splits.data[s])
        print(f"  {s} loss {a:.6f}, within {abs(a - b):.2e} (the test: 1e-6)")


def wavenet(steps: int, data) -> None:
    import torch_ref.wavenet
    from jaxninja.config import model_config, training_config
    from jaxninja.data import load_splits
    from jaxninja.models import registry
    from jaxninja.models import wavenet as model
    from jaxninja.models.mlp import to_device
    from jaxninja.training.step import batch_indices

    splits = load_splits(data, 8)
    mc = model_config("wavenet", "train", vocab_size=splits.vocab.size)
    tc = training_config("wavenet", steps=steps, checkpoint_every=steps)
    X, Y = splits.data["train"]
    t0 = time.perf_counter()
    ours = _train_quietly(mc, tc, X, Y, splits.vocab)
    t1 = time.perf_counter()
    ix = batch_indices(tc.seed, steps, len(X), tc.batch_size)
    losses, params, running = torch_ref.wavenet.train_loop(
        model.init_params(mc, tc.seed), X, Y, ix,
        tc.lr_decay_step, tc.lr, tc.lr_decayed, tc.bn_momentum, mc.eps,
    )  # fmt: skip
    t2 = time.perf_counter()
    print(f"WaveNet, {steps} steps: jaxninja {t1 - t0:.1f} s, the lecture's loop {t2 - t1:.1f} s")
    print(f"  each step's loss within {np.abs(losses - ours.losses).max():.2e} (the test: 1e-5)")
    dp = max(np.abs(params[k] - ours.params[k]).max() for k in params)
    ds = max(
        max(np.abs(m - ours.bn_running[k].mean).max(), np.abs(v - ours.bn_running[k].var).max())
        for k, (m, v) in running.items()
    )
    print(f"  final parameters within {dp:.2e}, running statistics within {ds:.2e}")
    a = registry.split_loss(mc, to_device(ours.params), ours.bn_running, *splits.data["val"])
    b = torch_ref.wavenet.split_loss(params, running, *splits.data["val"], eps=mc.eps)
    print(f"  val loss {a:.6f}, within {abs(a - b):.2e} (the test: 1e-5)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", choices=("mlp", "wavenet"), default="mlp")
    ap.add_argument("--steps", type=int, default=5000, help="(5000)")
    ap.add_argument("--data", default=None, help="names.txt (default: jaxninja's)")
    args = ap.parse_args()

    import torch

    torch.set_num_threads(1)
    from jaxninja.data import resolve_data_path

    (mlp if args.model == "mlp" else wavenet)(args.steps, resolve_data_path(args.data))


if __name__ == "__main__":
    main()
