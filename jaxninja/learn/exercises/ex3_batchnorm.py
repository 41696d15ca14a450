"""Exercise 3 of makemore part 4, in JAX: the backward pass of BatchNorm in one expression.

Exercise 1 went from `hpreact` back to `hprebn` through bnraw, bnvar_inv, bnvar, bndiff2, bndiff
and bnmeani. The forward, per hidden unit, over the n examples of the batch:

    bnmeani = 1/n * sum_i hprebn_i
    bnvar = 1/(n-1) * sum_i (hprebn_i - bnmeani)**2       # Bessel's correction: n-1
    bnraw_i = (hprebn_i - bnmeani) * (bnvar + eps)**-0.5  # = ... * bnvar_inv
    hpreact_i = bngain * bnraw_i + bnbias

Write dhprebn from dhpreact and the forward's bngain, bnvar_inv and bnraw, in one expression
(the walkthrough notebook derives it; mind where the n-1 goes). Grade it:

    jaxninja check --candidate ex3_batchnorm.py:batchnorm_backward --exercise 3
"""

import jax
import jax.numpy as jnp


def batchnorm_backward(dhpreact, bngain, bnvar_inv, bnraw):
    """dhpreact (n, H), bngain (1, H), bnvar_inv (1, H), bnraw (n, H) -> dhprebn (n, H)."""
    n = dhpreact.shape[0]
    dhprebn = ...  # TODO
    return dhprebn
