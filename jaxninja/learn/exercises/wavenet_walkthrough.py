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
# # Building makemore part 5: the WaveNet, its backward by hand, in JAX
#
# Andrej Karpathy's *makemore part 5* (nn-zero-to-hero, `makemore_part5_cnn1.ipynb`) grows the
# MLP of parts 3 and 4 into a small WaveNet: instead of crushing 8 characters of context into
# one hidden layer at once, it fuses them two by two, in a tree (8 -> 4 -> 2 -> 1). It does so
# by writing the network as a list of layers, PyTorch-style, and adds two: `FlattenConsecutive`
# and a `BatchNorm1d` that works on (B, T, C) inputs. The lecture leaves the backward pass to
# `loss.backward()`. Here, as in part 4, we write it by hand.
#
# jaxninja builds the same network from layers that each come with their own backward
# (`jaxninja.models.layers`). This notebook walks through that stack, and through exercise 5: the
# backward of the two new layers, in `ex5_wavenet.py` next to this notebook. Fill its
# `...  # TODO` lines in your editor, save, and re-run the grading cell below; from a shell,
# `jaxninja check --candidate ex5_wavenet.py --exercise 5` grades the same file.

# %%
import inspect
import time

import jax
import jax.numpy as jnp
import numpy as np

import jaxninja as jn
from jaxninja.config import model_config
from jaxninja.models import layers, registry, wavenet

jax.config.update("jax_default_matmul_precision", "highest")  # full float32 matmuls everywhere

# %% [markdown]
# ## The data: eight characters of context
#
# The same names and the same 80/10/10 split as part 4, with a longer context: each example is
# the 8 characters before the one to predict.

# %%
splits = jn.load_splits(jn.resolve_data_path(None), block_size=8)
vocab = splits.vocab
Xtr, Ytr = splits.data["train"]
for name, (X, Y) in splits.data.items():
    print(f"{name:5s} X {X.shape}  Y {Y.shape}")
for i in range(3):
    print(f"{vocab.decode(Xtr[i])!r} -> {vocab.decode(Ytr[i : i + 1])!r}")

# %% [markdown]
# ## The network as a stack of layers
#
# The lecture's `Sequential` is a list of layer objects, each with a `__call__`. A jaxninja
# `Layer` is a name, the names of its parameters, and two pure functions:
# `forward(params, x) -> (out, cache)`, where the cache is whatever the backward will need,
# and `backward(dout, cache) -> (dparams, dx)`: given the gradient of the loss with respect to
# the layer's output, the gradients of its parameters and of its input. Here is the lecture's
# network at its sizes (embeddings of 24, 128 hidden units), with each layer's output shape
# for a batch of 32:

# %%
cfg = model_config("wavenet", "check", vocab_size=vocab.size)
net = wavenet.stack(cfg)
shapes = wavenet.output_shapes(cfg, 32)
for layer in net:
    params = ", ".join(layer.params) or "-"
    print(f"{layer.name:10s} params: {params:13s} out {shapes[layer.name]}")
print(f"{wavenet.n_params(cfg):,} parameters")

# %% [markdown]
# Each stage is `FlattenConsecutive(2) -> Linear -> BatchNorm1d -> Tanh`: the flatten puts two
# neighbouring positions side by side (T halves, channels double), the linear layer mixes them.
# The last stage's flatten leaves one position, and squeezes that axis away, as the lecture's
# does: (32, 1, 256) becomes (32, 256).
#
# ## Forward keeps the caches, backward walks them in reverse
#
# The whole of running a stack:

# %%
print(inspect.getsource(layers.stack_forward))
print(inspect.getsource(layers.stack_backward))

# %% [markdown]
# `stack_backward` records, for every layer, the gradient arriving at its output (a row named
# after the layer: `bn2` is the gradient of bn2's output) and the gradients of its parameters
# (`bn2.gamma`). The input gradient one layer returns is the output gradient of the layer
# below. So the row `tanh2` is what flatten3's backward returned, and `linear2` is bn2's dx.
#
# One seeded batch (the lecture's initialisation, with gamma, beta and the bias moved off 1 and
# 0, so that a gradient forgotten cannot pass), forward and backward, jitted as one function:

# %%
case = jn.make_case(cfg, Xtr, Ytr, batch_size=32, seed=0, init=wavenet.check_params)
params = registry.to_device(case.params)
Xb, Yb = jnp.asarray(case.Xb), jnp.asarray(case.Yb)
loss, grads, _ = jax.jit(wavenet.loss_and_grads(cfg))(params, Xb, Yb)
print(f"loss {float(loss):.4f}, {len(grads)} gradients")

# %% [markdown]
# And the answer key, `jax.grad` of the same forward (each layer's output tapped with a zero,
# as part 4's `retain_grad`), compared row by row in the order the backward makes them:

# %%
reference = jax.jit(wavenet.grads_autodiff, static_argnums=0)(cfg, params, Xb, Yb)
for name in wavenet.grad_order(cfg):
    got, want = np.asarray(grads[name]), np.asarray(reference[name])
    close, maxdiff = bool(np.allclose(got, want, rtol=1e-4, atol=1e-6)), np.abs(got - want).max()
    print(f"{name:16s} {got.shape!s:14s} approximate: {close!s:5s} maxdiff {maxdiff:.1e}")

# %% [markdown]
# ## FlattenConsecutive's backward: the reshape back
#
# `FlattenConsecutive(n)` is a reshape, (B, T, C) -> (B, T/n, C*n), plus a squeeze when one
# position is left. A reshape moves no number and changes none: element i of the output is
# element i of the input, read in the same (row-major) order. So each gradient goes back to
# where its number came from, and the backward is the reshape back to the input's shape.
# `jax.vjp` shows it on a small input, the gradient made of the numbers 0, 1, 2, ... so you can
# follow where each lands:

# %%
x = jnp.zeros((1, 4, 3))  # B=1, T=4, C=3
out, flat_backward = jax.vjp(lambda x: layers.flatten_consecutive_forward(x, 2)[0], x)
dout = jnp.arange(out.size, dtype=x.dtype).reshape(out.shape)
(dx,) = flat_backward(dout)
print(f"out {out.shape}; dout =\n{dout[0]}\ndx {dx.shape} =\n{dx[0]}")
print("dx is dout.reshape(x.shape):", bool((dx == dout.reshape(x.shape)).all()))

# %% [markdown]
# Positions 0 and 1 went side by side into the first row of `out`; their gradients come back
# split the same way. Anything else (a transpose, `dout.reshape(B, C, T)`) puts the right
# numbers in the wrong places: the grader recognises that and says so. In the last stage the
# forward also squeezed the length-1 time axis, so `dout` arrives as (B, C*n), and dx must still
# be (B, T, C): put the axis back (or reshape straight to the input's shape).
#
# ## BatchNorm1d over (B, T, C): statistics over (0, 1)
#
# The lecture's BatchNorm1d first took its mean and variance over `dim=0`. On a (B, T, C)
# input that gives statistics of shape (1, T, C): one mean per position and channel, each over
# B values, where the layer means to normalise each channel over everything it sees. The
# lecture's fix: `dim=(0, 1)`, statistics of shape (1, 1, C), each over n = B*T values.
# jaxninja's BatchNorm takes them over every axis but the last (`layers.batch_axes`).

# %%
h = jax.random.normal(jax.random.key(0), (32, 4, 128))
print("over axis 0:     ", h.mean(0, keepdims=True).shape, "- one mean per position and channel")
print("over axes (0, 1):", h.mean((0, 1), keepdims=True).shape, "- one per channel, of n = 32*4")

# %% [markdown]
# The backward is exercise 3's expression, unchanged but for what its sums run over and what
# n counts. With $\hat x$ = `bnraw`, $s$ = `bnvar_inv` (the forward's $(\sigma^2+\epsilon)^{-1/2}$),
# $\gamma$ = `gamma` and the sums over every axis but the channels' (n terms each):
#
# $$\texttt{dbeta} = \textstyle\sum \texttt{dout} \qquad
#   \texttt{dgamma} = \textstyle\sum \texttt{dout}\,\hat x \qquad
#   \texttt{dx} = \frac{\gamma s}{n}\Big(n\,\texttt{dout} - \texttt{dbeta}
#   - \tfrac{n}{n-1}\,\hat x\,\texttt{dgamma}\Big)$$
#
# `dgamma` and `dbeta` have gamma's shape, (C,); inside `dx` they broadcast back over (B, T).
# Exercise 3's code copied as it is (sums over axis 0, n the batch size) is right for the last
# BatchNorm, whose input is (B, C), and wrong for the two before it: the grader names the first
# place it goes wrong and why.
#
# ## Exercise 5: grade your backward
#
# Your two functions go into every seat of their kind: the three FlattenConsecutive layers and
# the three BatchNorms. The stack's backward then runs with them, and every row is compared with
# `jax.grad` (and PyTorch, where installed), with the stack's own backward, and with each
# layer's `jax.vjp` fed the same gradient of its output. Your rows are the 12 gradients your
# functions return; a blank (`...`) is "not written", and jaxninja's own flows on in its place,
# so you can finish one function first. It grades the batch of 32 and a batch of 5 of another
# seed. `jn.load_module` reads the file afresh each time the cell runs: edit, save, re-run.

# %%
ex5, spec = jn.load_module("ex5_wavenet.py")
print(jn.grade(ex5, exercise=5, name=spec).format())

# %% [markdown]
# ## Train the WaveNet on your backward
#
# Once both functions are complete and right, the cell below trains on them: your functions in
# the stack's seats (`wavenet.with_backwards`), no autodiff anywhere. Until then it says why not
# and trains on jaxninja's own layers, so it runs either way. It is the lecture's network and
# initialisation with plain SGD at its rate of 0.1, for a few hundred steps only, to stay quick;
# the BatchNorms keep running statistics (momentum 0.1, as the lecture's), which the validation
# loss uses. The lecture's 200,000 steps are `jaxninja train --model wavenet`.

# %%
steps = 300
try:
    ex5, spec = jn.load_module("ex5_wavenet.py")
    graded = jn.grade(ex5, exercise=5, name=spec)
    yours_ready, why = graded.ok and len(graded.written) == graded.of, graded.verdict()
except jn.UsageError as e:  # it does not import, or it raises: the grader's one line says where
    yours_ready, why = False, str(e)


def your_seats(ex5):
    """Your two functions, adapted to a Layer's backward: (dout, cache) -> (dparams, dx)."""

    def flatten(dout, shape):
        return {}, ex5.flatten_consecutive_backward(dout, 2)

    def bn(dout, cache):
        dx, dgamma, dbeta = ex5.batchnorm_backward(dout, cache.bnraw, cache.bnvar_inv, cache.bngain)
        return {"gamma": dgamma, "beta": dbeta}, dx

    return {"flatten": flatten, "bn": bn}


train_cfg = model_config("wavenet", "train", vocab_size=vocab.size)
if yours_ready:
    print(f"ex5_wavenet.py is complete and right ({why}): training on your backward")
    train_net = wavenet.with_backwards(wavenet.stack(train_cfg), **your_seats(ex5))
else:
    print(f"ex5_wavenet.py is not complete and right yet ({why}): training on jaxninja's layers")
    train_net = wavenet.stack(train_cfg)
loss_and_grads = wavenet.loss_and_grads(train_cfg, net=train_net)
p = registry.to_device(wavenet.init_params(train_cfg, seed=42))
running = registry.zero_stats(train_cfg)
key, Xtr_d, Ytr_d = jax.random.key(42), jnp.asarray(Xtr), jnp.asarray(Ytr)


@jax.jit
def sgd_step(p, running, step):
    ix = jax.random.randint(jax.random.fold_in(key, step), (32,), 0, len(Xtr))
    loss, grads, stats = loss_and_grads(p, Xtr_d[ix], Ytr_d[ix])
    running = jax.tree.map(lambda r, s: 0.9 * r + 0.1 * s, running, stats)
    return {k: p[k] - 0.1 * grads[k] for k in p}, running, loss


losses, t0 = [], time.perf_counter()
for step in range(steps):
    p, running, loss = sgd_step(p, running, step)
    losses.append(float(loss))
print(f"{steps} steps in {time.perf_counter() - t0:.1f} s, last loss {np.mean(losses[-50:]):.4f}")
print(f"val {registry.split_loss(train_cfg, p, running, *splits.data['val']):.4f}")

# %% [markdown]
# ## What changed from part 4
#
# * **Layers, not one function.** Part 4's backward was one long function mirroring one
#   forward. Here each layer owns its pair, and a stack composes them: forward in order, keeping
#   the caches; backward in reverse, each layer handing the next its `dx`. A new kind of layer
#   needs only its own two functions.
# * **Shapes carry more.** With a time axis, "the batch" is (B, T): a weight's gradient sums
#   over both (`layers.linear_backward` flattens them into rows), and so do BatchNorm's
#   statistics and their backward. `keepdims` and the squeezed last stage decide the shapes;
#   the grader checks every shape before any number.
# * **A reshape is free, its backward too.** No number moves in memory terms, so the backward
#   is the inverse reshape; in JAX both are metadata until XLA lays the arrays out.
# * **Purity again.** A layer's cache is a value returned, not an attribute set on an object,
#   so the same stack can run under `jit`, on a sharded batch (`jaxninja train --devices`), or
#   with other code in a layer's seat, as the grader puts yours.
