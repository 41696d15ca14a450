# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # makemore part 6: the Transformer, its backward by hand, in JAX
#
# makemore.py's last model (`--type transformer`) is a small GPT: token and position
# embeddings, a stack of Blocks, each `x + attn(ln_1(x))` then `x + mlp(ln_2(x))`, a final
# LayerNorm and the logits, trained on whole names at once (each position predicts the next
# character). PyTorch's `loss.backward()` does its backward. Here, as in parts 4 and 5, we write
# it by hand: every layer's backward is a function of the layer's cache, and the model's walks
# them in reverse.
#
# This notebook walks through that backward and through exercise 6: the backward of the two
# layers a Transformer adds, LayerNorm and causal self-attention, in `ex6_transformer.py` next
# to this notebook. Fill its `...  # TODO` lines in your editor, save, and re-run the grading
# cell below; from a shell, `jaxninja check --candidate ex6_transformer.py --exercise 6`
# grades the same file, and `--watch` grades it again on every save.

# %%
import inspect

import jax
import jax.numpy as jnp
import numpy as np

import jaxninja as jn
from jaxninja.config import model_config
from jaxninja.data import IGNORE, load_rows
from jaxninja.models import gpt, registry
from jaxninja.models import transformer as tf

jax.config.update("jax_default_matmul_precision", "highest")  # full float32 matmuls everywhere

# %% [markdown]
# ## The data: one row per name
#
# makemore's rows: X is a start token ('.') then the name, padded; Y is the name then a stop
# token ('.'), then -1 where there is nothing to predict: the loss leaves those positions out.
# A row is as long as the longest name + 1: 16 positions for names.txt.

# %%
rows = load_rows(jn.resolve_data_path(None))
vocab = rows.vocab
Xtr, Ytr = rows.data["train"]
print(f"train X {Xtr.shape}  Y {Ytr.shape}")
print("X[0]:", vocab.decode(Xtr[0]))
print("Y[0]:", Ytr[0], "->", vocab.decode(Ytr[0][Ytr[0] != IGNORE]))

# %% [markdown]
# ## The model, and the rows of its check
#
# makemore's sizes: 4 Blocks of 4 heads, `n_embd` 64. The names are makemore's state_dict's
# (`h.0.ln_1.weight`, `h.0.attn.c_attn.weight`, ...); a module's output is named after the
# module: `h.0` is Block 0's output, `h.0.attn.c_attn` the q, k, v that c_attn makes,
# `lm_head` the logits. For a batch of 32 rows:

# %%
cfg = model_config("gpt", "check", vocab_size=vocab.size)
for name, shape in list(gpt.output_shapes(cfg, 32).items())[:11]:
    print(f"{name:16s} {shape}")
print(f"... {len(gpt.grad_order(cfg))} rows in all; {gpt.n_params(cfg):,} parameters")

# %% [markdown]
# ## A Block's backward
#
# The forward keeps every layer's cache; the backward walks them in reverse. A Block's:

# %%
print(inspect.getsource(gpt.block_backward))

# %% [markdown]
# Two things here are not a layer's own backward, and both are where a hand-written backward
# goes wrong.
#
# **The residual.** `x + f(x)` uses x twice: once through the skip, once through f. So the
# gradient of the output goes to both, unchanged, and the gradient of x is the *sum* of the
# two: the skip's (the output's gradient itself) plus f's backward of it. That is the
# `dx + dh` above. `jax.vjp` says the same on a small f:

# %%
x = jnp.array([0.5, -1.0, 2.0])
dout = jnp.array([1.0, 2.0, 3.0])
_, residual_backward = jax.vjp(lambda x: x + jnp.tanh(x), x)
print("vjp of x + tanh(x):         ", residual_backward(dout)[0])
print("dout + (1 - tanh(x)^2) dout:", dout + (1 - jnp.tanh(x) ** 2) * dout)

# %% [markdown]
# **The position table.** Every row of the batch adds the same `pos_emb`, (1, T, C), to its
# token embeddings, (B, T, C): broadcast over the batch. Its gradient is the sum over the batch
# of the gradient of the sum, back in (1, T, C):

# %%
tok, pos = jnp.zeros((3, 2, 2)), jnp.zeros((1, 2, 2))
_, add_backward = jax.vjp(lambda t, p: t + p, tok, pos)
dx = jnp.arange(12.0).reshape(3, 2, 2)
dtok, dpos = add_backward(dx)
print("dpos", dpos.shape, "is dx summed over the batch:", bool((dpos == dx.sum(0)).all()))

# %% [markdown]
# `jaxninja check --model gpt` checks every row of this backward three ways (jax.grad, PyTorch
# autograd on makemore's own classes, each layer's `jax.vjp`); a backward that forgets the
# residual's sum, or takes one row's (or the mean) of the position table's gradient, fails at
# the first row it reaches, with a hint that says which. Here is this one, on a seeded batch
# (makemore's initialisation with LayerNorm's weights and every bias moved off 1 and 0, so a
# gradient forgotten cannot pass), against `jax.grad`, row by row in the backward's order:

# %%
case = jn.make_case(cfg, Xtr, Ytr, batch_size=32, seed=0, init=gpt.check_params)
params = registry.to_device(case.params)
Xb, Yb = jnp.asarray(case.Xb), jnp.asarray(case.Yb)
loss, grads, _ = jax.jit(gpt.loss_and_grads(cfg))(params, Xb, Yb)
reference = jax.jit(gpt.grads_autodiff, static_argnums=0)(cfg, params, Xb, Yb)
print(f"loss {float(loss):.4f}")
for name in gpt.grad_order(cfg):
    got, want = np.asarray(grads[name]), np.asarray(reference[name])
    close, maxdiff = bool(np.allclose(got, want, rtol=1e-4, atol=1e-6)), np.abs(got - want).max()
    print(f"{name:22s} {got.shape!s:14s} approximate: {close!s:5s} maxdiff {maxdiff:.1e}")

# %% [markdown]
# ## LayerNorm's backward
#
# LayerNorm normalises each position over its own C channels (BatchNorm normalised each channel
# over the batch), with the biased variance, divided by C (nn.LayerNorm's, makemore's), then
# scales by a per-channel weight and adds a bias. With $\hat x$ = `xhat`, $r$ = `rstd` (the
# forward's $(\sigma^2+\epsilon)^{-1/2}$), $w$ = `weight`, the means over the last axis:
#
# $$\texttt{dbias} = \textstyle\sum_{B,T} \texttt{dout} \qquad
#   \texttt{dweight} = \textstyle\sum_{B,T} \texttt{dout}\,\hat x \qquad
#   \texttt{dx} = r\,\big(d\hat x - \operatorname{mean}(d\hat x)
#   - \hat x\,\operatorname{mean}(d\hat x\,\hat x)\big),\quad d\hat x = \texttt{dout}\,w$$
#
# The three terms of dx: $\hat x$ directly, through the mean (every value moves it), and through
# the variance (the third). Unlike BatchNorm's gamma, the weight varies along the axis the means
# run over, so it goes in first ($d\hat x$) and cannot be taken out of them; and there is no
# Bessel's n-1: n is C.
#
# ## Causal self-attention's backward
#
# Between the attention's two Linears, for every row and head at once: `scores = q @ k^T /
# sqrt(hs)`, the positions a query may not see (s > t) set to -inf, `att = softmax(scores)`,
# `y = att @ v`. Backwards, given `dy`:
#
# * `y = att @ v` is a matmul: `datt = dy @ v^T`, `dv = att^T @ dy`.
# * the softmax, along its last axis (the keys): `dscores = att * (datt - sum(datt * att))`,
#   the sum over that same axis, kept as (…, T, 1).
# * the mask: where the forward put -inf, att is exactly 0, and so is dscores: no gradient
#   reaches a position the query could not see.
# * the scale, `1/sqrt(hs)`, multiplies dscores on the way back, as it did the scores.
# * `scores = q @ k^T`: `dq = dscores @ k`, `dk = dscores^T @ q`.
#
# The mask's part, shown by `jax.vjp` of the masked softmax at four positions: the gradient of
# every score above the diagonal is 0.

# %%
T = 4
scores = jax.random.normal(jax.random.key(0), (T, T))
mask = tf.causal_mask(T)[0, 0]
_, softmax_backward = jax.vjp(
    lambda s: jax.nn.softmax(jnp.where(mask, s, -jnp.inf), axis=-1), scores
)
(dscores,) = softmax_backward(jax.random.normal(jax.random.key(1), (T, T)))
print(np.round(np.asarray(dscores), 3))

# %% [markdown]
# ## Exercise 6: grade your backward
#
# Your two functions go into every seat of their kind: the 9 LayerNorms (each Block's ln_1 and
# ln_2, and ln_f) and the 4 attentions. The GPT's backward then runs with them, and every row is
# compared with `jax.grad` (and PyTorch, where installed), with the GPT's own backward, and with
# each layer's `jax.vjp` fed the same gradient of its output. Your rows are where your outputs
# appear: a LayerNorm's dweight and dbias, and its dx (for ln_1 and ln_2, summed into the
# residual); the attention's dq, dk and dv side by side, as c_attn's output's gradient
# (`h.0.attn.c_attn`). A blank (`...`) is "not written", and jaxninja's own flows on in its
# place, so you can finish one function first. It grades a batch of 32 rows and one of 5 of
# another seed. `jn.load_module` reads the file afresh each time the cell runs: edit, save,
# re-run.

# %%
ex6, spec = jn.load_module("ex6_transformer.py")
print(jn.grade(ex6, exercise=6, name=spec).format())

# %% [markdown]
# ## What changed from part 5
#
# * **A layer used twice.** The residual stream feeds both a branch and the skip, so its
#   gradient is a sum; the position table is read by every row, so its gradient is one too.
#   Neither is any layer's backward: it is the wiring's.
# * **Statistics per position.** LayerNorm normalises over the channels, not the batch, so each
#   position's backward is its own; the weight, per channel, sits inside the means.
# * **A mask is a zero.** The causal mask sets scores to -inf; the softmax turns them into
#   exact zeros, and the backward's `att * (...)` keeps the gradient there at zero.
# * **Train on it.** `jaxninja train --model gpt` trains makemore's GPT on its hand-written
#   backward (AdamW, makemore's settings).
