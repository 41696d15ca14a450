"""A GPT in PyTorch (nanoGPT's layout: `transformer.wte`, `transformer.h.3.attn.c_attn`, ...,
the head tied to the token embedding; no dropout) and its port as a plain JAX function, with the
mapping from the torch module's `state_dict` names to the function's params. Shared by
tests/test_parity_modules.py (a small one) and benchmarks/parity_scale.py (GPT-2 small and
medium, random weights)."""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import torch
from torch import nn

from jaxninja import parity


class Config(NamedTuple):
    vocab: int = 11
    block: int = 8
    n_layer: int = 2
    n_head: int = 2
    n_embd: int = 16


GPT2_SMALL = Config(vocab=50257, block=1024, n_layer=12, n_head=12, n_embd=768)
GPT2_MEDIUM = Config(vocab=50257, block=1024, n_layer=24, n_head=16, n_embd=1024)


class CausalSelfAttention(nn.Module):
    def __init__(self, cfg: Config) -> None:
        super().__init__()
        self.n_head = cfg.n_head
        self.c_attn = nn.Linear(cfg.n_embd, 3 * cfg.n_embd)
        self.c_proj = nn.Linear(cfg.n_embd, cfg.n_embd)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, C = x.shape
        q, k, v = self.c_attn(x).split(C, dim=2)
        q, k, v = (t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2) for t in (q, k, v))
        att = (q @ k.transpose(-2, -1)) / math.sqrt(k.shape[-1])
        causal = torch.ones(T, T, dtype=torch.bool).tril()
        att = att.masked_fill(~causal, float("-inf")).softmax(dim=-1)
        return self.c_proj((att @ v).transpose(1, 2).reshape(B, T, C))


class MLP(nn.Module):
    def __init__(self, cfg: Config) -> None:
        super().__init__()
        self.c_fc = nn.Linear(cfg.n_embd, 4 * cfg.n_embd)
        self.gelu = nn.GELU()
        self.c_proj = nn.Linear(4 * cfg.n_embd, cfg.n_embd)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.c_proj(self.gelu(self.c_fc(x)))


class Block(nn.Module):
    def __init__(self, cfg: Config) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(cfg.n_embd)
        self.attn = CausalSelfAttention(cfg)
        self.ln_2 = nn.LayerNorm(cfg.n_embd)
        self.mlp = MLP(cfg)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class GPT(nn.Module):
    def __init__(self, cfg: Config) -> None:
        super().__init__()
        self.transformer = nn.ModuleDict(
            {
                "wte": nn.Embedding(cfg.vocab, cfg.n_embd),
                "wpe": nn.Embedding(cfg.block, cfg.n_embd),
                "h": nn.ModuleList([Block(cfg) for _ in range(cfg.n_layer)]),
                "ln_f": nn.LayerNorm(cfg.n_embd),
            }
        )
        self.lm_head = nn.Linear(cfg.n_embd, cfg.vocab, bias=False)
        self.lm_head.weight = self.transformer.wte.weight  # tied, as GPT-2's

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        t = self.transformer
        x = t.wte(idx) + t.wpe(torch.arange(idx.shape[-1]))
        for block in t.h:
            x = block(x)
        return self.lm_head(t.ln_f(x))


def torch_gpt(cfg: Config, seed: int = 0) -> GPT:
    """Random weights (biases and LayerNorms too, so that every weight matters), eval mode."""
    torch.manual_seed(seed)
    model = GPT(cfg).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.ndim > 1:
                p.normal_(0.0, 0.02)
            else:  # a LayerNorm's weight near 1, every bias near 0
                p.normal_(1.0 if ".ln_" in name and name.endswith("weight") else 0.0, 0.1)
    return model


def _layernorm(x: jax.Array, w: jax.Array, b: jax.Array) -> jax.Array:
    m = x.mean(-1, keepdims=True)
    v = ((x - m) ** 2).mean(-1, keepdims=True)
    return (x - m) / jnp.sqrt(v + 1e-5) * w + b


def attend(qkv: jax.Array, n_head: int) -> jax.Array:
    """Causal self-attention from the fused (B, T, 3C) projections to (B, T, C)."""
    B, T, C3 = qkv.shape
    C = C3 // 3
    q, k, v = jnp.split(qkv, 3, axis=-1)
    q, k, v = (t.reshape(B, T, n_head, C // n_head).transpose(0, 2, 1, 3) for t in (q, k, v))
    att = q @ k.transpose(0, 1, 3, 2) / math.sqrt(C // n_head)
    att = jax.nn.softmax(jnp.where(jnp.tri(T, dtype=bool), att, -jnp.inf), axis=-1)
    return (att @ v).transpose(0, 2, 1, 3).reshape(B, T, C)


def _attention(p: dict, pre: str, x: jax.Array, n_head: int) -> jax.Array:
    y = attend(x @ p[pre + "c_attn.kernel"] + p[pre + "c_attn.bias"], n_head)
    return y @ p[pre + "c_proj.kernel"] + p[pre + "c_proj.bias"]


def gpt_jax(cfg: Config):
    """The port as a function of the flat params `jax_weights` names; each block's input and
    output tapped by hand, with the names compare_modules gives torch's."""

    def forward(p: dict, idx: jax.Array) -> jax.Array:
        x = p["wte"][idx] + p["wpe"][: idx.shape[-1]]
        for i in range(cfg.n_layer):
            pre = f"h.{i}."
            x = parity.tap(f"transformer.h.{i} (in)", x)  # compare_modules' name for its input
            h = _layernorm(x, p[pre + "ln_1.scale"], p[pre + "ln_1.bias"])
            x = x + _attention(p, pre + "attn.", h, cfg.n_head)
            h = _layernorm(x, p[pre + "ln_2.scale"], p[pre + "ln_2.bias"])
            h = jax.nn.gelu(h @ p[pre + "mlp.c_fc.kernel"] + p[pre + "mlp.c_fc.bias"], False)
            x = x + h @ p[pre + "mlp.c_proj.kernel"] + p[pre + "mlp.c_proj.bias"]
            x = parity.tap(f"transformer.h.{i}", x)
        x = _layernorm(x, p["ln_f.scale"], p["ln_f.bias"])
        return x @ p["wte"].T

    return forward


def jax_weights(cfg: Config, embedding: str = "") -> dict:
    """torch's state_dict name -> the function's param (a Linear's weight transposed); with
    `embedding=".embedding"`, flax's (linen's `h_0/attn/c_attn/kernel` and nnx's
    `h/0/attn/c_attn/kernel` are both `h.0.attn.c_attn.kernel` once normalised)."""
    out = {
        "transformer.wte.weight": "wte" + embedding,
        "transformer.wpe.weight": "wpe" + embedding,
        "transformer.ln_f.weight": "ln_f.scale",
        "transformer.ln_f.bias": "ln_f.bias",
    }
    for i in range(cfg.n_layer):
        t, j = f"transformer.h.{i}.", f"h.{i}."
        for ln in ("ln_1", "ln_2"):
            out[f"{t}{ln}.weight"] = f"{j}{ln}.scale"
            out[f"{t}{ln}.bias"] = f"{j}{ln}.bias"
        for lin in ("attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj"):
            out[f"{t}{lin}.weight"] = (f"{j}{lin}.kernel", jnp.transpose)
            out[f"{t}{lin}.bias"] = f"{j}{lin}.bias"
    return out
