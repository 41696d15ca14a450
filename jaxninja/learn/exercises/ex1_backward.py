"""Exercise 1 of makemore part 4 ("becoming a backprop ninja"), in JAX: backpropagate through
the forward pass one atomic operation at a time.

Replace each `...  # TODO` below with the gradient of the loss with respect to that tensor, in
order, from the forward's values (unpacked under the notebook's names) and the gradients above
it; use as many lines for one as you like. Grade what you have so far (blanks are "not written";
the first wrong tensor is named, with a hint where the mistake is a known one):

    jaxninja check --candidate ex1_backward.py:backward --exercise 1

Three things JAX does differently from the notebook's PyTorch:
  - arrays are immutable: for `dlogprobs[range(n), Yb] = ...` write
    `jnp.zeros_like(logprobs).at[jnp.arange(n), Yb].set(...)`, and for dC's loop `.at[Xb].add`;
  - `keepdims=True` (PyTorch's `keepdim`) on every sum whose tensor keeps its axis: `bnmeani`
    is (1, H), and a (H,) gradient for it is a shape error, however right its numbers;
  - `x.reshape(...)` for `.view(...)`, `jnp.tanh` for `torch.tanh`, `x.T` as in PyTorch.
"""

import jax
import jax.numpy as jnp


def backward(params, v, Xb, Yb, eps=1e-5):
    """params: C, W1, b1, W2, b2, bngain, bnbias; v: the forward's 19 intermediates; Xb (n, 3)
    and Yb (n,) the batch. Returns the gradients written so far, keyed by tensor name."""
    C, W1, b1, W2, b2 = params["C"], params["W1"], params["b1"], params["W2"], params["b2"]
    bngain, bnbias = params["bngain"], params["bnbias"]
    emb, embcat, hprebn, bnmeani, bndiff, bndiff2, bnvar, bnvar_inv, bnraw, hpreact = (
        v[k]
        for k in ("emb", "embcat", "hprebn", "bnmeani", "bndiff", "bndiff2", "bnvar", "bnvar_inv",
                  "bnraw", "hpreact")
    )  # fmt: skip
    h, logits, logit_maxes, norm_logits, counts, counts_sum, counts_sum_inv, probs, logprobs = (
        v[k]
        for k in ("h", "logits", "logit_maxes", "norm_logits", "counts", "counts_sum",
                  "counts_sum_inv", "probs", "logprobs")
    )  # fmt: skip
    n, V = logits.shape  # batch size, vocabulary size

    # The forward you are walking back through (jaxninja.forward_chunked), H hidden units:
    #   emb = C[Xb]                                          # (n, 3, 10)
    #   embcat = emb.reshape(n, -1)                          # (n, 30)
    #   hprebn = embcat @ W1 + b1                            # (n, H)
    #   bnmeani = 1 / n * hprebn.sum(0, keepdims=True)       # (1, H)
    #   bndiff = hprebn - bnmeani                            # (n, H)
    #   bndiff2 = bndiff**2                                  # (n, H)
    #   bnvar = 1 / (n - 1) * bndiff2.sum(0, keepdims=True)  # (1, H) Bessel's n-1
    #   bnvar_inv = (bnvar + eps) ** -0.5                    # (1, H)
    #   bnraw = bndiff * bnvar_inv                           # (n, H)
    #   hpreact = bngain * bnraw + bnbias                    # (n, H)
    #   h = jnp.tanh(hpreact)                                # (n, H)
    #   logits = h @ W2 + b2                                 # (n, V)
    #   logit_maxes = logits.max(1, keepdims=True)           # (n, 1)
    #   norm_logits = logits - logit_maxes                   # (n, V)
    #   counts = jnp.exp(norm_logits)                        # (n, V)
    #   counts_sum = counts.sum(1, keepdims=True)            # (n, 1)
    #   counts_sum_inv = counts_sum**-1                      # (n, 1)
    #   probs = counts * counts_sum_inv                      # (n, V)
    #   logprobs = jnp.log(probs)                            # (n, V)
    #   loss = -logprobs[jnp.arange(n), Yb].mean()

    dlogprobs = ...  # TODO
    dprobs = ...  # TODO
    dcounts_sum_inv = ...  # TODO
    dcounts_sum = ...  # TODO
    dcounts = ...  # TODO
    dnorm_logits = ...  # TODO
    dlogit_maxes = ...  # TODO
    dlogits = ...  # TODO
    dh = ...  # TODO
    dW2 = ...  # TODO
    db2 = ...  # TODO
    dhpreact = ...  # TODO
    dbngain = ...  # TODO
    dbnbias = ...  # TODO
    dbnraw = ...  # TODO
    dbnvar_inv = ...  # TODO
    dbnvar = ...  # TODO
    dbndiff2 = ...  # TODO
    dbndiff = ...  # TODO
    dbnmeani = ...  # TODO
    dhprebn = ...  # TODO
    dembcat = ...  # TODO
    dW1 = ...  # TODO
    db1 = ...  # TODO
    demb = ...  # TODO
    dC = ...  # TODO

    grads = {
        "logprobs": dlogprobs, "probs": dprobs, "counts_sum_inv": dcounts_sum_inv,
        "counts_sum": dcounts_sum, "counts": dcounts, "norm_logits": dnorm_logits,
        "logit_maxes": dlogit_maxes, "logits": dlogits, "h": dh, "W2": dW2, "b2": db2,
        "hpreact": dhpreact, "bngain": dbngain, "bnbias": dbnbias, "bnraw": dbnraw,
        "bnvar_inv": dbnvar_inv, "bnvar": dbnvar, "bndiff2": dbndiff2, "bndiff": dbndiff,
        "bnmeani": dbnmeani, "hprebn": dhprebn, "embcat": dembcat, "W1": dW1, "b1": db1,
        "emb": demb, "C": dC,
    }  # fmt: skip
    return {name: g for name, g in grads.items() if g is not ...}  # the blanks left out
