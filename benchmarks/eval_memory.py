"""Evaluation in bounded memory: BatchNorm calibration and the three split losses, all at once
(the notebook's way, and jaxninja's before it streamed) against jaxninja's chunked evaluation.

Generates a words file of --words names drawn from names.txt (2M words: ~11.7M train examples),
then runs each way in its own process (peak memory is per process) on the same parameters
(the notebook's initialisation at 200 hidden units) and prints the evaluation's time, the
process's peak resident memory, and the ratios.

    python benchmarks/eval_memory.py [--words 2000000]
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def child(way: str, words_file: str) -> None:
    import jax
    import jax.numpy as jnp

    from jaxninja.config import ModelConfig
    from jaxninja.data import SPLITS, load_splits
    from jaxninja.models import layers
    from jaxninja.models.mlp import BNStats, calibrate_bn, init_params, split_loss, to_device

    splits = load_splits(words_file, 3)
    cfg = ModelConfig(vocab_size=splits.vocab.size, n_hidden=200)
    params = to_device(init_params(cfg, 0))

    @jax.jit
    def all_at_once_bn(p, X):  # (N, H) activations of the whole split at once
        embcat = layers.embedding_forward(p["C"], X)[0].reshape(len(X), -1)  # (N, T*E)
        h = layers.linear_forward(embcat, p["W1"], p["b1"])[0]
        return BNStats(h.mean(0, keepdims=True), h.var(0, ddof=1, keepdims=True))

    @jax.jit
    def all_at_once_loss(p, bn, X, Y):
        from jaxninja.models.mlp import logits_eval

        return layers.cross_entropy_forward(logits_eval(p, bn, X), Y)[0]

    t0 = time.perf_counter()
    X, _ = splits.data["train"]
    if way == "all at once":
        bn = all_at_once_bn(params, jnp.asarray(X))
        losses = [
            float(all_at_once_loss(params, bn, *map(jnp.asarray, splits.data[s]))) for s in SPLITS
        ]
    else:
        bn = calibrate_bn(params, X)
        losses = [split_loss(params, bn, *splits.data[s]) for s in SPLITS]
    seconds = time.perf_counter() - t0
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(
        json.dumps(
            {
                "seconds": seconds,
                "peak_mb": peak_kb / 1024,
                "losses": losses,
                "train_examples": len(X),
            }
        )
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--words", type=int, default=2_000_000)
    ap.add_argument("--child", nargs=2, metavar=("WAY", "FILE"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        return child(*args.child)
    from jaxninja.data import resolve_data_path

    names = resolve_data_path(None).read_text().split()
    rng = random.Random(0)
    with tempfile.TemporaryDirectory() as tmp:
        words_file = Path(tmp) / "words.txt"
        words_file.write_text("\n".join(rng.choice(names) for _ in range(args.words)) + "\n")
        results = {}
        for way in ("all at once", "jaxninja, streamed"):
            out = subprocess.run(
                [sys.executable, __file__, "--child", way, str(words_file)],
                capture_output=True,
                text=True,
                check=True,
            ).stdout
            results[way] = json.loads(out.strip().splitlines()[-1])
    first = next(iter(results.values()))
    print(
        f"{args.words} words, {first['train_examples']} train examples; calibration and the "
        "three split losses (data loading excluded from the time, included in the memory)"
    )
    print(f"{'way':22s} {'seconds':>8s} {'peak MB':>9s}  split losses")
    for way, r in results.items():
        print(
            f"{way:22s} {r['seconds']:8.1f} {r['peak_mb']:9.0f}  "
            + " ".join(f"{x:.6f}" for x in r["losses"])
        )
    a, b = results["all at once"], results["jaxninja, streamed"]
    print(
        f"streamed: {a['seconds'] / b['seconds']:.1f}x faster, {a['peak_mb'] / b['peak_mb']:.1f}x "
        f"less peak memory; largest split-loss difference "
        f"{max(abs(x - y) for x, y in zip(a['losses'], b['losses'], strict=True)):.1e}"
    )


if __name__ == "__main__":
    main()
