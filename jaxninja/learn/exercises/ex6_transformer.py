"""Exercise 6, on makemore.py's Transformer (part 6), in JAX: the backward pass of the two layers
a Transformer adds, LayerNorm and causal self-attention.

makemore's GPT is token and position embeddings, then Blocks of x + attn(ln_1(x)) and
x + mlp(ln_2(x)), then a last LayerNorm, ln_f, and the logits. Each layer has a forward that
keeps what its backward needs, and a backward that takes the gradient of its output (`dout`)
and gives those of its inputs and parameters. The other layers' backwards (the Linears, GELU,
the embeddings, each residual's sum) are jaxninja's: write these two. Grade them together (a
function still returning `...`, or a gradient still `...`, is "not written", and jaxninja's
own stands in for it, so you can do one at a time):

    jaxninja check --candidate ex6_transformer.py --exercise 6

They are graded in every seat of makemore's GPT (4 Blocks of 4 heads, n_embd 64, rows of 16
positions): layernorm_backward in each Block's ln_1 and ln_2 and in ln_f, attention_backward in
each Block's attention. `--watch` re-grades on every save.
"""

import math

import jax
import jax.numpy as jnp


def layernorm_backward(dout, xhat, rstd, weight):
    """dout, xhat: (B, T, C); rstd: (B, T, 1); weight: (C,) -> (dx, dweight, dbias): dx in x's
    shape, (B, T, C); dweight and dbias in weight's, (C,)."""
    # The forward (nn.LayerNorm over the last axis, its C channels; llm.c's names):
    #   mean = x.mean(-1, keepdims=True)  # (B, T, 1)
    #   var = ((x - mean) ** 2).mean(-1, keepdims=True)  # (B, T, 1): biased, / C, as torch's
    #   rstd = (var + eps) ** -0.5  # (B, T, 1)
    #   xhat = (x - mean) * rstd  # (B, T, C)
    #   out = xhat * weight + bias  # weight, bias: (C,)
    # Each position is normalised over its own C values, so dx's means run over the last axis;
    # weight and bias are shared by every position of every row, so their sums run over (B, T).
    dweight = ...  # TODO
    dbias = ...  # TODO
    dx = ...  # TODO
    return dx, dweight, dbias


def attention_backward(dy, q, k, v, att):
    """dy: the gradient of the heads' output y = att @ v, (B, nh, T, hs); q, k, v: (B, nh, T, hs);
    att: (B, nh, T, T) -> (dq, dk, dv), each (B, nh, T, hs)."""
    # The forward between the attention's two Linears (makemore's CausalSelfAttention: c_attn
    # makes q, k, v, each split into nh heads of hs = C / nh; c_proj mixes the heads' y), for
    # every row and head at once:
    #   B, nh, T, hs = q.shape
    #   scores = (q @ k.swapaxes(-1, -2)) * (1.0 / math.sqrt(hs))  # (B, nh, T, T)
    #   mask = jnp.tril(jnp.ones((T, T), bool))  # position t sees the positions s <= t
    #   scores = jnp.where(mask, scores, -jnp.inf)  # makemore's masked_fill(..., float("-inf"))
    #   att = jax.nn.softmax(scores, axis=-1)  # (B, nh, T, T): each row sums to 1; 0 if masked
    #   y = att @ v  # (B, nh, T, hs)
    datt = ...  # TODO
    dv = ...  # TODO
    dscores = ...  # TODO
    dq = ...  # TODO
    dk = ...  # TODO
    return dq, dk, dv
