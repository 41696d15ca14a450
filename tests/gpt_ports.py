"""tests/gpt_pairs.py's GPT ported to flax.linen, flax.nnx and equinox, each unedited by the
tests and each able to carry one of two real port bugs in one submodule:
  - "ln_eps": block 1's `ln_2` left at flax's default LayerNorm epsilon, 1e-6 (torch's: 1e-5),
    a forward bug;
  - "gelu_vjp": block 0's GELU with a custom_vjp whose backward is the tanh approximation's,
    a backward bug (its forward is right).
equinox applies its per-token layers (Linear, LayerNorm) under jax.vmap, as its users do."""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
from flax import linen, nnx

from tests.gpt_pairs import Config, attend

BUGS = ("ln_eps", "gelu_vjp")


@jax.custom_vjp
def gelu_wrong_vjp(x: jax.Array) -> jax.Array:
    return jax.nn.gelu(x, approximate=False)


def _gelu_fwd(x):
    return gelu_wrong_vjp(x), x


def _gelu_bwd(x, g):
    return (jax.vjp(lambda y: jax.nn.gelu(y, approximate=True), x)[1](g)[0],)


gelu_wrong_vjp.defvjp(_gelu_fwd, _gelu_bwd)


def gelu(x: jax.Array, wrong_vjp: bool) -> jax.Array:
    return gelu_wrong_vjp(x) if wrong_vjp else jax.nn.gelu(x, approximate=False)


def _eps(bug: str | None, layer: int, which: str) -> float:
    return 1e-6 if bug == "ln_eps" and layer == 1 and which == "ln_2" else 1e-5


# flax.linen


class LinenGELU(linen.Module):
    wrong_vjp: bool = False

    def __call__(self, x):
        return gelu(x, self.wrong_vjp)


class LinenBlock(linen.Module):
    cfg: Config
    layer: int
    bug: str | None = None

    @linen.compact
    def __call__(self, x):
        C = self.cfg.n_embd
        h = linen.LayerNorm(epsilon=_eps(self.bug, self.layer, "ln_1"), name="ln_1")(x)
        x = x + LinenAttention(self.cfg.n_head, name="attn")(h)
        h = linen.LayerNorm(epsilon=_eps(self.bug, self.layer, "ln_2"), name="ln_2")(x)
        wrong = self.bug == "gelu_vjp" and self.layer == 0
        return x + LinenMLP(C, wrong, name="mlp")(h)


class LinenAttention(linen.Module):
    n_head: int

    @linen.compact
    def __call__(self, x):
        C = x.shape[-1]
        y = attend(linen.Dense(3 * C, name="c_attn")(x), self.n_head)
        return linen.Dense(C, name="c_proj")(y)


class LinenMLP(linen.Module):
    n_embd: int
    wrong_vjp: bool = False

    @linen.compact
    def __call__(self, x):
        h = LinenGELU(self.wrong_vjp, name="gelu")(linen.Dense(4 * self.n_embd, name="c_fc")(x))
        return linen.Dense(self.n_embd, name="c_proj")(h)


class LinenGPT(linen.Module):
    cfg: Config
    bug: str | None = None

    @linen.compact
    def __call__(self, idx):
        cfg = self.cfg
        wte = linen.Embed(cfg.vocab, cfg.n_embd, name="wte")
        x = wte(idx) + linen.Embed(cfg.block, cfg.n_embd, name="wpe")(jnp.arange(idx.shape[-1]))
        for i in range(cfg.n_layer):
            x = LinenBlock(cfg, i, self.bug, name=f"h_{i}")(x)
        return wte.attend(linen.LayerNorm(epsilon=1e-5, name="ln_f")(x))


# flax.nnx


class NnxGELU(nnx.Module):
    def __init__(self, wrong_vjp: bool) -> None:
        self.wrong_vjp = wrong_vjp

    def __call__(self, x):
        return gelu(x, self.wrong_vjp)


class NnxAttention(nnx.Module):
    def __init__(self, cfg: Config, rngs: nnx.Rngs) -> None:
        self.n_head = cfg.n_head
        self.c_attn = nnx.Linear(cfg.n_embd, 3 * cfg.n_embd, rngs=rngs)
        self.c_proj = nnx.Linear(cfg.n_embd, cfg.n_embd, rngs=rngs)

    def __call__(self, x):
        return self.c_proj(attend(self.c_attn(x), self.n_head))


class NnxMLP(nnx.Module):
    def __init__(self, cfg: Config, wrong_vjp: bool, rngs: nnx.Rngs) -> None:
        self.c_fc = nnx.Linear(cfg.n_embd, 4 * cfg.n_embd, rngs=rngs)
        self.gelu = NnxGELU(wrong_vjp)
        self.c_proj = nnx.Linear(4 * cfg.n_embd, cfg.n_embd, rngs=rngs)

    def __call__(self, x):
        return self.c_proj(self.gelu(self.c_fc(x)))


class NnxBlock(nnx.Module):
    def __init__(self, cfg: Config, layer: int, bug: str | None, rngs: nnx.Rngs) -> None:
        C = cfg.n_embd
        self.ln_1 = nnx.LayerNorm(C, epsilon=_eps(bug, layer, "ln_1"), rngs=rngs)
        self.attn = NnxAttention(cfg, rngs)
        self.ln_2 = nnx.LayerNorm(C, epsilon=_eps(bug, layer, "ln_2"), rngs=rngs)
        self.mlp = NnxMLP(cfg, bug == "gelu_vjp" and layer == 0, rngs)

    def __call__(self, x):
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class NnxGPT(nnx.Module):
    def __init__(self, cfg: Config, bug: str | None = None, seed: int = 0) -> None:
        rngs = nnx.Rngs(seed)
        self.wte = nnx.Embed(cfg.vocab, cfg.n_embd, rngs=rngs)
        self.wpe = nnx.Embed(cfg.block, cfg.n_embd, rngs=rngs)
        # nnx.Embed fixes its compute dtype at construction (float32): None computes in the
        # params' dtype, so that the float64 run is float64 throughout
        self.wte.dtype = self.wpe.dtype = None
        self.h = nnx.List([NnxBlock(cfg, i, bug, rngs) for i in range(cfg.n_layer)])
        self.ln_f = nnx.LayerNorm(cfg.n_embd, epsilon=1e-5, rngs=rngs)

    def __call__(self, idx):
        x = self.wte(idx) + self.wpe(jnp.arange(idx.shape[-1]))
        for block in self.h:
            x = block(x)
        return self.wte.attend(self.ln_f(x))


# equinox: one token's layers, vmapped over batch and time


def _per_token(layer, x):
    return jax.vmap(jax.vmap(layer))(x)


class EqxGELU(eqx.Module):
    wrong_vjp: bool = eqx.field(static=True)

    def __call__(self, x):
        return gelu(x, self.wrong_vjp)


class EqxAttention(eqx.Module):
    c_attn: eqx.nn.Linear
    c_proj: eqx.nn.Linear
    n_head: int = eqx.field(static=True)

    def __init__(self, cfg: Config, key: jax.Array) -> None:
        k1, k2 = jax.random.split(key)
        self.c_attn = eqx.nn.Linear(cfg.n_embd, 3 * cfg.n_embd, key=k1)
        self.c_proj = eqx.nn.Linear(cfg.n_embd, cfg.n_embd, key=k2)
        self.n_head = cfg.n_head

    def __call__(self, x):
        return _per_token(self.c_proj, attend(_per_token(self.c_attn, x), self.n_head))


class EqxMLP(eqx.Module):
    c_fc: eqx.nn.Linear
    gelu: EqxGELU
    c_proj: eqx.nn.Linear

    def __init__(self, cfg: Config, wrong_vjp: bool, key: jax.Array) -> None:
        k1, k2 = jax.random.split(key)
        self.c_fc = eqx.nn.Linear(cfg.n_embd, 4 * cfg.n_embd, key=k1)
        self.gelu = EqxGELU(wrong_vjp)
        self.c_proj = eqx.nn.Linear(4 * cfg.n_embd, cfg.n_embd, key=k2)

    def __call__(self, x):
        return _per_token(self.c_proj, self.gelu(_per_token(self.c_fc, x)))


class EqxBlock(eqx.Module):
    ln_1: eqx.nn.LayerNorm
    attn: EqxAttention
    ln_2: eqx.nn.LayerNorm
    mlp: EqxMLP

    def __init__(self, cfg: Config, layer: int, bug: str | None, key: jax.Array) -> None:
        k1, k2 = jax.random.split(key)
        self.ln_1 = eqx.nn.LayerNorm(cfg.n_embd, eps=_eps(bug, layer, "ln_1"))
        self.attn = EqxAttention(cfg, k1)
        self.ln_2 = eqx.nn.LayerNorm(cfg.n_embd, eps=_eps(bug, layer, "ln_2"))
        self.mlp = EqxMLP(cfg, bug == "gelu_vjp" and layer == 0, k2)

    def __call__(self, x):
        x = x + self.attn(_per_token(self.ln_1, x))
        return x + self.mlp(_per_token(self.ln_2, x))


class EqxGPT(eqx.Module):
    wte: eqx.nn.Embedding
    wpe: eqx.nn.Embedding
    h: list
    ln_f: eqx.nn.LayerNorm

    def __init__(self, cfg: Config, bug: str | None = None, seed: int = 0) -> None:
        keys = jax.random.split(jax.random.key(seed), cfg.n_layer + 2)
        self.wte = eqx.nn.Embedding(cfg.vocab, cfg.n_embd, key=keys[0])
        self.wpe = eqx.nn.Embedding(cfg.block, cfg.n_embd, key=keys[1])
        self.h = [EqxBlock(cfg, i, bug, k) for i, k in enumerate(keys[2:])]
        self.ln_f = eqx.nn.LayerNorm(cfg.n_embd, eps=1e-5)

    def __call__(self, idx):
        x = self.wte.weight[idx] + self.wpe.weight[: idx.shape[-1]]
        for block in self.h:
            x = block(x)
        return _per_token(self.ln_f, x) @ self.wte.weight.T


def eqx_weights(cfg: Config) -> dict:
    """torch's names -> equinox's: its Linear keeps torch's (out, in) layout."""
    out = {
        "transformer.wte.weight": "wte.weight",
        "transformer.wpe.weight": "wpe.weight",
        "transformer.ln_f.weight": "ln_f.weight",
        "transformer.ln_f.bias": "ln_f.bias",
    }
    for i in range(cfg.n_layer):
        for name in ("ln_1", "ln_2", "attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj"):
            for kind in ("weight", "bias"):
                out[f"transformer.h.{i}.{name}.{kind}"] = f"h.{i}.{name}.{kind}"
    return out
