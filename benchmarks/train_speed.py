"""Training speed: jaxninja against the lectures' PyTorch loops, in one process, same machine.

    python benchmarks/train_speed.py [--model mlp|wavenet|gpt] [--steps 2000] [--repeats 5]
        [--no-compile] [--full] [--json FILE] [--data PATH]

Measures µs per training step at the notebook's sizes (n_embd 10, n_hidden 200, block 3,
batch 32) of
  (a) the notebook's exercise-4 loop in PyTorch: manual backward, dC by index_add_ (torch_ref),
  (b) the same model in PyTorch with autograd (loss.backward()) and the same SGD update,
  (c) torch.compile of (a), where it works here,
  (d) jaxninja: the jitted lax.scan loop on the hand-written fused backward,
and prints the ratios (a)/(d) etc. With --full it also times jaxninja's whole 200k-step run
(compile excluded and reported). Timings are wall-clock medians over repeats.

With --model wavenet, at part 5's sizes (block 8, n_embd 24, n_hidden 128, batch 32):
  (a) the lecture's loop: autograd over its layer classes (torch_ref.wavenet), SGD,
  (b) torch.compile of its forward and loss (autograd compiles the backward with it),
  (c) jaxninja: the jitted chunk on the WaveNet's hand-written backward.

With --model gpt, at makemore's sizes (4 layers, 4 heads, n_embd 64, block 16, batch 32 rows,
AdamW), every loop from the same initial parameters:
  (a) makemore's loop: autograd over its classes (torch_ref.gpt), torch.optim.AdamW,
  (b) torch.compile of (a)'s model (autograd compiles the backward with it),
  (c) a jitted jax.grad loop of the same model: jaxninja's chunk on jax.grad's gradients
      (`train --gradients autodiff`), so only where the gradients come from differs from (d),
  (d) jaxninja: the jitted chunk on the GPT's hand-written backward, as `jaxninja train` runs
      it: each step on the fewest positions (10, 12 or 16) that hold its batch's targets,
      the rest being padding no loss reads (step.py's _trimmed; exact). (c) shares the chunk, so
      it trims too, and the two do the same work,
  (e) (d) on whole rows (TrainConfig.trim_rows off): the work (a) and (b) do.
The jax loops are timed in turns (c, d, e, c, d, e, ...), so a load that comes and goes on a
shared machine falls on all alike.

The GPT on this 2-core CPU (benchmarks/gpt_profile.py): (d)'s kernels are 79% matmuls, 12% fused
elementwise work, 8% transposes and copies; (c)'s spend 22% in transposes and copies, which the
hand-written backward avoids by keeping q, k, v and att as the forward made them. The matmuls
are small (512 rows of 64 to 256 columns; 128 attention products of 16 x 16 a layer) and run at
about a third of a large matmul's rate, so the step is 3-4x its FLOP limit. Tried for the
attention products: a broadcast multiply and sum (one fused loop instead of a batched dot) was
2.7x slower than the batched dot; `jnp.einsum` was the dot's speed (within 12%). For the weight
gradients, materializing `x.T` first (`lax.optimization_barrier`) or computing `(dout.T @ x).T`:
no faster in the whole step. Splitting the batch into 2 or 4 independent halves (one per core):
slower. XLA_FLAGS for other matmul libraries (`xla_cpu_use_onednn`, XNNPACK, YNNPACK's fusion
types): none faster. Per-executable XLA options (Eigen on one thread, the concurrent scheduler):
4-8% in benchmarks/matmul_shapes.py --step, within this machine's run-to-run spread, so not
adopted.
What bounds it: at the step's shapes XLA's matmul kernels take about twice PyTorch's time
(benchmarks/matmul_shapes.py), and the step is 80% matmuls. On whole rows (e) the step measured
1.74x to 2.2x makemore's loop in six runs on a quiet machine. What reached the goal of 2x was
less work: a batch of 32 names rarely needs all 16 positions (93% fit in 12, 56% in 10), so (d)
runs each step on the fewest of 10, 12 or 16 that hold its targets, one compiled branch each
(lax.switch): 0.77x and 0.79x (e)'s time, 2.3x and 2.8x makemore's loop in two runs. A fourth
length, 14, saved no measurable time; a lax.cond between 12 and 16 alone, 0.86x.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import tempfile
import time
from dataclasses import replace

import numpy as np
from flops import gpt_step_flops, limit_line, matmul_flops_per_s, step_flops, wavenet_step_flops


def time_torch(step, p, X, Y, steps: int, repeats: int, batch_size: int = 32) -> float:
    import torch

    g = torch.Generator().manual_seed(2147483647)

    def loop(n):
        for i in range(n):
            ix = torch.randint(0, X.shape[0], (batch_size,), generator=g)
            step(p, X[ix], Y[ix], 0.1 if i < 100_000 else 0.01)

    loop(20)  # warm-up (and, for torch.compile, compilation)
    runs = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        loop(steps)
        runs.append((time.perf_counter() - t0) / steps * 1e6)
    return statistics.median(runs)


def autograd_step(p, Xb, Yb, lr, eps=1e-5):
    """PyTorch autograd on the compact forward, then the same SGD update."""
    import torch
    import torch.nn.functional as F

    emb = p["C"][Xb]
    hprebn = emb.view(emb.shape[0], -1) @ p["W1"] + p["b1"]
    bnmean = hprebn.mean(0, keepdim=True)
    bnvar = hprebn.var(0, keepdim=True, unbiased=True)
    hpreact = p["bngain"] * (hprebn - bnmean) * (bnvar + eps) ** -0.5 + p["bnbias"]
    logits = torch.tanh(hpreact) @ p["W2"] + p["b2"]
    loss = F.cross_entropy(logits, Yb)
    for t in p.values():
        t.grad = None
    loss.backward()
    with torch.no_grad():
        for t in p.values():
            t += -lr * t.grad
    return loss


def time_jaxninja(mc, tc, X, Y, steps: int, repeats: int) -> float:
    import jax
    import jax.numpy as jnp

    from jaxninja.training.step import chunk_runner, init_state

    state = init_state(mc, tc)  # the same initial parameters as the PyTorch loops get
    Xd, Yd = jnp.asarray(X), jnp.asarray(Y)
    chunk = tc.chunk_steps
    seed = np.uint32(tc.seed)
    run, _ = chunk_runner(mc, tc).executable(chunk, state, 0, Xd, Yd, seed)
    state = jax.block_until_ready(run(state, 0, Xd, Yd, seed))[0]
    runs = []
    n_chunks = max(1, steps // chunk)
    for r in range(repeats):
        t0 = time.perf_counter()
        for c in range(n_chunks):
            state, losses, _ = run(state, (r * n_chunks + c) * chunk, Xd, Yd, seed)
        np.asarray(losses)
        runs.append((time.perf_counter() - t0) / (n_chunks * chunk) * 1e6)
    return statistics.median(runs)


def time_jax_in_turns(mc, tcs: list, X, Y, steps: int, repeats: int) -> list[float]:
    """Like time_jaxninja, for several TrainConfigs timed in turns: the median µs/step each."""
    import jax
    import jax.numpy as jnp

    from jaxninja.training.step import chunk_runner, init_state

    Xd, Yd = jnp.asarray(X), jnp.asarray(Y)
    loops = []
    for tc in tcs:
        state, seed = init_state(mc, tc), np.uint32(tc.seed)
        run, _ = chunk_runner(mc, tc).executable(tc.chunk_steps, state, 0, Xd, Yd, seed)
        state = jax.block_until_ready(run(state, 0, Xd, Yd, seed))[0]
        loops.append([run, state, seed, tc.chunk_steps, []])
    n_chunks = max(1, steps // tcs[0].chunk_steps)
    for r in range(repeats):
        for loop in loops:
            run, state, seed, chunk, runs = loop
            t0 = time.perf_counter()
            for c in range(n_chunks):
                state, losses, _ = run(state, (r * n_chunks + c + 1) * chunk, Xd, Yd, seed)
            np.asarray(losses)
            runs.append((time.perf_counter() - t0) / (n_chunks * chunk) * 1e6)
            loop[1] = state
    return [statistics.median(loop[4]) for loop in loops]


def print_table(results: dict, jax_us: float, flops: int, own: dict | None = None) -> float:
    """The rows as µs/step, against jaxninja and against this machine's FLOP limit: of `flops`,
    or of a row's own FLOPs in `own` (by name). Returns the limit of `flops`, µs."""
    import jax
    import torch

    device = jax.devices()[0]
    print(f"machine: {platform.processor() or platform.machine()}, jax {jax.__version__} on "
          f"{device.platform} ({device.device_kind}), torch {torch.__version__} with "
          f"{torch.get_num_threads()} threads")  # fmt: skip
    limit_us = flops / matmul_flops_per_s() * 1e6
    print(limit_line(flops, flops / limit_us * 1e6))
    print(f"{'loop':38s} {'µs/step':>9s} {'vs jaxninja':>12s} {'x the FLOP limit':>17s}")
    for name, us in results.items():
        if isinstance(us, str):
            print(f"{name:38s} {us}")
        else:
            limit = limit_us * (own or {}).get(name, flops) / flops
            print(f"{name:38s} {us:9.1f} {us / jax_us:11.1f}x {us / limit:16.1f}x")
    return limit_us


def wavenet_rows(args, X, Y, vocab_size: int) -> tuple[dict, object, object]:
    """The lecture's part-5 loop, torch.compile of it, and jaxninja, at the lecture's sizes."""
    import torch

    import torch_ref
    from jaxninja.config import model_config, training_config
    from jaxninja.models.wavenet import init_params

    mc = model_config("wavenet", "train", vocab_size=vocab_size)
    tc = training_config("wavenet")
    Xt, Yt = torch.tensor(X).long(), torch.tensor(Y).long()

    def lecture_step(loss_fn):
        model, _, _ = torch_ref.wavenet.build(init_params(mc, tc.seed))
        parameters = model.parameters()
        for t in parameters:
            t.requires_grad = True

        def step(_, Xb, Yb, lr):
            torch_ref.wavenet.sgd_step(parameters, loss_fn(model, Xb, Yb), lr)

        return step

    results: dict[str, float | str] = {}
    results["(a) the lecture's loop, autograd"] = time_torch(
        lecture_step(torch_ref.wavenet.loss_of), None, Xt, Yt, args.steps, args.repeats
    )
    if args.no_compile:
        results["(b) torch.compile of (a)"] = "skipped (--no-compile)"
    else:
        try:
            compiled = lecture_step(torch.compile(torch_ref.wavenet.loss_of))
            results["(b) torch.compile of (a)"] = time_torch(
                compiled, None, Xt, Yt, args.steps, args.repeats
            )
        except Exception as e:  # inductor needs a working C++ toolchain
            results["(b) torch.compile of (a)"] = f"failed: {type(e).__name__}"
    results["(c) jaxninja"] = time_jaxninja(mc, tc, X, Y, args.steps, args.repeats)
    return results, mc, tc


MAKEMORE, WHOLE_ROWS = "(a) makemore's loop, autograd + AdamW", "(e) jaxninja on whole rows"


def gpt_rows(args, X, Y, vocab_size: int) -> tuple[dict, object, object]:
    """makemore's loop, torch.compile of it, the jax.grad loop and jaxninja, makemore's sizes."""
    import torch

    import torch_ref.gpt
    from jaxninja.config import model_config, training_config
    from jaxninja.models.gpt import init_params

    mc = model_config("gpt", "train", vocab_size=vocab_size, block_size=X.shape[1])
    tc = training_config("gpt", chunk_steps=min(args.steps, 1000))
    Xt, Yt = torch.tensor(X).long(), torch.tensor(Y).long()

    def makemore_step(compiled: bool):
        model, _ = torch_ref.gpt.build(init_params(mc, tc.seed), mc.n_head)
        opt = torch.optim.AdamW(model.parameters(), lr=tc.lr, betas=(tc.beta1, tc.beta2),
                                weight_decay=tc.weight_decay, eps=tc.adam_eps)  # fmt: skip
        forward = torch.compile(model) if compiled else model

        def step(_, Xb, Yb, lr):  # makemore's: forward, zero_grad, backward, step
            _, loss = forward(Xb, Yb)
            model.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

        return step

    results: dict[str, float | str] = {}
    results[MAKEMORE] = time_torch(makemore_step(False), None, Xt, Yt, args.steps, args.repeats)
    if args.no_compile:
        results["(b) torch.compile of (a)"] = "skipped (--no-compile)"
    else:
        try:
            step = makemore_step(True)
            results["(b) torch.compile of (a)"] = time_torch(
                step, None, Xt, Yt, args.steps, args.repeats
            )
        except Exception as e:  # inductor needs a working C++ toolchain
            results["(b) torch.compile of (a)"] = f"failed: {type(e).__name__}"
    auto, manual, whole = time_jax_in_turns(
        mc,
        [replace(tc, gradients="autodiff"), tc, replace(tc, trim_rows=False)],
        X, Y, args.steps, args.repeats,
    )  # fmt: skip
    results["(c) jitted jax.grad loop"] = auto
    results["(d) jaxninja"] = manual
    results[WHOLE_ROWS] = whole
    return results, mc, tc


def mean_trimmed_flops(mc, tc, Y: np.ndarray, steps: int) -> float:
    """The mean FLOPs of the steps (c) and (d) take: each on the fewest positions that hold its
    batch's targets (step.py's _trimmed), over the batches of the first `steps` steps."""
    import jax

    from jaxninja.training.step import batch_indices, positions_needed, trim_lengths

    ix = batch_indices(tc.seed, steps, len(Y), tc.batch_size)  # (steps, B)
    need = np.asarray(jax.vmap(positions_needed)(Y[ix]))  # (steps,)
    lengths = np.asarray(trim_lengths(mc.block_size))
    T = lengths[np.searchsorted(lengths, need)]  # (steps,)
    B, C, L, V = tc.batch_size, mc.n_embd, mc.n_layer, mc.vocab_size
    return float(np.mean([gpt_step_flops(B, int(t), C, L, V) for t in T]))


def mlp_rows(args, X, Y, vocab_size: int) -> tuple[dict, object, object]:
    """The notebook's loops, torch.compile of the manual one, and jaxninja, at part 4's sizes."""
    import torch

    import torch_ref
    from jaxninja.config import ModelConfig, TrainConfig
    from jaxninja.models.mlp import init_params

    mc, tc = ModelConfig(vocab_size=vocab_size, n_hidden=200), TrainConfig()
    params = init_params(mc, tc.seed)

    def torch_params(grad=False):
        return {k: torch.tensor(v, requires_grad=grad) for k, v in params.items()}

    Xt, Yt = torch.tensor(X).long(), torch.tensor(Y).long()
    results: dict[str, float | str] = {}
    with torch.no_grad():
        results["(a) notebook loop, PyTorch manual"] = time_torch(
            torch_ref.step_manual, torch_params(), Xt, Yt, args.steps, args.repeats)  # fmt: skip
    results["(b) PyTorch autograd"] = time_torch(
        autograd_step, torch_params(grad=True), Xt, Yt, args.steps, args.repeats)  # fmt: skip
    if args.no_compile:
        results["(c) torch.compile of (a)"] = "skipped (--no-compile)"
    else:
        try:
            compiled = torch.compile(torch_ref.step_manual)
            with torch.no_grad():
                results["(c) torch.compile of (a)"] = time_torch(
                    compiled, torch_params(), Xt, Yt, args.steps, args.repeats)  # fmt: skip
        except Exception as e:  # inductor needs a working C++ toolchain
            results["(c) torch.compile of (a)"] = f"failed: {type(e).__name__}"
    results["(d) jaxninja"] = time_jaxninja(mc, tc, X, Y, args.steps, args.repeats)
    return results, mc, tc


def time_full_run(mc, tc, X, Y, vocab, results: dict) -> None:
    """jaxninja's whole run (tc.steps), compilation excluded and reported."""
    from jaxninja.training.loop import train

    with tempfile.TemporaryDirectory() as out:
        r = train(mc, tc, (X, Y), vocab, out, progress=False, log=lambda s: None)
    results[f"full {tc.steps} run: training s"] = r.train_seconds
    results[f"full {tc.steps} run: compile s"] = r.compile_seconds
    us = r.train_seconds / tc.steps * 1e6
    print(
        f"jaxninja full {tc.steps}-step run: {r.train_seconds:.1f} s training ({us:.1f} "
        f"µs/step), {r.compile_seconds:.1f} s compile"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=2000, help="steps per timed repeat (2000)")
    ap.add_argument("--repeats", type=int, default=5, help="repeats; the median is kept (5)")
    ap.add_argument("--no-compile", action="store_true", help="skip torch.compile")
    ap.add_argument("--full", action="store_true", help="also time jaxninja's full 200k run")
    ap.add_argument("--model", choices=("mlp", "wavenet", "gpt"), default="mlp", help="(mlp)")
    ap.add_argument("--json", help="also write the results to this file")
    ap.add_argument("--data", default=None)
    args = ap.parse_args()

    from jaxninja.data import load_rows, load_splits, resolve_data_path

    path = resolve_data_path(args.data)
    if args.model == "gpt":
        splits = load_rows(path)  # makemore's rows, block size the longest word + 1
    else:
        splits = load_splits(path, 8 if args.model == "wavenet" else 3)
    X, Y = splits.data["train"]
    rows = {"mlp": mlp_rows, "wavenet": wavenet_rows, "gpt": gpt_rows}[args.model]
    results, mc, tc = rows(args, X, Y, splits.vocab.size)
    if args.model == "gpt":
        flops = gpt_step_flops(tc.batch_size, mc.block_size, mc.n_embd, mc.n_layer, mc.vocab_size)
    else:
        count = wavenet_step_flops if args.model == "wavenet" else step_flops
        flops = count(tc.batch_size, mc.block_size, mc.n_embd, mc.n_hidden, mc.vocab_size)
    jax_us = next(v for k, v in results.items() if "jaxninja" in k)
    own = {}
    if args.model == "gpt":  # (c) and (d) skip the rows' padding: their own, smaller FLOPs
        trimmed = mean_trimmed_flops(mc, tc, Y, 10_000)
        own = {k: trimmed for k in ("(c) jitted jax.grad loop", "(d) jaxninja")}
    results["FLOP limit µs/step"] = limit = print_table(results, jax_us, flops, own)
    if own:
        results["(c), (d) FLOP limit µs/step"] = limit * trimmed / flops
        same_work = results[MAKEMORE] / results[WHOLE_ROWS]
        print(f"(c) and (d) skip most of the rows' padding, each step on 10, 12 or 16 positions: "
              f"{trimmed / 1e6:.0f} MFLOP a step on average, the FLOPs their 'x the FLOP limit' "
              f"counts. On (a)'s work, (a) over (e): {same_work:.1f}x")  # fmt: skip
    if args.full:
        time_full_run(mc, tc, X, Y, splits.vocab, results)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
