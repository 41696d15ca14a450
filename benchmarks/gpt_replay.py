"""Hand-written equals autodiff, step by step: part 6's GPT trained three ways from the same
initial parameters on the same batches, and how far apart their runs end.

    python benchmarks/gpt_replay.py [--steps 2000] [--dtype float64] [--small]

  (a) jaxninja: the training loop on the hand-written backward (`train`),
  (b) the same loop on jax.grad's gradients (`train --gradients autodiff`),
  (c) makemore's own loop: autograd over its classes and torch.optim.AdamW (torch_ref.gpt),
(a) and (b) each step on the positions its batch uses (step.py's _trimmed), (c) on whole rows,
at makemore's sizes (4 layers, 4 heads, n_embd 64, block 16, batch 32, AdamW lr 5e-4, betas
(0.9, 0.99), weight decay 0.01) unless --small. Prints, for (b) and (c) against (a), the largest
difference of a step's loss, and of the parameters' moves (final - initial) over the largest
move (the key part of c_attn.bias has a gradient of exactly 0, whose rounding noise AdamW turns
into moves of ~1e-13: a parameter's own value is no scale for it).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from dataclasses import replace

import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=2000, help="(2000)")
    ap.add_argument("--dtype", choices=("float32", "float64"), default="float64")
    ap.add_argument("--small", action="store_true", help="n_embd 16, 2 heads, 2 layers")
    ap.add_argument("--data", default=None)
    args = ap.parse_args()

    import jax

    jax.config.update("jax_enable_x64", args.dtype == "float64")
    import torch_ref.gpt
    from jaxninja.config import model_config, training_config
    from jaxninja.data import load_rows, resolve_data_path
    from jaxninja.models import gpt
    from jaxninja.training.loop import train
    from jaxninja.training.step import batch_indices

    rows = load_rows(resolve_data_path(args.data))
    small = {"n_embd": 16, "n_head": 2, "n_layer": 2} if args.small else {}
    mc = model_config("gpt", "train", vocab_size=rows.vocab.size, dtype=args.dtype, **small)
    tc = training_config("gpt", steps=args.steps, eval_every=None, checkpoint_every=args.steps)
    X, Y = rows.data["train"]
    init = gpt.init_params(mc, tc.seed)
    runs, seconds = {}, {}
    for g in ("manual", "autodiff"):
        t0 = time.perf_counter()
        with tempfile.TemporaryDirectory() as out:
            r = train(mc, replace(tc, gradients=g), (X, Y), rows.vocab, out, progress=False,
                      log=lambda s: None)  # fmt: skip
        runs[g] = r.checkpoint.losses, {k: r.checkpoint.params[k] - init[k] for k in init}
        seconds[g] = time.perf_counter() - t0
    t0 = time.perf_counter()
    ix = batch_indices(tc.seed, args.steps, len(X), tc.batch_size)
    lossi, params = torch_ref.gpt.train_loop(
        init, X, Y, ix, mc.n_head, tc.lr, (tc.beta1, tc.beta2), tc.weight_decay, tc.adam_eps
    )
    runs["torch"] = lossi, {k: params[k] - init[k] for k in init}
    seconds["torch"] = time.perf_counter() - t0
    manual_losses, manual_moves = runs["manual"]
    scale = max(np.abs(v).max() for v in manual_moves.values())
    print(f"{args.steps} steps, {args.dtype}, {mc}")
    print(f"(a) hand-written: loss {manual_losses[0]:.6f} -> {manual_losses[-1]:.6f}, "
          f"{seconds['manual']:.0f} s")  # fmt: skip
    for name, label in (("autodiff", "(b) jax.grad"), ("torch", "(c) makemore's PyTorch")):
        losses, moves = runs[name]
        dloss = np.abs(losses - manual_losses).max()
        dmove = max(np.abs(moves[k] - manual_moves[k]).max() for k in moves) / scale
        print(f"{label:24s} vs (a): losses within {dloss:.2e}, parameter moves within "
              f"{dmove:.2e} of the largest ({scale:.3f}); {seconds[name]:.0f} s")  # fmt: skip


if __name__ == "__main__":
    main()
