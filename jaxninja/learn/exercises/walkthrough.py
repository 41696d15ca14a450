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
# # Becoming a backprop ninja, in JAX
#
# A walk through Andrej Karpathy's *makemore part 4* (nn-zero-to-hero,
# `makemore_part4_backprop.ipynb`) with JAX in place of PyTorch. The network is the lecture's:
# a character-level MLP over names, `C -> Linear(W1, b1) -> BatchNorm -> tanh -> Linear(W2, b2)
# -> cross-entropy`. We throw away `loss.backward()` and write the backward pass by hand, at
# three grains: every atomic operation (exercise 1), cross-entropy in one expression
# (exercise 2), BatchNorm in one expression (exercise 3); then we train on our own gradients
# (exercise 4).
#
# This notebook sits next to three files, `ex1_backward.py`, `ex2_cross_entropy.py` and
# `ex3_batchnorm.py` (`jaxninja exercises DIR` wrote them). Fill their `...  # TODO` lines in
# your editor, save, and re-run a grading cell below: it reads the file as it is on disk now, as
# the shell does: `jaxninja check --candidate ex1_backward.py:backward --exercise 1`.

# %%
import time

import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np

import jaxninja as jn

jax.config.update("jax_default_matmul_precision", "highest")  # full float32 matmuls everywhere

# %% [markdown]
# ## The data
#
# `names.txt`, 32,033 names, split as the lecture splits it: the words shuffled with
# `random.seed(42)`, then 80% / 10% / 10%. Each example is three characters of context and the
# character that follows (`.` pads the start and marks the end).

# %%
splits = jn.load_splits(jn.resolve_data_path(None), block_size=3)
vocab = splits.vocab
Xtr, Ytr = splits.data["train"]
print(f"vocabulary: {vocab.size} characters: {vocab.decode(range(vocab.size))!r}")
for name, (X, Y) in splits.data.items():
    print(f"{name:5s} X {X.shape}  Y {Y.shape}")
print(
    "the first examples:", [(vocab.decode(Xtr[i]), vocab.decode(Ytr[i : i + 1])) for i in range(4)]
)

# %% [markdown]
# ## Parameters, and one batch
#
# The lecture's sizes for the gradient checks: embeddings of 10, 64 hidden units, a batch of 32.
# Its initialisation is kept, with one change: everything is drawn from seeded generators. The
# lecture draws `bngain` and `bnbias` from PyTorch's unseeded global generator, so its printed
# figures (an initial loss of 3.3377, for one) cannot be reproduced bit for bit; this seeded case
# (seed 0) starts at 3.3186 instead, and the same case feeds PyTorch in jaxninja's own checks.
# Like the lecture, the biases and BatchNorm parameters are not zero: a gradient that is wrongly
# zero must not pass for a right one.

# %%
cfg = jn.ModelConfig(vocab_size=vocab.size, n_embd=10, n_hidden=64)
case = jn.make_case(cfg, Xtr, Ytr, batch_size=32, seed=0)
params = jn.to_device(case.params)
Xb, Yb = jnp.asarray(case.Xb), jnp.asarray(case.Yb)
n = Xb.shape[0]
print({k: v.shape for k, v in params.items()})

# %% [markdown]
# ## The forward pass, chunked
#
# `jn.forward_chunked` is the lecture's forward broken into its atomic operations, every
# intermediate kept under the lecture's name. Read it: exercise 1 walks it backwards.

# %%
import inspect

print(inspect.getsource(jn.forward_chunked).split('"""')[2])  # the body, without its docstring
loss, v = jn.forward_chunked(params, Xb, Yb)
print("loss", float(loss))

# %% [markdown]
# ## `retain_grad`, the JAX way: zero-valued taps
#
# The lecture compares each of its gradients with PyTorch's, which it keeps on every
# intermediate with `retain_grad()`. JAX has no `.grad` fields: gradients are what a function
# returns, and only with respect to its inputs. So `forward_chunked` takes `taps`, a zero array
# per intermediate, and adds each to its intermediate as it is made. The loss does not change
# (the taps are zero), and the gradient with respect to a tap is exactly the gradient with
# respect to that intermediate. `jn.grads_autodiff` does this with `jax.grad`: it is the answer
# key. `cmp` is the lecture's comparison of one gradient with the key: bit for bit, within
# float32 rounding, and the largest difference. A gradient of the wrong shape is reported as
# such and not compared (the comparison would broadcast, or fail).

# %%
reference = jn.grads_autodiff(params, Xb, Yb)
print(f"{len(reference)} gradients: dlogits {reference['logits'].shape}, dC {reference['C'].shape}")


def cmp(name, dt):
    """The lecture's cmp: exact, approximately equal, and the largest difference."""
    dt, t = np.asarray(dt), np.asarray(reference[name])  # compared on the host, in numpy
    if dt.shape != t.shape:
        print(f"{name:15s} | shape {dt.shape}, but {name} is {t.shape}")
        return
    exact, close = bool((dt == t).all()), bool(np.allclose(dt, t, rtol=1e-5, atol=1e-7))
    maxdiff = float(np.abs(dt - t).max())
    print(f"{name:15s} | exact: {exact!s:5s} | approximate: {close!s:5s} | maxdiff: {maxdiff:.2e}")


# %% [markdown]
# ## Exercise 1: backprop through the atomic graph
#
# Walk the forward backwards, one line per intermediate, in the order of the lecture's `cmp`
# calls: `dlogprobs`, `dprobs`, ..., `dC`. Each gradient has its tensor's shape. The chain rule
# does the rest, with three places where it is easy to go wrong:
#
# **The max.** `logit_maxes = logits.max(1, keepdims=True)` is subtracted only for numerical
# safety: softmax does not change when a constant is subtracted from a row, so `dlogit_maxes` is
# zero in exact arithmetic (you will see rounding noise, around 1e-9). It still has a backward:
# the max picks one element per row, so its gradient goes back to that element alone, the first
# argmax (`jax.nn.one_hot(logits.argmax(1), V)` marks it).
#
# **The second use of `counts`.** `probs = counts * counts_sum_inv`, and `counts_sum` is itself
# made from `counts`. A tensor used twice gets the sum of both gradients: first
# `dcounts = counts_sum_inv * dprobs`, and then, once `dcounts_sum` is known, every count gets
# `dcounts_sum` added (the sum spreads its gradient back to each of its terms). Forgetting the
# second part is the lecture's classic mistake; the grader names `counts` then.
#
# **`dC` by scatter-add.** `emb = C[Xb]` reads a row of `C` for every character of every
# context. A character read twice (`...` starts every word) gets both gradients. In JAX arrays
# are immutable, and `.at[...]` is how you write into a copy. The difference between `.set` and
# `.add` is the whole point here:

# %%
demo = jnp.zeros(3).at[jnp.array([1, 1, 2])].set(jnp.array([10.0, 20.0, 30.0]))
demo_add = jnp.zeros(3).at[jnp.array([1, 1, 2])].add(jnp.array([10.0, 20.0, 30.0]))
print(".set:", demo, "(one of the repeated writes wins)")
print(".add:", demo_add, "(both arrive, as they must for dC)")

# %% [markdown]
# ### A sum is a broadcast backwards, and a broadcast is a sum
#
# Two operations of the forward trade places in the backward. A **sum** collapses an axis:
# every term moves the total one for one, so the total's gradient goes back to every term
# unchanged, copied along the axis that was summed away. A **broadcast** copies a tensor along
# an axis: the copy is used once per position, so its gradient is the sum of the gradients of
# every position, over that axis. `jax.vjp` runs a function's backward for a gradient we choose;
# here it shows both:

# %%
x = jnp.array([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])  # (2, 3)
g = jnp.array([[1.0, 2.0, 3.0], [10.0, 20.0, 30.0]])  # a gradient arriving at a (2, 3) result

total, sum_backward = jax.vjp(lambda x: x.sum(1, keepdims=True), x)  # (2, 3) -> (2, 1)
(dx,) = sum_backward(jnp.array([[1.0], [10.0]]))  # a gradient for each row's total
print("a sum, x (2, 3) -> total (2, 1), given dtotal [[1], [10]]:")
print(f"  dx = {dx.tolist()}: each row's gradient, copied to every term")

shifted, sub_backward = jax.vjp(lambda x, m: x - m, x, total)  # m (2, 1) broadcast over 3 columns
dx, dm = sub_backward(g)
print(f"a broadcast, x (2, 3) - m (2, 1), given g = {g.tolist()}:")
print(f"  dm = {dm.tolist()}: -g summed over the columns, -g.sum(1, keepdims=True)")
print(f"  dx = {dx.tolist()}: g itself")

# %% [markdown]
# The forward has both, more than once. `counts_sum = counts.sum(1, keepdims=True)` is a sum
# over each row, so in the backward `dcounts_sum` (n, 1) is broadcast back to every count of its
# row: `dcounts += dcounts_sum`, the second use of `counts` from above. `norm_logits = logits -
# logit_maxes` broadcasts the (n, 1) maxima over the V columns, so their gradient sums the
# columns back, with the minus sign: `dlogit_maxes = -dnorm_logits.sum(1, keepdims=True)`. The
# batch mean `bnmeani` is a sum over the rows (its backward spreads back over the rows, with
# the 1/n), `bndiff = hprebn - bnmeani` broadcasts it back (its backward sums over the rows),
# and `b2`, added to every row of `logits`, gets `dlogits` summed over the rows. `keepdims=True`
# keeps the summed axis at size 1, so the broadcast back lines up with the axis it came from.
#
# ### A matmul's backward, found by its shapes
#
# `logits = h @ W2 + b2`. Writing out one element of the product and differentiating it works,
# but the shapes alone already pin the answer down. A gradient has the shape of its tensor, and
# the only things to build it from are `dlogits` and the other factor:

# %%
h, W2, b2 = v["h"], params["W2"], params["b2"]
dlogits = reference["logits"]  # the answer key's, for now: yours comes from the lines above dh
print(f"h {h.shape} @ W2 {W2.shape} + b2 {b2.shape} = logits {v['logits'].shape}")
print(f"dlogits {dlogits.shape}, so")
print(f"  dh  must be {h.shape}:  dlogits {dlogits.shape} @ W2.T {W2.T.shape}")
print(f"  dW2 must be {W2.shape}:  h.T {h.T.shape} @ dlogits {dlogits.shape}")
print(f"  db2 must be {b2.shape}:      dlogits.sum(0), b2 being broadcast over the rows")
cmp("h", dlogits @ W2.T)
cmp("W2", h.T @ dlogits)
cmp("b2", dlogits.sum(0))

# %% [markdown]
# A (32, 64) made from a (32, 27) and a (64, 27) has only one way: `dlogits @ W2.T`. A
# (64, 27) made from `h` (32, 64) and `dlogits` (32, 27) has only `h.T @ dlogits`, whose
# contraction runs over the batch, as a weight's gradient must (every example adds to it). The
# same reading gives the first layer: `dembcat`, `dW1`, `db1` from `hprebn = embcat @ W1 + b1`.
#
# Now grade your `ex1_backward.py` as it is on disk. Blanks are "not written"; the first wrong
# tensor is named, shape errors are called shape errors, and known mistakes get a hint. It runs
# two cases (the batch of 32 and a batch of 5 of another seed), so a 32 written in by hand fails.
# `jn.load_function` imports the file anew each time the cell runs, so after an edit (saved),
# re-running it grades the edit.

# %%
backward, spec = jn.load_function("ex1_backward.py:backward")
print(jn.grade(backward, exercise=1, name=spec).format())

# %% [markdown]
# The lecture checks each line as it writes it, with a `cmp` per gradient. Here is every
# gradient your file writes, through `cmp`, on the notebook's batch (run it again as you go).
# It calls your function as plain Python, without `jit`, so a `print` in it shows numbers here
# (under the grader's `jit` it shows a tracer: use `jax.debug.print` there).

# %%
backward, _ = jn.load_function("ex1_backward.py:backward")
yours = backward(params, v, Xb, Yb)
for name in jn.GRAD_ORDER:
    if name in yours:
        cmp(name, yours[name])
if not yours:
    print("nothing written yet: fill dlogprobs first, then dprobs, ...")

# %% [markdown]
# ## Exercise 2: cross-entropy in one expression
#
# Exercise 1 took eight lines from `logprobs` back to `logits`. On paper it is one. For one
# example with logits $l$, target $y$ and $p = \mathrm{softmax}(l)$:
#
# $$\mathrm{loss} = -\log p_y = -l_y + \log \textstyle\sum_j e^{l_j}$$
#
# Differentiate with respect to $l_i$. The first term gives $-1$ when $i = y$ and 0 otherwise;
# the second gives $e^{l_i} / \sum_j e^{l_j} = p_i$. So
#
# $$\frac{\partial\, \mathrm{loss}}{\partial l_i} = p_i - [i = y]$$
#
# the softmax with one subtracted at the target. The batch's loss is the mean over $n$
# examples, so each row is divided by $n$:
#
# $$\texttt{dlogits} = (\mathrm{softmax}(\texttt{logits}) - \mathrm{onehot}(Y_b)) / n$$
#
# Write it in `ex2_cross_entropy.py` (use `n`, not 32), save, and grade it:

# %%
cross_entropy_backward, spec = jn.load_function("ex2_cross_entropy.py:cross_entropy_backward")
print(jn.grade(cross_entropy_backward, exercise=2, name=spec).format())

# %% [markdown]
# ### What dlogits looks like
#
# The lecture's picture: `dlogits` of the batch, one row per example. Each row sums to zero.
# The target's cell is pulled down by $1 - p_y$; every other cell is pushed up by its
# probability. Training is this tug of war: a wrong confident guess gets pushed hardest.

# %%
# times n: one example's gradient
dlogits = jn.models.mlp_backward.dlogits_fused(v["logits"], Yb) * n
print("row sums (zero up to rounding):", float(jnp.abs(dlogits.sum(1)).max()))
plt.figure(figsize=(6, 6))
plt.imshow(np.asarray(dlogits), cmap="gray")
plt.xlabel("character")
plt.ylabel("example")
plt.title("dlogits (x n): black at the targets")
# %% [markdown]
# ## Exercise 3: BatchNorm in one expression
#
# Per hidden unit, over the batch ($x_i$ is `hprebn`, $\hat x_i$ is `bnraw`, $y_i$ is
# `hpreact`, $\gamma$ is `bngain`):
#
# $$\mu = \tfrac1n \textstyle\sum_i x_i \qquad
#   \sigma^2 = \tfrac{1}{n-1} \textstyle\sum_i (x_i - \mu)^2 \qquad
#   \hat x_i = (x_i - \mu)(\sigma^2 + \epsilon)^{-1/2} \qquad y_i = \gamma \hat x_i + \beta$$
#
# The variance divides by $n - 1$ (Bessel's correction), as the lecture's does. Given
# $\partial L / \partial y_i$ (`dhpreact`), go back in three steps.
#
# 1. Through the scale: $\partial L/\partial \hat x_i = \gamma\, \partial L/\partial y_i$.
# 2. $x_i$ reaches $\hat x$ three ways: directly, through $\mu$ and through $\sigma^2$. Write
#    $s = (\sigma^2+\epsilon)^{-1/2}$ (`bnvar_inv`). The variance's gradient is
#    $\partial L/\partial \sigma^2 = -\tfrac12 s^3 \sum_j \partial L/\partial \hat x_j\,(x_j-\mu)$,
#    and $\partial \sigma^2/\partial x_i = \tfrac{2}{n-1}(x_i - \mu)$. The $n-1$ enters here.
#    The mean's gradient is $\partial L/\partial \mu = -s \sum_j \partial L/\partial \hat x_j$
#    (its path through $\sigma^2$ is zero, since $\sum_j (x_j - \mu) = 0$), and
#    $\partial \mu / \partial x_i = 1/n$.
# 3. Add the three paths and write $x_j - \mu = \hat x_j / s$:
#
# $$\frac{\partial L}{\partial x_i} = s\,\frac{\partial L}{\partial \hat x_i}
#   - \frac{s}{n-1}\,\hat x_i \sum_j \frac{\partial L}{\partial \hat x_j}\hat x_j
#   - \frac{s}{n} \sum_j \frac{\partial L}{\partial \hat x_j}$$
#
# With $\partial L/\partial \hat x = \gamma\, \partial L/\partial y$ and $\frac{s}{n}$ taken out:
#
# $$\texttt{dhprebn} = \frac{\gamma s}{n}\Big(n\,\texttt{dhpreact} - \textstyle\sum_j
#   \texttt{dhpreact}_j - \tfrac{n}{n-1}\,\texttt{bnraw} \sum_j \texttt{dhpreact}_j\,
#   \texttt{bnraw}_j\Big)$$
#
# The $\tfrac{n}{n-1}$ is Bessel's correction seen from the gradient. With the biased variance
# (divide by $n$) it would be 1. Mixing the two is exactly the mistake the grader's hint names.
# Sums run over the batch (axis 0) and keep their axis, so they broadcast back over the rows.

# %%
batchnorm_backward, spec = jn.load_function("ex3_batchnorm.py:batchnorm_backward")
print(jn.grade(batchnorm_backward, exercise=3, name=spec).format())

# %% [markdown]
# ## Exercise 4: train on your own gradients
#
# The lecture's last exercise: put it together and train with no autodiff at all. Below is the
# whole loop, jitted, with plain SGD. Its gradients are yours when your `ex1_backward.py` is
# complete and right: the cell grades it first, and if it passes and writes all seven parameter
# gradients, each step runs `jn.forward_chunked` and your `backward(params, v, Xb, Yb)` on the
# batch. Until then it says why not, and trains on jaxninja's own fused backward of exercises 2
# and 3 (`jn.backward_fused`, fed by the compact forward `jn.forward`), so the loop runs either
# way. Re-run the cell after finishing exercise 1 to train on your code.
#
# It runs 2000 steps here to stay quick; the lecture's run is 200,000 (lr 0.1, then 0.01 from
# step 100,000), which `jaxninja train` does in seconds, and
# `jaxninja train --backward ex1_backward.py:backward` does on your exercise-1 function (graded
# first, refused if wrong).

# %%
from jaxninja.models.mlp import calibrate_bn, split_loss

steps = 2000
try:
    your_backward, spec = jn.load_function("ex1_backward.py:backward")
    graded = jn.grade(your_backward, exercise=1, name=spec)
    missing = [k for k in jn.PARAMS if k not in graded.written]
    yours_ready = graded.ok and not missing
    why = f"{len(graded.written)} of {graded.of} written" if missing else graded.verdict()
except jn.UsageError as e:  # it does not import, or it raises: the grader's one line says where
    yours_ready, why = False, str(e)
if yours_ready:
    print(f"ex1_backward.py is complete and right ({why}): training on your backward")

    def loss_and_grads(p, Xb, Yb):
        loss, v = jn.forward_chunked(p, Xb, Yb)
        grads = your_backward(p, v, Xb, Yb)  # exercise 1, yours: no jax.grad
        return loss, {k: grads[k] for k in jn.PARAMS}

else:
    print(
        f"ex1_backward.py is not complete and right yet ({why}): "
        "training on jaxninja's fused backward instead"
    )

    def loss_and_grads(p, Xb, Yb):
        loss, cache = jn.forward(p, Xb, Yb)
        return loss, jn.backward_fused(cache)  # exercises 2 + 3, jaxninja's: no jax.grad


train_cfg = jn.ModelConfig(vocab_size=vocab.size, n_hidden=200)
p = jn.to_device(jn.init_params(train_cfg, seed=2147483647))
key = jax.random.key(2147483647)
Xtr_d, Ytr_d = jnp.asarray(Xtr), jnp.asarray(Ytr)


@jax.jit
def sgd_step(p, step, lr):
    ix = jax.random.randint(jax.random.fold_in(key, step), (32,), 0, len(Xtr))
    loss, grads = loss_and_grads(p, Xtr_d[ix], Ytr_d[ix])
    return {k: p[k] - lr * grads[k] for k in p}, loss


losses, t0 = [], time.perf_counter()
for step in range(steps):
    lr = 0.1 if step < 100_000 else 0.01
    p, loss = sgd_step(p, step, lr)
    losses.append(float(loss))
print(f"{steps} steps in {time.perf_counter() - t0:.1f} s, last loss {np.mean(losses[-100:]):.4f}")

bn = calibrate_bn(p, Xtr_d)  # BatchNorm's mean and variance over the whole train split
for name in ("train", "val"):
    print(name, f"{split_loss(p, bn, *splits.data[name]):.4f}")

# %%
from jaxninja.training.sample import sample_names

print(", ".join(sample_names(train_cfg, p, {"bn": bn}, vocab, n=10, seed=0)))

# %% [markdown]
# ## What JAX changes
#
# * **Purity.** No tensor carries a `.grad`, and nothing is updated in place. A backward is a
#   function from the forward's values to gradients, and training is a function from parameters
#   to new parameters. That is why `retain_grad` became zero-valued taps, and why your exercise
#   functions can be graded as plain functions.
# * **`.at[]`.** Arrays are immutable: `x.at[i].set(y)` and `x.at[i].add(y)` return new arrays.
#   `.set` with repeated indices keeps one write; `.add` keeps them all, which is what a gradient
#   needs (`dC`).
# * **keepdims.** A sum over the batch that loses its axis gives `(H,)` where `(1, H)` belongs.
#   NumPy-style broadcasting then often computes the right numbers anyway, and the bug only shows
#   in a shape. `jax.config.update("jax_numpy_rank_promotion", "raise")` turns such broadcasts
#   into errors (jaxninja's tests run with it), and the grader checks every shape first.
# * **jit and its cache.** `jax.jit` traces a function once per input shape and dtype and reuses
#   the compiled program afterwards. Python state read during tracing is baked in, so editing a
#   global, or swapping a module's function, after the first call changes nothing. The grader
#   wraps your function in a fresh `jit` on every call.
# * **Imports are cached too.** `from ex1_backward import backward` imports the file once per
#   kernel: after an edit, running that line again hands back the old function (only
#   `importlib.reload`, or a restarted kernel, reads the file again). So the cells here load
#   your functions with `jn.load_function("ex1_backward.py:backward")`, which imports the file
#   anew on every call, as `jaxninja check --candidate` does: each re-run grades the code on
#   disk, once you have saved it.
