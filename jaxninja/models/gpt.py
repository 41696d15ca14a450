"""Part 6: makemore.py's Transformer (`--type transformer`) on hand-written gradients.

The model as makemore writes it: token and position embeddings (`wte`, `wpe`), `n_layer`
Blocks (x + attn(ln_1(x)), then x + mlp(ln_2(x)), the mlp c_fc -> NewGELU -> c_proj at 4 *
n_embd), a final LayerNorm `ln_f` and an untied `lm_head` without bias; cross-entropy over every
position whose target is not -1 (the padding of makemore's rows, data.build_rows). Its backward
walks the forward's caches in reverse, each layer's own (transformer.py, layers.py's Linear),
the residual's gradient fanning out to the branch and the skip and summed where they meet.
No jax.grad here but in `grads_autodiff`, the check's reference.

Names are makemore's state_dict's without the `transformer.` prefix: `wte.weight`,
`h.0.ln_1.weight`, `h.0.attn.c_attn.weight`, `h.0.mlp.c_proj.bias`, `ln_f.bias`,
`lm_head.weight`; a module's output (a row of the check) by the module's name, `h.0` a Block's,
`h.0.mlp.act` the GELU's, `lm_head` the logits. Linear weights are (in, out), makemore's
transposed (torch_ref.gpt maps them).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import lru_cache
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxninja import memory
from jaxninja.config import EVAL_CHUNK, ModelConfig
from jaxninja.models import layers
from jaxninja.models import transformer as tf

Params = dict[str, jax.Array]
INIT_STD = 0.02  # makemore's _init_weights: every Linear and Embedding weight ~ N(0, 0.02)
MLP_WIDTH = 4  # the Block's mlp: n_embd -> 4 * n_embd -> n_embd


def block_shapes(C: int) -> dict[str, tuple[int, ...]]:
    """One Block's parameters, in makemore's state_dict order."""
    H = MLP_WIDTH * C
    return {
        "ln_1.weight": (C,), "ln_1.bias": (C,),
        "attn.c_attn.weight": (C, 3 * C), "attn.c_attn.bias": (3 * C,),
        "attn.c_proj.weight": (C, C), "attn.c_proj.bias": (C,),
        "ln_2.weight": (C,), "ln_2.bias": (C,),
        "mlp.c_fc.weight": (C, H), "mlp.c_fc.bias": (H,),
        "mlp.c_proj.weight": (H, C), "mlp.c_proj.bias": (C,),
    }  # fmt: skip


def param_shapes(cfg: ModelConfig) -> dict[str, tuple[int, ...]]:
    """Every parameter, in makemore's state_dict order."""
    C = cfg.n_embd
    shapes = {"wte.weight": (cfg.vocab_size, C), "wpe.weight": (cfg.block_size, C)}
    for i in range(cfg.n_layer):
        shapes |= {f"h.{i}.{k}": s for k, s in block_shapes(C).items()}
    return shapes | {"ln_f.weight": (C,), "ln_f.bias": (C,), "lm_head.weight": (C, cfg.vocab_size)}


def bn_shapes(cfg: ModelConfig) -> dict[str, tuple[int, ...]]:
    """No BatchNorm: no statistics."""
    return {}


def n_params(cfg: ModelConfig) -> int:
    """Every parameter: 204,544 at makemore's defaults on names.txt (makemore prints 0.20M, its
    count without lm_head, 202,816)."""
    return sum(math.prod(shape) for shape in param_shapes(cfg).values())


def check_fits(cfg: ModelConfig) -> None:
    """The parameters' copies, and an inference forward over EVAL_CHUNK positions (rows of
    block_size): a layer's widest arrays at a position are qkv, the attention row, the mlp's
    hidden units, and the logits."""
    C, T = cfg.n_embd, cfg.block_size
    floats = 3 * C + cfg.n_head * T + MLP_WIDTH * C + cfg.vocab_size
    activations = EVAL_CHUNK * floats * np.dtype(cfg.dtype).itemsize * 4
    memory.require(
        n_params(cfg) * 8 * memory.PARAM_COPIES + activations,
        f"a GPT of {n_params(cfg):,} parameters (n_layer {cfg.n_layer}, n_embd {C})",
        "lower --n-layer or --n-embd",
    )


def init_params(cfg: ModelConfig, seed: int) -> dict[str, np.ndarray]:
    """makemore's initialisation, seeded: every weight N(0, 0.02) (lm_head's too: untied),
    biases 0, LayerNorm weights 1. Drawn in float64 from one numpy generator in the state_dict's
    order, then cast."""
    check_fits(cfg)
    rng = np.random.default_rng([seed, 0])
    params = {}
    for name, shape in param_shapes(cfg).items():
        if name.endswith(".weight") and len(shape) == 2:
            params[name] = INIT_STD * rng.standard_normal(shape)
        else:  # LayerNorm weight 1; every bias 0
            params[name] = np.full(shape, 1.0 if name.endswith(".weight") else 0.0)
    return {k: v.astype(cfg.dtype) for k, v in params.items()}


def check_params(cfg: ModelConfig, seed: int) -> dict[str, np.ndarray]:
    """makemore's initialisation with LayerNorm's weights moved off 1 and every bias off 0, so
    that a backward that drops one (a gain forgotten, a zero where a bias gradient goes) cannot
    pass."""
    params = {k: v.astype(np.float64) for k, v in init_params(cfg, seed).items()}
    rng = np.random.default_rng([seed, 2])
    for name, x in params.items():
        if x.ndim == 1:
            params[name] = x + 0.1 * rng.standard_normal(x.shape)
    return {k: v.astype(cfg.dtype) for k, v in params.items()}


# --- forward ------------------------------------------------------------------------------------


def tap(taps: Params | None, name: str, x: jax.Array) -> jax.Array:
    """x, plus taps[name] (zeros) when given: d loss / d tap is the gradient of x, the
    jax.grad reference's way to see a module's output."""
    return x if taps is None else x + taps[name]


class BlockCache(NamedTuple):
    ln_1: tf.LayerNormCache
    attn: tf.AttentionCache
    ln_2: tf.LayerNormCache
    c_fc: layers.LinearCache
    act: tf.GeluCache
    c_proj: layers.LinearCache


def own(params: Params, prefix: str) -> Params:
    """A module's parameters out of the flat dict (`h.0.ln_1.weight` -> `ln_1.weight`)."""
    return {k.removeprefix(prefix): v for k, v in params.items() if k.startswith(prefix)}


def block_forward(
    p: Params, x: jax.Array, n_head: int, name: str, taps: Params | None = None
) -> tuple[jax.Array, BlockCache]:
    """A Block, (B, T, C) -> (B, T, C): x + attn(ln_1(x)), then x + mlp(ln_2(x)). `p` by the
    Block's own names (`ln_1.weight`); `name` (`h.0`) names its taps."""
    h, c_ln1 = tf.layernorm_forward(x, p["ln_1.weight"], p["ln_1.bias"])
    h = tap(taps, f"{name}.ln_1", h)
    qkv_tap = None if taps is None else taps[f"{name}.attn.c_attn"]
    h, c_attn = tf.attention_forward(h, own(p, "attn."), n_head, qkv_tap)
    x = x + tap(taps, f"{name}.attn.c_proj", h)
    h, c_ln2 = tf.layernorm_forward(x, p["ln_2.weight"], p["ln_2.bias"])
    h = tap(taps, f"{name}.ln_2", h)
    h, c_fc = layers.linear_forward(h, p["mlp.c_fc.weight"], p["mlp.c_fc.bias"])  # (B, T, 4C)
    h, c_act = tf.gelu_forward(tap(taps, f"{name}.mlp.c_fc", h))
    h = tap(taps, f"{name}.mlp.act", h)
    h, c_proj = layers.linear_forward(h, p["mlp.c_proj.weight"], p["mlp.c_proj.bias"])
    x = x + tap(taps, f"{name}.mlp.c_proj", h)
    return tap(taps, name, x), BlockCache(c_ln1, c_attn, c_ln2, c_fc, c_act, c_proj)


class Caches(NamedTuple):
    emb: tf.EmbeddingsCache
    blocks: tuple[BlockCache, ...]
    ln_f: tf.LayerNormCache
    lm_head: layers.LinearCache


def forward(
    cfg: ModelConfig, params: Params, X: jax.Array, taps: Params | None = None
) -> tuple[jax.Array, Caches]:
    """The logits (B, T, V) of rows X (B, T), T <= block_size, and every layer's cache; with
    `taps`, each module's output plus its tap (grads_autodiff)."""
    x, c_emb = tf.embeddings_forward(params["wte.weight"], params["wpe.weight"], X)  # (B, T, C)
    if taps is not None:  # x is tok_emb + pos_emb: a tap on either is a tap on their sum
        x = x + taps["wte"] + taps["wpe"]  # (B, T, C) and (1, T, C)
    blocks = []
    for i in range(cfg.n_layer):
        x, c_block = block_forward(own(params, f"h.{i}."), x, cfg.n_head, f"h.{i}", taps)
        blocks.append(c_block)
    x, c_lnf = tf.layernorm_forward(x, params["ln_f.weight"], params["ln_f.bias"])
    x = tap(taps, "ln_f", x)
    logits, c_head = layers.linear_forward(x, params["lm_head.weight"])  # (B, T, V)
    return tap(taps, "lm_head", logits), Caches(c_emb, tuple(blocks), c_lnf, c_head)


def output_shapes(cfg: ModelConfig, batch_size: int, T: int | None = None) -> dict[str, tuple]:
    """Every module output's shape for a batch of rows of T (block_size) positions."""
    B, T, C, V = batch_size, T or cfg.block_size, cfg.n_embd, cfg.vocab_size
    widths = {"ln_1": C, "attn.c_attn": 3 * C, "attn.c_proj": C, "ln_2": C,
              "mlp.c_fc": MLP_WIDTH * C, "mlp.act": MLP_WIDTH * C, "mlp.c_proj": C}  # fmt: skip
    shapes = {"wte": (B, T, C), "wpe": (1, T, C)}
    for i in range(cfg.n_layer):
        shapes |= {f"h.{i}.{k}": (B, T, w) for k, w in widths.items()} | {f"h.{i}": (B, T, C)}
    return shapes | {"ln_f": (B, T, C), "lm_head": (B, T, V)}


# --- backward -----------------------------------------------------------------------------------


def block_backward(
    dx: jax.Array,
    cache: BlockCache,
    name: str,
    axis_name: str | None = None,
    backwards: Backwards | None = None,
) -> tuple[Params, jax.Array]:
    """A Block in reverse: (every gradient by its full name, in the backward's order, d of the
    Block's input). Each residual add passes dx to its branch and its skip alike; the branch's
    input gradient joins the skip's where the branch began. Its LayerNorms and attention are
    `backwards`' (None: the model's own)."""
    bw = OWN if backwards is None else backwards
    g = {name: dx, f"{name}.mlp.c_proj": dx}
    dh, g[f"{name}.mlp.c_proj.weight"], g[f"{name}.mlp.c_proj.bias"] = layers.linear_backward(
        dx, cache.c_proj, axis_name
    )
    g[f"{name}.mlp.act"] = dh
    dh = g[f"{name}.mlp.c_fc"] = tf.gelu_backward(dh, cache.act)[1]
    dh, g[f"{name}.mlp.c_fc.weight"], g[f"{name}.mlp.c_fc.bias"] = layers.linear_backward(
        dh, cache.c_fc, axis_name
    )
    g[f"{name}.ln_2"] = dh
    dln, dh = bw.layernorm(dh, cache.ln_2, axis_name)
    g |= {f"{name}.ln_2.{k}": v for k, v in dln.items()}
    dx = dx + dh  # the residual x + mlp(ln_2(x)): skip and branch
    g[f"{name}.attn.c_proj"] = dx
    dattn, dh, dqkv = bw.attention(dx, cache.attn, axis_name)
    g |= {f"{name}.attn.{k}": dattn[k] for k in ("c_proj.weight", "c_proj.bias")}
    g[f"{name}.attn.c_attn"] = dqkv
    g |= {f"{name}.attn.{k}": dattn[k] for k in ("c_attn.weight", "c_attn.bias")}
    g[f"{name}.ln_1"] = dh
    dln, dh = bw.layernorm(dh, cache.ln_1, axis_name)
    g |= {f"{name}.ln_1.{k}": v for k, v in dln.items()}
    return g, dx + dh  # the residual x + attn(ln_1(x))


class Backwards(NamedTuple):
    """The layer backwards `backward` calls, by role (the defaults: the model's own): what a
    check (a mutation in the tests) or a grade (a learner's function in every seat of its kind)
    puts in their seats."""

    layernorm: Callable = tf.layernorm_backward  # (dout, cache, axis_name) -> (dparams, dx)
    attention: Callable = tf.attention_backward_qkv  # ... -> (dparams, dx, dqkv)
    block: Callable = block_backward  # (dx, cache, name, axis_name, backwards) -> (rows, dx)
    embeddings: Callable = tf.embeddings_backward  # (dx, cache, axis_name) -> (dparams, None)


OWN = Backwards()


def backward(
    cfg: ModelConfig,
    dlogits: jax.Array,
    caches: Caches,
    axis_name: str | None = None,
    backwards: Backwards | None = None,
) -> Params:
    """The caches walked in reverse from dlogits (B, T, V): the gradient of every parameter and
    every module's output, by name, in grad_order's order (jit's outputs sort a dict's keys);
    each layer's backward `backwards`' (None: the model's own)."""
    bw = OWN if backwards is None else backwards
    g = {"lm_head": dlogits}
    dx, g["lm_head.weight"], _ = layers.linear_backward(dlogits, caches.lm_head, axis_name, False)
    g["ln_f"] = dx
    dln, dx = bw.layernorm(dx, caches.ln_f, axis_name)
    g |= {f"ln_f.{k}": v for k, v in dln.items()}
    for i in reversed(range(cfg.n_layer)):
        gb, dx = bw.block(dx, caches.blocks[i], f"h.{i}", axis_name, bw)
        g |= gb
    demb, _ = bw.embeddings(dx, caches.emb, axis_name)
    # x = tok_emb + pos_emb: dx reaches both, pos_emb's (1, T, C) summed over the batch
    g |= {"wpe": dx.sum(0, keepdims=True), "wpe.weight": demb["wpe"]}
    return g | {"wte": dx, "wte.weight": demb["wte"]}


def loss_and_grads(
    cfg: ModelConfig, axis_name: str | None = None, backwards: Backwards | None = None
) -> Callable:
    """(params, X, Y) -> (loss, every gradient of the hand-written backward, {} (no BatchNorm
    statistics)): the forward, the cross-entropy over the positions Y does not mark -1, and
    the caches walked in reverse, with `backwards` in the layers' seats (None: the model's
    own). The loss is the mean over the global batch's counted positions under `axis_name`."""

    def run(params: Params, X: jax.Array, Y: jax.Array):
        logits, caches = forward(cfg, params, X)  # (B, T, V)
        (loss, _), c_ce = tf.cross_entropy_forward(logits, Y, axis_name)
        dlogits = tf.cross_entropy_backward(jnp.ones((), logits.dtype), c_ce)
        return loss, backward(cfg, dlogits, caches, axis_name, backwards), {}

    return run


def forward_loss(
    cfg: ModelConfig, params: Params, X: jax.Array, Y: jax.Array, axis_name: str | None = None
) -> jax.Array:
    """The training forward's loss, the mean over the global batch's counted positions; what
    the jax.grad control (registry.py) differentiates."""
    logits, _ = forward(cfg, params, X)
    return tf.cross_entropy_forward(logits, Y, axis_name)[0][0]


@lru_cache(maxsize=64)
def eval_fns(cfg: ModelConfig) -> tuple[Callable, dict[str, Callable]]:
    """(logits (params, bn, X) -> (N, T, V), {}: no BatchNorm), made once per config so that
    evaluate.py's jit caches it."""

    def logits(params: Params, bn: dict, X: jax.Array) -> jax.Array:
        return forward(cfg, params, X)[0]

    return logits, {}


def forward_tapped(
    cfg: ModelConfig, params: Params, X: jax.Array, Y: jax.Array, taps: Params
) -> jax.Array:
    """The training forward's loss with a zero-valued tap added to every module's output."""
    logits, _ = forward(cfg, params, X, taps)
    return tf.cross_entropy_forward(logits, Y)[0][0]


def grads_autodiff(cfg: ModelConfig, params: Params, X: jax.Array, Y: jax.Array) -> Params:
    """jax.grad of the same forward's loss w.r.t. every parameter and every module's output."""
    dtype = params["wte.weight"].dtype
    taps = {k: jnp.zeros(s, dtype) for k, s in output_shapes(cfg, *X.shape).items()}
    dparams, dtaps = jax.grad(lambda p, t: forward_tapped(cfg, p, X, Y, t), (0, 1))(params, taps)
    return {**dtaps, **dparams}


def grad_order(cfg: ModelConfig) -> tuple[str, ...]:
    """The rows of a check in the order the backward makes them: a module's output, then its
    parameters, from lm_head back to the embeddings."""
    rows = ["lm_head", "lm_head.weight", "ln_f", "ln_f.weight", "ln_f.bias"]
    block = ("", ".mlp.c_proj", ".mlp.c_proj.weight", ".mlp.c_proj.bias", ".mlp.act",
             ".mlp.c_fc", ".mlp.c_fc.weight", ".mlp.c_fc.bias",
             ".ln_2", ".ln_2.weight", ".ln_2.bias",
             ".attn.c_proj", ".attn.c_proj.weight", ".attn.c_proj.bias",
             ".attn.c_attn", ".attn.c_attn.weight", ".attn.c_attn.bias",
             ".ln_1", ".ln_1.weight", ".ln_1.bias")  # fmt: skip
    for i in reversed(range(cfg.n_layer)):
        rows += [f"h.{i}{k}" for k in block]
    return (*rows, "wpe", "wpe.weight", "wte", "wte.weight")
