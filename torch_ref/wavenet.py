"""Part 5 (makemore_part5_cnn1, "building a WaveNet") in PyTorch: the reference jaxninja's stack
is checked against, on the lecture's own layer classes.

The classes are the lecture's as it writes them (Linear, BatchNorm1d with its `training` flag,
running buffers and `dim = (0, 1)` for 3-D input, Tanh, Embedding, FlattenConsecutive that
squeezes a length-1 time axis, Sequential), so every check runs on the code a learner of the
lecture reads. `build` assembles them from jaxninja's numpy parameters (`linear1.weight`,
`bn1.gamma`, ...) instead of torch.randn; `train_loop` is the lecture's loop on given batches
instead of torch.randint, so it replays a jaxninja run step for step. Numpy in, numpy out, in
the parameters' dtype; layers are named as jaxninja's stack (`embedding`, `flatten1`, `linear1`,
`bn1`, `tanh1`, ..., `linear4`).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

EPS = 1e-5
MOMENTUM = 0.1  # the lecture's BatchNorm1d default


# --- the lecture's layers -----------------------------------------------------------------------


class Linear:
    def __init__(self, fan_in, fan_out, bias=True):
        self.weight = torch.randn((fan_in, fan_out)) / fan_in**0.5  # note: kaiming init
        self.bias = torch.zeros(fan_out) if bias else None

    def __call__(self, x):
        self.out = x @ self.weight
        if self.bias is not None:
            self.out += self.bias
        return self.out

    def parameters(self):
        return [self.weight] + ([] if self.bias is None else [self.bias])


class BatchNorm1d:
    def __init__(self, dim, eps=1e-5, momentum=0.1):
        self.eps = eps
        self.momentum = momentum
        self.training = True
        # parameters (trained with backprop)
        self.gamma = torch.ones(dim)
        self.beta = torch.zeros(dim)
        # buffers (trained with a running 'momentum update')
        self.running_mean = torch.zeros(dim)
        self.running_var = torch.ones(dim)

    def __call__(self, x):
        # calculate the forward pass
        if self.training:
            if x.ndim == 2:
                dim = 0
            elif x.ndim == 3:
                dim = (0, 1)
            xmean = x.mean(dim, keepdim=True)  # batch mean
            xvar = x.var(dim, keepdim=True)  # batch variance
        else:
            xmean = self.running_mean
            xvar = self.running_var
        xhat = (x - xmean) / torch.sqrt(xvar + self.eps)  # normalize to unit variance
        self.out = self.gamma * xhat + self.beta
        # update the buffers
        if self.training:
            with torch.no_grad():
                self.running_mean = (1 - self.momentum) * self.running_mean + self.momentum * xmean
                self.running_var = (1 - self.momentum) * self.running_var + self.momentum * xvar
        return self.out

    def parameters(self):
        return [self.gamma, self.beta]


class Tanh:
    def __call__(self, x):
        self.out = torch.tanh(x)
        return self.out

    def parameters(self):
        return []


class Embedding:
    def __init__(self, num_embeddings, embedding_dim):
        self.weight = torch.randn((num_embeddings, embedding_dim))

    def __call__(self, IX):
        self.out = self.weight[IX]
        return self.out

    def parameters(self):
        return [self.weight]


class FlattenConsecutive:
    def __init__(self, n):
        self.n = n

    def __call__(self, x):
        B, T, C = x.shape
        x = x.view(B, T // self.n, C * self.n)
        if x.shape[1] == 1:
            x = x.squeeze(1)
        self.out = x
        return self.out

    def parameters(self):
        return []


class Sequential:
    def __init__(self, layers):
        self.layers = layers

    def __call__(self, x):
        for layer in self.layers:
            x = layer(x)
        self.out = x
        return self.out

    def parameters(self):
        # get parameters of all layers and stretch them out into one list
        return [p for layer in self.layers for p in layer.parameters()]


# --- the lecture's model, from jaxninja's parameters --------------------------------------------


def _layers(params: dict[str, np.ndarray], eps: float, momentum: float) -> dict[str, object]:
    """The lecture's hierarchical Sequential, by jaxninja's layer names, at the sizes of the
    parameters: one FlattenConsecutive -> Linear -> BatchNorm1d -> Tanh stage per BatchNorm."""
    V, E = params["embedding.weight"].shape
    n_stages = sum(k.endswith(".gamma") for k in params)
    out: dict[str, object] = {"embedding": Embedding(V, E)}
    width = E
    for i in range(1, n_stages + 1):
        fan_in, H = params[f"linear{i}.weight"].shape
        out[f"flatten{i}"] = FlattenConsecutive(fan_in // width)
        out[f"linear{i}"] = Linear(fan_in, H, bias=False)
        out[f"bn{i}"] = BatchNorm1d(H, eps=eps, momentum=momentum)
        out[f"tanh{i}"] = Tanh()
        width = H
    out[f"linear{n_stages + 1}"] = Linear(width, V)
    return out


def build(
    params: dict[str, np.ndarray], eps: float = EPS, momentum: float = MOMENTUM
) -> tuple[Sequential, list[str], dict[str, torch.Tensor]]:
    """(the model, its layers' names, its parameters by jaxninja's names): the lecture's classes
    holding copies of `params` (their dtype kept), running buffers at mean 0, variance 1."""
    with torch.random.fork_rng(devices=[]):  # the classes' randn init is overwritten: no trace
        layers = _layers(params, eps, momentum)
    tensors = {}
    for name, value in params.items():
        layer, attr = name.split(".")
        tensors[name] = torch.tensor(np.asarray(value))
        setattr(layers[layer], attr, tensors[name])
    dtype = tensors["embedding.weight"].dtype
    for layer in layers.values():
        if isinstance(layer, BatchNorm1d):
            layer.running_mean = torch.zeros(layer.gamma.shape, dtype=dtype)
            layer.running_var = torch.ones(layer.gamma.shape, dtype=dtype)
    return Sequential(list(layers.values())), list(layers), tensors


def _long(*arrays: np.ndarray) -> list[torch.Tensor]:
    return [torch.tensor(np.asarray(a)).long() for a in arrays]


def _numpy(d: dict[str, torch.Tensor]) -> dict[str, np.ndarray]:
    return {k: v.detach().numpy() for k, v in d.items()}


def bn_stats(model: Sequential, names: list[str]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Every BatchNorm1d's running buffers as (mean, var), each (H,): the lecture's update leaves
    them in its batch statistic's keepdim shape, (1, 1, H) or (1, H)."""
    return {
        name: tuple(b.detach().reshape(-1).numpy() for b in (layer.running_mean, layer.running_var))
        for name, layer in zip(names, model.layers, strict=True)
        if isinstance(layer, BatchNorm1d)
    }


# --- gradients, training, evaluation ------------------------------------------------------------


def autograd(
    params: dict[str, np.ndarray], Xb: np.ndarray, Yb: np.ndarray, eps: float = EPS
) -> tuple[float, dict[str, np.ndarray]]:
    """Training-mode forward, `retain_grad` on every layer's output, F.cross_entropy and
    loss.backward(): the loss and the gradient of every layer's output (by layer name) and of
    every parameter (by parameter name)."""
    model, names, tensors = build(params, eps)
    for p in model.parameters():
        p.requires_grad = True
    Xb, Yb = _long(Xb, Yb)
    logits = model(Xb)
    for layer in model.layers:
        layer.out.retain_grad()
    loss = F.cross_entropy(logits, Yb)
    loss.backward()
    grads = {name: layer.out.grad for name, layer in zip(names, model.layers, strict=True)}
    return loss.item(), _numpy({**grads, **{k: t.grad for k, t in tensors.items()}})


def loss_of(model: Sequential, Xb: torch.Tensor, Yb: torch.Tensor) -> torch.Tensor:
    """The lecture's forward pass and loss function."""
    logits = model(Xb)
    return F.cross_entropy(logits, Yb)


def sgd_step(parameters: list[torch.Tensor], loss: torch.Tensor, lr: float) -> None:
    """The lecture's backward pass and update: simple SGD."""
    for p in parameters:
        p.grad = None
    loss.backward()
    for p in parameters:
        p.data += -lr * p.grad


def train_loop(
    params: dict[str, np.ndarray],
    X: np.ndarray,
    Y: np.ndarray,
    batch_ix: np.ndarray,
    lr_decay_step: int = 150_000,
    lr: float = 0.1,
    lr_decayed: float = 0.01,
    momentum: float = MOMENTUM,
    eps: float = EPS,
) -> tuple[np.ndarray, dict[str, np.ndarray], dict[str, tuple[np.ndarray, np.ndarray]]]:
    """The lecture's training loop on given batches, batch_ix (steps, B) into (X, Y): every
    step's loss, the final parameters and the BatchNorms' running (mean, var). With jaxninja's
    initial parameters and batch indices (jaxninja.training.step.batch_indices) it replays a run."""
    model, names, tensors = build(params, eps, momentum)
    parameters = model.parameters()
    for p in parameters:
        p.requires_grad = True
    X, Y, ix = _long(X, Y, batch_ix)
    lossi = []
    for i in range(len(ix)):
        Xb, Yb = X[ix[i]], Y[ix[i]]  # batch X,Y
        loss = loss_of(model, Xb, Yb)
        sgd_step(parameters, loss, lr if i < lr_decay_step else lr_decayed)
        lossi.append(loss.item())
    return np.array(lossi, np.float64), _numpy(tensors), bn_stats(model, names)


def _eval_model(params, bn, eps: float) -> tuple[Sequential, list[str]]:
    """The model with every layer's `training` off (as the lecture sets it) and each
    BatchNorm1d's buffers set to `bn` (name -> (mean, var)), where given."""
    model, names, _ = build(params, eps)
    for name, layer in zip(names, model.layers, strict=True):
        layer.training = False
        if name in (bn or {}):
            mean, var = (torch.tensor(np.asarray(s)) for s in bn[name])
            layer.running_mean, layer.running_var = mean, var
    return model, names


@torch.no_grad()
def split_loss(
    params: dict[str, np.ndarray],
    bn: dict[str, tuple[np.ndarray, np.ndarray]],
    X: np.ndarray,
    Y: np.ndarray,
    eps: float = EPS,
) -> float:
    """The lecture's split_loss: the whole split at once, in eval mode on the statistics `bn`."""
    model, _ = _eval_model(params, bn, eps)
    X, Y = _long(X, Y)
    return loss_of(model, X, Y).item()


@torch.no_grad()
def calibrate_bn(
    params: dict[str, np.ndarray], X: np.ndarray, eps: float = EPS
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Part 4's calibration for the stack: each BatchNorm's mean and (n-1) variance over every
    example and position of X, in forward order, the layers before it in eval mode on the
    statistics just calibrated. Each (H,)."""
    model, names = _eval_model(params, None, eps)
    (x,) = _long(X)
    stats = {}
    for name, layer in zip(names, model.layers, strict=True):
        if isinstance(layer, BatchNorm1d):
            dims = tuple(range(x.ndim - 1))
            layer.running_mean, layer.running_var = x.mean(dims), x.var(dims)
            stats[name] = (layer.running_mean.numpy(), layer.running_var.numpy())
        x = layer(x)
    return stats


def load_checkpoint(path) -> tuple[dict[str, np.ndarray], dict[str, tuple[np.ndarray, np.ndarray]]]:
    """A jaxninja WaveNet checkpoint's parameters and running BatchNorm statistics, ready for
    `split_loss` (its calibrated ones, where it has them, are `checkpoint.load(path)`'s)."""
    from jaxninja.training import checkpoint

    ckpt = checkpoint.load(path)
    if ckpt.model.model != "wavenet":
        raise ValueError(f"{path} holds a {ckpt.model.model!r} model, not a wavenet")
    return ckpt.params, {k: (np.asarray(m), np.asarray(v)) for k, (m, v) in ckpt.bn_running.items()}
