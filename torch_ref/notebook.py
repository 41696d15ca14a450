"""The notebook's code in PyTorch, as close to its cells as a function allows.

`autograd` is the chunked forward with `retain_grad` on every intermediate and `loss.backward()`;
`manual_backward` is exercise 1, `fused_backward` exercises 2 and 3, `cmp_table` the notebook's
`cmp`. Inputs are numpy (the shared seeded case of jaxninja.models.mlp.make_case), outputs numpy
arrays keyed by the notebook's names. One departure: dC is a vectorized `index_add_`, not the
notebook's double Python loop; it adds the same rows in the same order.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

PARAMS = ("C", "W1", "b1", "W2", "b2", "bngain", "bnbias")
EPS = 1e-5


def _tensors(params: dict[str, np.ndarray], Xb: np.ndarray, Yb: np.ndarray):
    p = {k: torch.tensor(np.asarray(params[k])) for k in PARAMS}
    return p, torch.tensor(np.asarray(Xb), dtype=torch.long), torch.tensor(np.asarray(Yb)).long()


def _forward(p, Xb, Yb, eps=EPS):
    """The notebook's chunked forward; returns (loss, {name: tensor})."""
    C, W1, b1, W2, b2, bngain, bnbias = (p[k] for k in PARAMS)
    n = Xb.shape[0]
    emb = C[Xb]
    embcat = emb.view(emb.shape[0], -1)
    hprebn = embcat @ W1 + b1
    bnmeani = 1 / n * hprebn.sum(0, keepdim=True)
    bndiff = hprebn - bnmeani
    bndiff2 = bndiff**2
    bnvar = 1 / (n - 1) * (bndiff2).sum(0, keepdim=True)
    bnvar_inv = (bnvar + eps) ** -0.5
    bnraw = bndiff * bnvar_inv
    hpreact = bngain * bnraw + bnbias
    h = torch.tanh(hpreact)
    logits = h @ W2 + b2
    logit_maxes = logits.max(1, keepdim=True).values
    norm_logits = logits - logit_maxes
    counts = norm_logits.exp()
    counts_sum = counts.sum(1, keepdims=True)
    counts_sum_inv = counts_sum**-1
    probs = counts * counts_sum_inv
    logprobs = probs.log()
    loss = -logprobs[range(n), Yb].mean()
    values = {
        "emb": emb, "embcat": embcat, "hprebn": hprebn, "bnmeani": bnmeani, "bndiff": bndiff,
        "bndiff2": bndiff2, "bnvar": bnvar, "bnvar_inv": bnvar_inv, "bnraw": bnraw,
        "hpreact": hpreact, "h": h, "logits": logits, "logit_maxes": logit_maxes,
        "norm_logits": norm_logits, "counts": counts, "counts_sum": counts_sum,
        "counts_sum_inv": counts_sum_inv, "probs": probs, "logprobs": logprobs,
    }  # fmt: skip
    return loss, values


def _numpy(d: dict[str, torch.Tensor]) -> dict[str, np.ndarray]:
    return {k: v.detach().numpy() for k, v in d.items()}


def autograd(params, Xb, Yb, eps: float = EPS):
    """Loss, intermediates and autograd gradients of all 26 tensors, as numpy."""
    p, Xb, Yb = _tensors(params, Xb, Yb)
    for t in p.values():
        t.requires_grad_(True)
    loss, values = _forward(p, Xb, Yb, eps)
    for t in values.values():
        t.retain_grad()
    loss.backward()
    grads = {k: t.grad for k, t in {**values, **p}.items()}
    return loss.item(), _numpy(values), _numpy(grads)


def _dC(C, Xb, demb):
    """The notebook's `dC[ix] += demb[k, j]` loop as one index_add_ over the flattened batch."""
    return torch.zeros_like(C).index_add_(0, Xb.reshape(-1), demb.reshape(-1, C.shape[1]))


@torch.no_grad()
def manual_backward(params, Xb, Yb, eps: float = EPS) -> dict[str, np.ndarray]:
    """Exercise 1, line for line: the gradient of every intermediate and parameter."""
    p, Xb, Yb = _tensors(params, Xb, Yb)
    _, v = _forward(p, Xb, Yb, eps)
    W1, W2, bngain, C = p["W1"], p["W2"], p["bngain"], p["C"]
    (emb, embcat, hprebn, bndiff, bndiff2, bnvar, bnvar_inv, bnraw, h, logits, counts,
     counts_sum, counts_sum_inv, probs, logprobs) = (v[k] for k in (
        "emb", "embcat", "hprebn", "bndiff", "bndiff2", "bnvar", "bnvar_inv", "bnraw", "h",
        "logits", "counts", "counts_sum", "counts_sum_inv", "probs", "logprobs"))  # fmt: skip
    n = Xb.shape[0]
    dlogprobs = torch.zeros_like(logprobs)
    dlogprobs[range(n), Yb] = -1.0 / n
    dprobs = (1.0 / probs) * dlogprobs
    dcounts_sum_inv = (counts * dprobs).sum(1, keepdim=True)
    dcounts = counts_sum_inv * dprobs
    dcounts_sum = (-(counts_sum**-2)) * dcounts_sum_inv
    dcounts += torch.ones_like(counts) * dcounts_sum
    dnorm_logits = counts * dcounts
    dlogits = dnorm_logits.clone()
    dlogit_maxes = (-dnorm_logits).sum(1, keepdim=True)
    dlogits += F.one_hot(logits.max(1).indices, num_classes=logits.shape[1]) * dlogit_maxes
    dh = dlogits @ W2.T
    dW2 = h.T @ dlogits
    db2 = dlogits.sum(0)
    dhpreact = (1.0 - h**2) * dh
    dbngain = (bnraw * dhpreact).sum(0, keepdim=True)
    dbnraw = bngain * dhpreact
    dbnbias = dhpreact.sum(0, keepdim=True)
    dbndiff = bnvar_inv * dbnraw
    dbnvar_inv = (bndiff * dbnraw).sum(0, keepdim=True)
    dbnvar = (-0.5 * (bnvar + eps) ** -1.5) * dbnvar_inv
    dbndiff2 = (1.0 / (n - 1)) * torch.ones_like(bndiff2) * dbnvar
    dbndiff += (2 * bndiff) * dbndiff2
    dhprebn = dbndiff.clone()
    dbnmeani = (-dbndiff).sum(0, keepdim=True)
    dhprebn += 1.0 / n * (torch.ones_like(hprebn) * dbnmeani)
    dembcat = dhprebn @ W1.T
    dW1 = embcat.T @ dhprebn
    db1 = dhprebn.sum(0)
    demb = dembcat.view(emb.shape)
    dC = _dC(C, Xb, demb)
    return _numpy({
        "logprobs": dlogprobs, "probs": dprobs, "counts_sum_inv": dcounts_sum_inv,
        "counts_sum": dcounts_sum, "counts": dcounts, "norm_logits": dnorm_logits,
        "logit_maxes": dlogit_maxes, "logits": dlogits, "h": dh, "W2": dW2, "b2": db2,
        "hpreact": dhpreact, "bngain": dbngain, "bnbias": dbnbias, "bnraw": dbnraw,
        "bnvar_inv": dbnvar_inv, "bnvar": dbnvar, "bndiff2": dbndiff2, "bndiff": dbndiff,
        "bnmeani": dbnmeani, "hprebn": dhprebn, "embcat": dembcat, "W1": dW1, "b1": db1,
        "emb": demb, "C": dC,
    })  # fmt: skip


def _fused(p, Xb, Yb, eps=EPS):
    """Exercise 4's forward and backward: F.cross_entropy, fused dlogits and dhprebn."""
    C, W1, b1, W2, b2, bngain, bnbias = (p[k] for k in PARAMS)
    n = Xb.shape[0]
    emb = C[Xb]
    embcat = emb.view(emb.shape[0], -1)
    hprebn = embcat @ W1 + b1
    bnmean = hprebn.mean(0, keepdim=True)
    bnvar = hprebn.var(0, keepdim=True, unbiased=True)
    bnvar_inv = (bnvar + eps) ** -0.5
    bnraw = (hprebn - bnmean) * bnvar_inv
    hpreact = bngain * bnraw + bnbias
    h = torch.tanh(hpreact)
    logits = h @ W2 + b2
    loss = F.cross_entropy(logits, Yb)
    # exercise 2
    dlogits = F.softmax(logits, 1)
    dlogits[range(n), Yb] -= 1
    dlogits /= n
    dh = dlogits @ W2.T
    dW2 = h.T @ dlogits
    db2 = dlogits.sum(0)
    dhpreact = (1.0 - h**2) * dh
    dbngain = (bnraw * dhpreact).sum(0, keepdim=True)
    dbnbias = dhpreact.sum(0, keepdim=True)
    # exercise 3
    dhprebn = (
        bngain
        * bnvar_inv
        / n
        * (n * dhpreact - dhpreact.sum(0) - n / (n - 1) * bnraw * (dhpreact * bnraw).sum(0))
    )
    dembcat = dhprebn @ W1.T
    dW1 = embcat.T @ dhprebn
    db1 = dhprebn.sum(0)
    dC = _dC(C, Xb, dembcat.view(emb.shape))
    grads = {
        "logits": dlogits, "h": dh, "W2": dW2, "b2": db2, "hpreact": dhpreact,
        "bngain": dbngain, "bnbias": dbnbias, "hprebn": dhprebn, "embcat": dembcat,
        "W1": dW1, "b1": db1, "C": dC,
    }  # fmt: skip
    return loss, grads


@torch.no_grad()
def fused_backward(params, Xb, Yb, eps: float = EPS) -> dict[str, np.ndarray]:
    """Exercises 2 + 3: the parameters' gradients and those of the layer boundaries."""
    p, Xb, Yb = _tensors(params, Xb, Yb)
    return _numpy(_fused(p, Xb, Yb, eps)[1])


def cmp_table(manual: dict[str, np.ndarray], reference: dict[str, np.ndarray]) -> str:
    """The notebook's `cmp` rows, one line per tensor in `manual`'s order."""
    lines = []
    for s, dt in manual.items():
        t = reference[s]
        ex = bool(np.all(dt == t))
        app = bool(torch.allclose(torch.from_numpy(dt), torch.from_numpy(t)))
        maxdiff = float(np.abs(dt - t).max())
        lines.append(f"{s:15s} | exact: {ex!s:5s} | approximate: {app!s:5s} | maxdiff: {maxdiff}")
    return "\n".join(lines)


def run_case(params, Xb, Yb, eps: float = EPS) -> dict:
    """Everything torch_ref knows about one case: loss, values, autograd, manual, fused."""
    loss, values, grads = autograd(params, Xb, Yb, eps)
    return {
        "loss": loss,
        "values": values,
        "autograd": grads,
        "manual": manual_backward(params, Xb, Yb, eps),
        "fused": fused_backward(params, Xb, Yb, eps),
    }


# --- exercise 4: training on the manual gradients, calibration, evaluation ----------------------


def step_manual(p: dict[str, torch.Tensor], Xb, Yb, lr: float, eps: float = EPS) -> torch.Tensor:
    """One step of the notebook's exercise-4 loop: forward, fused manual backward, SGD."""
    loss, grads = _fused(p, Xb, Yb, eps)
    for k in PARAMS:
        p[k] += -lr * grads[k]
    return loss


@torch.no_grad()
def train_loop(
    params: dict[str, np.ndarray],
    X: np.ndarray,
    Y: np.ndarray,
    indices: np.ndarray,
    lr: float = 0.1,
    lr_decayed: float = 0.01,
    lr_decay_step: int = 100_000,
    eps: float = EPS,
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """The notebook's exercise-4 loop on given batches: indices (steps, B) into (X, Y).

    Returns every step's loss and the final parameters. With jaxninja's initial parameters and
    batch indices (jaxninja.training.step.batch_indices) it replays a jaxninja run step for step.
    """
    p, X, Y = _tensors(params, X, Y)
    ix = torch.tensor(np.asarray(indices), dtype=torch.long)
    losses = []
    for i in range(len(ix)):
        lr_i = lr if i < lr_decay_step else lr_decayed
        losses.append(step_manual(p, X[ix[i]], Y[ix[i]], lr_i, eps).item())
    return np.array(losses, np.float64), _numpy(p)


@torch.no_grad()
def calibrate_bn(params: dict[str, np.ndarray], X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The notebook's BatchNorm calibration over a whole split: (bnmean, bnvar), each (1, H)."""
    p, X, _ = _tensors(params, X, np.zeros(len(X), np.int64))
    emb = p["C"][X]
    hpreact = emb.view(emb.shape[0], -1) @ p["W1"] + p["b1"]
    return hpreact.mean(0, keepdim=True).numpy(), hpreact.var(
        0, keepdim=True, unbiased=True
    ).numpy()


@torch.no_grad()
def split_loss(params, bnmean, bnvar, X, Y, eps: float = EPS) -> float:
    """The notebook's split_loss: inference-mode forward with fixed BatchNorm statistics."""
    p, X, Y = _tensors(params, X, Y)
    bnmean, bnvar = torch.from_numpy(np.asarray(bnmean)), torch.from_numpy(np.asarray(bnvar))
    emb = p["C"][X]
    embcat = emb.view(emb.shape[0], -1)
    hpreact = embcat @ p["W1"] + p["b1"]
    hpreact = p["bngain"] * (hpreact - bnmean) * (bnvar + eps) ** -0.5 + p["bnbias"]
    h = torch.tanh(hpreact)
    logits = h @ p["W2"] + p["b2"]
    return F.cross_entropy(logits, Y).item()


def load_checkpoint(path) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray]:
    """A jaxninja checkpoint's parameters and inference BatchNorm statistics (calibrated where
    it has them, else running), ready for `split_loss`."""
    from jaxninja.training import checkpoint

    ckpt = checkpoint.load(path)
    return ckpt.params, *ckpt.bn["bn"]
