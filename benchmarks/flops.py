"""How close to the machine's limit: a training step's FLOP count, and the machine's dense
matmul throughput measured in the same run, so a µs/step figure means something on any machine.

The MLP step's arithmetic is its six matmuls (forward: embcat @ W1, h @ W2; backward: dW2, dh, dW1,
dembcat), 2 * B * (T*E*H + H*V) FLOPs each pair, 6 * B * (T*E*H + H*V) in all; the elementwise
work is a few percent of it. The limit is that count at the throughput of one large float32
matmul on every device at once, the best this machine does.
"""

from __future__ import annotations

import statistics
import time


def step_flops(batch: int, block: int, n_embd: int, n_hidden: int, vocab: int) -> int:
    """FLOPs of one training step's matmuls, forward and backward."""
    return 6 * batch * (block * n_embd * n_hidden + n_hidden * vocab)


def wavenet_step_flops(batch: int, block: int, n_embd: int, n_hidden: int, vocab: int) -> int:
    """FLOPs of one WaveNet training step's matmuls: each stage's Linear on (B, T/2**i, 2C) and
    the last one, three matmuls each (forward, dW, dx: the first stage's dx feeds dC)."""
    total, T, width = 0, block, n_embd
    while T > 1:
        T, width = T // 2, width * 2
        total += 3 * 2 * batch * T * width * n_hidden
        width = n_hidden
    return total + 3 * 2 * batch * n_hidden * vocab


def matmul_flops_per_s(n: int = 2048, repeats: int = 7) -> float:
    """The median FLOP/s of n x n float32 matmuls, jitted, one on each of JAX's devices at once
    (a CPU split into one device per core is the whole machine only all together)."""
    import jax
    import jax.numpy as jnp
    from jax.sharding import Mesh, NamedSharding
    from jax.sharding import PartitionSpec as P

    devices = jax.devices()
    sharding = NamedSharding(Mesh(devices, ("d",)), P("d"))
    shape = (len(devices), n, n)
    a = jax.device_put(jax.random.normal(jax.random.key(0), shape, jnp.float32), sharding)
    b = jax.device_put(jax.random.normal(jax.random.key(1), shape, jnp.float32), sharding)
    f = jax.jit(jnp.matmul)
    f(a, b).block_until_ready()
    runs = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        f(a, b).block_until_ready()
        runs.append(time.perf_counter() - t0)
    return 2 * len(devices) * n**3 / statistics.median(runs)


def limit_line(flops: int, per_s: float) -> str:
    return (
        f"a step: {flops / 1e6:.2f} MFLOP of matmuls; this machine's dense matmul: "
        f"{per_s / 1e9:.0f} GFLOP/s, so the limit is {flops / per_s * 1e6:.1f} µs/step"
    )


def gpt_step_flops(batch: int, block: int, n_embd: int, n_layer: int, vocab: int) -> int:
    """FLOPs of one GPT training step's matmuls (makemore's Transformer): per Block c_attn
    (C -> 3C), the causal attention's two (T, T) products at full width, c_proj (C -> C) and
    the mlp (C -> 4C -> C), 2 * B * T * 12 C**2 + 4 * B * T**2 * C, then lm_head (C -> V);
    the backward twice the forward (dW and dx of every matmul), so three forwards in all."""
    B, T, C = batch, block, n_embd
    forward = n_layer * (2 * B * T * 12 * C * C + 4 * B * T * T * C) + 2 * B * T * C * vocab
    return 3 * forward
