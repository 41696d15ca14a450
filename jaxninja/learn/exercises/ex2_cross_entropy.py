"""Exercise 2 of makemore part 4, in JAX: the backward pass of cross-entropy in one expression.

Exercise 1 took eight lines from `logprobs` back to `logits`. The loss is, for n examples,

    loss = -1/n * sum_i log softmax(logits_i)[Yb_i]

so its gradient with respect to `logits` can be written at once: derive it on paper first (the
walkthrough notebook does it step by step), then write it without a loop. Grade it:

    jaxninja check --candidate ex2_cross_entropy.py:cross_entropy_backward --exercise 2

It is graded at the notebook's batch of 32 and at a batch of 5: use n, not 32.
"""

import jax
import jax.numpy as jnp


def cross_entropy_backward(logits, Yb):
    """logits (n, V) and the targets Yb (n,) -> dlogits (n, V), the gradient of the mean loss."""
    n, V = logits.shape
    dlogits = ...  # TODO
    return dlogits
