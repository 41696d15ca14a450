"""`jaxninja check --model gpt`: the GPT's hand-written backward (part 6), checked three ways.

On one seeded case of makemore's rows (data.load_rows: X and Y (B, T), Y -1 past each word's
stop token) with `gpt.check_params` (LayerNorm's weights off 1, every bias off 0, so a gradient
forgotten cannot pass), the backward's rows are compared with (check/sources.py):
  (1) jax.grad of the forward, every module's output tapped (gpt.grads_autodiff);
  (2) PyTorch autograd on torch_ref.gpt, makemore.py's own classes;
  (3) each layer's own jax.vjp fed the backward's own gradient of that layer's output, per
      sublayer of a Block (ln_1, the attention split at c_attn's output, ln_2, mlp.c_fc, act,
      mlp.c_proj), each residual fanning out (the gradient of x + f(x) is the skip's plus
      f's); and jax.grad against PyTorch autograd.
A row per module output and parameter gradient in the backward's order, gpt.grad_order
(`lm_head`, `lm_head.weight`, `ln_f`, ..., `h.0.ln_1.bias`, `wpe`, `wpe.weight`, `wte`,
`wte.weight`), judged by parity's rule in float64 and the dtype under test.

`Backwards` (models/gpt.py's) is what sits in the backward's seats: each layer's backward that
gpt.backward calls (LayerNorm's, attention's, a Block's, the embeddings'). A check with one
replaced (a mutation in the tests) or a grade (a learner's function in every seat of its kind)
passes them to gpt.loss_and_grads, as the WaveNet's check passes its `net`.

A first failure that looks like a model-level mistake (the residual's two gradients not added;
the position table's gradient not summed over the batch) carries a hint in its message.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from jaxninja.check import sources as checked_sources
from jaxninja.check.sources import WAYS, close
from jaxninja.config import ModelConfig
from jaxninja.models import gpt, layers
from jaxninja.models import transformer as tf
from jaxninja.models.gpt import Backwards
from jaxninja.parity.named import F64
from jaxninja.parity.table import Report

__all__ = ["CHECKED", "WAYS", "layer_vjps", "rules", "run_check"]


def rules(cfg: ModelConfig, batch_size: int, ways=WAYS, sources=checked_sources.SOURCES):
    return checked_sources.rules(CHECKED, cfg, batch_size, ways, sources)


# --- each layer's vjp ---------------------------------------------------------------------------


def _pull(f: Callable, cotangent: jax.Array, *primals):
    """f's vjp at primals, fed cotangent: the gradient of each primal."""
    return jax.vjp(f, *primals)[1](cotangent)


def _linear(W, b, x):
    return layers.linear_forward(x, W, b)[0]


def _ln(p, x):
    return tf.layernorm_forward(x, p["weight"], p["bias"])[0]


def _mlp_vjps(p, x2, name: str, g: dict) -> tuple[dict, jax.Array]:
    """The Block's second half, x2 + mlp(ln_2(x2)): its rows, and the gradient of x2."""
    h2 = _ln(gpt.own(p, "ln_2."), x2)
    f = _linear(p["mlp.c_fc.weight"], p["mlp.c_fc.bias"], h2)
    a = tf.gelu_forward(f)[0]
    rows = {f"{name}.mlp.c_proj": g[name]}  # the residual: the branch gets the output's gradient
    dW, db, rows[f"{name}.mlp.act"] = _pull(
        _linear, g[f"{name}.mlp.c_proj"], p["mlp.c_proj.weight"], p["mlp.c_proj.bias"], a
    )
    rows |= {f"{name}.mlp.c_proj.weight": dW, f"{name}.mlp.c_proj.bias": db}
    (rows[f"{name}.mlp.c_fc"],) = _pull(lambda z: tf.gelu_forward(z)[0], g[f"{name}.mlp.act"], f)
    dW, db, rows[f"{name}.ln_2"] = _pull(
        _linear, g[f"{name}.mlp.c_fc"], p["mlp.c_fc.weight"], p["mlp.c_fc.bias"], h2
    )
    rows |= {f"{name}.mlp.c_fc.weight": dW, f"{name}.mlp.c_fc.bias": db}
    dp, dx2 = _pull(_ln, g[f"{name}.ln_2"], gpt.own(p, "ln_2."), x2)
    rows |= {f"{name}.ln_2.{k}": v for k, v in dp.items()}
    return rows, g[name] + dx2  # the skip's gradient and the branch's


def _attn_vjps(p, x, n_head: int, name: str, g: dict) -> tuple[dict, jax.Array]:
    """The Block's first half, x + attn(ln_1(x)), the attention split at c_attn's output (its
    own row): the rows, and the gradient of x, the Block's input."""
    h1 = _ln(gpt.own(p, "ln_1."), x)
    attn = gpt.own(p, "attn.")

    def heads(qkv_tap, W, b):  # qkv -> the heads -> c_proj, as d/d tap is d/d qkv
        return tf.attention_forward(h1, {**attn, "c_proj.weight": W, "c_proj.bias": b}, n_head,
                                    qkv_tap)[0]  # fmt: skip

    tap = jnp.zeros((*h1.shape[:-1], 3 * h1.shape[-1]), h1.dtype)
    dqkv, dW, db = _pull(
        heads, g[f"{name}.attn.c_proj"], tap, attn["c_proj.weight"], attn["c_proj.bias"]
    )
    rows = {f"{name}.attn.c_attn": dqkv}
    rows |= {f"{name}.attn.c_proj.weight": dW, f"{name}.attn.c_proj.bias": db}
    dW, db, rows[f"{name}.ln_1"] = _pull(
        _linear, g[f"{name}.attn.c_attn"], attn["c_attn.weight"], attn["c_attn.bias"], h1
    )
    rows |= {f"{name}.attn.c_attn.weight": dW, f"{name}.attn.c_attn.bias": db}
    dp, dx = _pull(_ln, g[f"{name}.ln_1"], gpt.own(p, "ln_1."), x)
    rows |= {f"{name}.ln_1.{k}": v for k, v in dp.items()}
    return rows, g[f"{name}.attn.c_proj"] + dx  # the skip's gradient and the branch's


def _block_vjps(p, x, n_head: int, name: str, g: dict) -> tuple[dict, jax.Array]:
    x2 = x + tf.attention_forward(_ln(gpt.own(p, "ln_1."), x), gpt.own(p, "attn."), n_head)[0]
    rows, rows[f"{name}.attn.c_proj"] = _mlp_vjps(p, x2, name, g)
    first, dx = _attn_vjps(p, x, n_head, name, g)
    return rows | first, dx


def layer_vjps(cfg: ModelConfig, params, X, Y, manual: dict[str, jax.Array]) -> dict:
    """Every row by one layer's jax.vjp: the cross-entropy's for the logits, then each layer's
    pullback of the backward's own gradient of its output (`manual`)."""
    T = X.shape[1]
    tok = layers.embedding_forward(params["wte.weight"], X)[0]  # (B, T, C)
    pos = params["wpe.weight"][None, :T]  # (1, T, C)
    x, inputs = tok + pos, []
    for i in range(cfg.n_layer):
        inputs.append(x)
        x = gpt.block_forward(gpt.own(params, f"h.{i}."), x, cfg.n_head, f"h.{i}")[0]
    h = _ln(gpt.own(params, "ln_f."), x)
    logits = _linear(params["lm_head.weight"], None, h)
    (dlogits,) = _pull(
        lambda z: tf.cross_entropy_forward(z, Y)[0][0], jnp.ones((), x.dtype), logits
    )
    rows = {"lm_head": dlogits}
    rows["lm_head.weight"], rows["ln_f"] = _pull(
        lambda W, a: _linear(W, None, a), manual["lm_head"], params["lm_head.weight"], h
    )
    dp, rows[f"h.{cfg.n_layer - 1}"] = _pull(_ln, manual["ln_f"], gpt.own(params, "ln_f."), x)
    rows |= {f"ln_f.{k}": v for k, v in dp.items()}
    for i in reversed(range(cfg.n_layer)):
        block, dx = _block_vjps(gpt.own(params, f"h.{i}."), inputs[i], cfg.n_head, f"h.{i}", manual)
        rows |= block | {f"h.{i - 1}" if i else "wte": dx}
    # x = tok_emb + pos_emb: the add fans the gradient out to both
    rows["wpe"] = _pull(lambda t, q: t + q, manual["wte"], tok, pos)[1]
    (rows["wpe.weight"],) = _pull(lambda W: W[None, :T], manual["wpe"], params["wpe.weight"])
    (rows["wte.weight"],) = _pull(
        lambda W: layers.embedding_forward(W, X)[0], manual["wte"], params["wte.weight"]
    )
    return rows


# --- the sources --------------------------------------------------------------------------------


def _torch(cfg: ModelConfig, params, Xb, Yb):
    import torch_ref

    return torch_ref.gpt.autograd(params, Xb, Yb, cfg.n_head)


CHECKED = checked_sources.checked("gpt", gpt, layer_vjps, _torch, hook="backwards")


def run_check(
    cfg: ModelConfig,
    X: np.ndarray,
    Y: np.ndarray,
    batch_size: int = 32,
    seed: int = 0,
    with_torch: bool | None = None,
    backwards: Backwards | None = None,
) -> Report:
    """Build the seeded case from makemore's rows (X, Y) and compare every way on it;
    `backwards`: what sits in the backward's seats (None: the model's own). A first failure
    that looks like a known model-level mistake says so in its message."""
    model = checked_sources.model_sources(CHECKED, cfg, backwards)
    report, sources = checked_sources.run_check(model, cfg, X, Y, batch_size, seed, with_torch)
    first = report.first_failure()
    if first and (hint := model_hint(first["name"], sources)):
        row = next(r for r in report.rows if r["name"] == first["name"])
        row[first["way"]]["message"] = f"{first['message']} (hint: {hint})"
    return report


# --- hints: the model's own classic mistakes, as the check sees them ----------------------------


def _residual_of(row: str, order: list[str]) -> str | None:
    """Where a residual add's input gradient is a row: the gradient of the add's output (the
    skip's share), else None. `h.0.attn.c_proj` is x2's (skip: the Block's output, `h.0`);
    `h.0`'s input (`wte` for h.0) is x's (skip: x2's, `h.0.attn.c_proj`)."""
    if row.endswith(".attn.c_proj"):
        return row.removesuffix(".attn.c_proj")
    blocks = [r for r in order if r.startswith("h.") and r.count(".") == 1]  # h.3, h.2, ...
    inputs = {f"h.{int(b[2:]) - 1}" if b != "h.0" else "wte": b for b in blocks}
    return f"{inputs[row]}.attn.c_proj" if row in inputs else None


def model_hint(row: str, sources: dict) -> str | None:
    """A hint where the first failing row of the manual backward looks like a mistake of its
    own: a residual's two gradients not added, or the position table's gradient not summed over
    the batch (judged on the float64 runs, where there are two)."""
    run = (lambda s: sources[s + F64]) if "jax.grad" + F64 in sources else (lambda s: sources[s])
    manual = run("manual")
    if row not in manual or "wte" not in manual:
        return None
    got, ref = np.asarray(manual[row]), np.asarray(run("jax.grad")[row])
    if (skip := _residual_of(row, list(manual))) is not None and skip in manual:
        skip_grad = np.asarray(manual[skip])
        if close(got, skip_grad) or close(got, ref - skip_grad):
            return (
                f"d{row} is one of its residual's two gradients alone: x + f(x) sends the "
                f"gradient to the skip and through f, and d x is their sum (d{skip} plus f's)"
            )
    dx = np.asarray(manual["wte"])  # (B, T, C): the gradient of tok_emb + pos_emb
    if (
        row in ("wpe", "wpe.weight")
        and (
            got.shape != ref.shape
            or close(got * dx.shape[0], ref)  # the batch's mean
            or close(got[..., : dx.shape[1], :].reshape(dx.shape[1:]), dx[0])  # the first row's
        )
    ):
        return (
            "every row of the batch reads the same position table (pos_emb is (1, T, C)): its "
            "gradient is dx summed over the batch, not one row's or their mean"
        )
    return None
