"""Exercise 5, on makemore part 5 (the WaveNet), in JAX: the backward pass of the two layers the
lecture adds, FlattenConsecutive and BatchNorm1d on (B, T, C) inputs.

Part 5 builds the network as a stack of layers: Embedding, then three stages of
FlattenConsecutive(2) -> Linear -> BatchNorm1d -> Tanh, then Linear. Each layer has a forward
and a backward; the stack runs the forwards in order and the backwards in reverse, each backward
taking the gradient of its layer's output (`dout`) and giving that of its input (`dx`) and of
its parameters. The other layers' backwards are jaxninja's: write these two. Grade them
together (a function still returning `...`, or a gradient still `...`, is "not written", and
jaxninja's own stands in for it, so you can do one at a time):

    jaxninja check --candidate ex5_wavenet.py --exercise 5

They are graded in every seat of the lecture's stack (block size 8, embeddings of 24, 128 hidden
units): flatten1..3 take (B, 8, 24), (B, 4, 128) and (B, 2, 128); bn1..3 take (B, 4, 128),
(B, 2, 128) and, after the last flatten squeezed its length-1 time axis, (B, 128).
"""

import jax
import jax.numpy as jnp


def flatten_consecutive_backward(dout, n):
    """dout: the gradient of FlattenConsecutive(n)'s output, (B, T // n, C * n), or (B, C * n)
    where the forward squeezed T // n == 1 -> dx, the gradient of its input x, (B, T, C)."""
    # The forward (the lecture's FlattenConsecutive.__call__; PyTorch's .view is .reshape here):
    #   B, T, C = x.shape
    #   x = x.reshape(B, T // n, C * n)  # n consecutive positions side by side
    #   if x.shape[1] == 1:
    #       x = x[:, 0]  # .squeeze(1): (B, C * n)
    #   out = x
    dx = ...  # TODO
    return dx


def batchnorm_backward(dout, bnraw, bnvar_inv, gamma):
    """dout, bnraw: (B, T, C) or (B, C); bnvar_inv: (1, 1, C) or (1, C); gamma: (C,)
    -> (dx, dgamma, dbeta): dx in x's shape, dgamma and dbeta in gamma's, (C,)."""
    # The forward in training mode: the lecture's BatchNorm1d.__call__, with its fix for a
    # (B, T, C) input (the statistics over dim (0, 1), not 0), in exercise 3's names (the
    # lecture's xmean is bnmean, xvar is bnvar, xhat is bnraw):
    #   dim = 0 if x.ndim == 2 else (0, 1)  # every axis but the channels'
    #   bnmean = x.mean(dim, keepdims=True)  # (1, 1, C)
    #   bnvar = x.var(dim, keepdims=True, ddof=1)  # (1, 1, C): Bessel's n-1, as torch.var
    #   bnvar_inv = (bnvar + eps) ** -0.5  # (1, 1, C)
    #   bnraw = (x - bnmean) * bnvar_inv  # (B, T, C)
    #   out = gamma * bnraw + beta  # gamma, beta: (C,)
    # Exercise 3's one expression carries over: mind what the sums run over, and what n counts.
    dgamma = ...  # TODO
    dbeta = ...  # TODO
    dx = ...  # TODO
    return dx, dgamma, dbeta
