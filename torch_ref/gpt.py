"""Part 6 (makemore.py `--type transformer`) in PyTorch: the reference jaxninja's GPT is checked
against, on makemore's own classes.

The classes are makemore's as it writes them (NewGELU; CausalSelfAttention with its `tril`
buffer named `bias` and `masked_fill(-inf)`; Block with its ModuleDict mlp; GPT with an untied
`lm_head` without bias, F.cross_entropy(ignore_index=-1)), dropping only makemore's print of the
parameter count. `build` loads jaxninja's numpy parameters into them instead of makemore's init:
jaxninja's names are makemore's state_dict's without `transformer.`, and its Linear weights are
(in, out), so each is transposed on the way in and its gradient on the way out. `train_loop` is
makemore's AdamW loop on given batches, to replay a jaxninja run step for step. Numpy in, numpy
out, in the parameters' dtype.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn as nn
from torch.nn import functional as F

# makemore's TrainConfig and configure_optimizers
LEARNING_RATE = 5e-4
BETAS = (0.9, 0.99)
WEIGHT_DECAY = 0.01
ADAM_EPS = 1e-8


# --- makemore's model ---------------------------------------------------------------------------


@dataclass
class GPTConfig:
    # size of the model
    n_layer: int = 4
    n_head: int = 4
    n_embd: int = 64
    vocab_size: int = None
    block_size: int = None


class NewGELU(nn.Module):
    """
    Implementation of the GELU activation function currently in Google BERT repo (identical to
    OpenAI GPT).
    Reference: Gaussian Error Linear Units (GELU) paper: https://arxiv.org/abs/1606.08415
    """

    def forward(self, x):
        return (
            0.5
            * x
            * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * torch.pow(x, 3.0))))
        )


class CausalSelfAttention(nn.Module):
    """
    A vanilla multi-head masked self-attention layer with a projection at the end.
    It is possible to use torch.nn.MultiheadAttention here but I am including an
    explicit implementation here to show that there is nothing too scary here.
    """

    def __init__(self, config):
        super().__init__()
        assert config.n_embd % config.n_head == 0
        # key, query, value projections for all heads, but in a batch
        self.c_attn = nn.Linear(config.n_embd, 3 * config.n_embd)
        # output projection
        self.c_proj = nn.Linear(config.n_embd, config.n_embd)
        # causal mask to ensure that attention is only applied to the left in the input sequence
        self.register_buffer("bias", torch.tril(torch.ones(config.block_size, config.block_size))
                                     .view(1, 1, config.block_size, config.block_size))  # fmt: skip
        self.n_head = config.n_head
        self.n_embd = config.n_embd

    def forward(self, x):
        B, T, C = x.size()  # batch size, sequence length, embedding dimensionality (n_embd)

        # calculate query, key, values for all heads in batch and move head forward to be the
        # batch dim
        q, k, v = self.c_attn(x).split(self.n_embd, dim=2)
        k = k.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)  # (B, nh, T, hs)
        q = q.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)  # (B, nh, T, hs)
        v = v.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)  # (B, nh, T, hs)

        # causal self-attention; Self-attend: (B, nh, T, hs) x (B, nh, hs, T) -> (B, nh, T, T)
        att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(k.size(-1)))
        att = att.masked_fill(self.bias[:, :, :T, :T] == 0, float("-inf"))
        att = F.softmax(att, dim=-1)
        y = att @ v  # (B, nh, T, T) x (B, nh, T, hs) -> (B, nh, T, hs)
        # re-assemble all head outputs side by side
        y = y.transpose(1, 2).contiguous().view(B, T, C)

        # output projection
        y = self.c_proj(y)
        return y


class Block(nn.Module):
    """an unassuming Transformer block"""

    def __init__(self, config):
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.n_embd)
        self.attn = CausalSelfAttention(config)
        self.ln_2 = nn.LayerNorm(config.n_embd)
        self.mlp = nn.ModuleDict(
            dict(
                c_fc=nn.Linear(config.n_embd, 4 * config.n_embd),
                c_proj=nn.Linear(4 * config.n_embd, config.n_embd),
                act=NewGELU(),
            )
        )
        m = self.mlp
        self.mlpf = lambda x: m.c_proj(m.act(m.c_fc(x)))  # MLP forward

    def forward(self, x):
        x = x + self.attn(self.ln_1(x))
        x = x + self.mlpf(self.ln_2(x))
        return x


class GPT(nn.Module):
    """GPT Language Model"""

    def __init__(self, config):
        super().__init__()
        assert config.vocab_size is not None
        assert config.block_size is not None
        self.block_size = config.block_size

        self.transformer = nn.ModuleDict(
            dict(
                wte=nn.Embedding(config.vocab_size, config.n_embd),
                wpe=nn.Embedding(config.block_size, config.n_embd),
                h=nn.ModuleList([Block(config) for _ in range(config.n_layer)]),
                ln_f=nn.LayerNorm(config.n_embd),
            )
        )
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)

    def forward(self, idx, targets=None):
        device = idx.device
        b, t = idx.size()  # noqa: RUF059
        assert t <= self.block_size, (
            f"Cannot forward sequence of length {t}, block size is only {self.block_size}"
        )
        pos = torch.arange(0, t, dtype=torch.long, device=device).unsqueeze(0)  # shape (1, t)

        # forward the GPT model itself
        tok_emb = self.transformer.wte(idx)  # token embeddings of shape (b, t, n_embd)
        pos_emb = self.transformer.wpe(pos)  # position embeddings of shape (1, t, n_embd)
        x = tok_emb + pos_emb
        for block in self.transformer.h:
            x = block(x)
        x = self.transformer.ln_f(x)
        logits = self.lm_head(x)

        # if we are given some desired targets also calculate the loss
        loss = None
        if targets is not None:
            loss = F.cross_entropy(
                logits.view(-1, logits.size(-1)), targets.view(-1), ignore_index=-1
            )

        return logits, loss


# --- from jaxninja's parameters -----------------------------------------------------------------


def torch_name(name: str) -> str:
    """jaxninja's name -> makemore's state_dict's: `h.0.ln_1.weight` ->
    `transformer.h.0.ln_1.weight`; `lm_head` is makemore's top level."""
    return name if name.startswith("lm_head") else f"transformer.{name}"


def _transposed(name: str, value: np.ndarray) -> bool:
    """A Linear's weight: (in, out) in jaxninja, (out, in) in nn.Linear. Embeddings are (V, C)
    in both."""
    return name.endswith(".weight") and value.ndim == 2 and not name.startswith(("wte", "wpe"))


def config_of(params: dict[str, np.ndarray], n_head: int) -> GPTConfig:
    """makemore's GPTConfig at the sizes of the parameters (n_head cannot be read off them)."""
    V, C = np.shape(params["wte.weight"])
    n_layer = sum(k.endswith(".ln_1.weight") for k in params)
    T = np.shape(params["wpe.weight"])[0]
    return GPTConfig(n_layer=n_layer, n_head=n_head, n_embd=C, vocab_size=V, block_size=T)


def build(params: dict[str, np.ndarray], n_head: int) -> tuple[GPT, dict[str, nn.Parameter]]:
    """(makemore's GPT holding copies of `params` in their dtype, its parameters by jaxninja's
    names)."""
    with torch.random.fork_rng(devices=[]):  # nn's init is overwritten: no trace on the seed
        model = GPT(config_of(params, n_head))
    model = model.to(torch.from_numpy(np.asarray(params["wte.weight"])).dtype)
    theirs = dict(model.named_parameters())
    if set(map(torch_name, params)) != set(theirs):
        raise ValueError(f"parameters {sorted(params)} are not makemore's GPT's {sorted(theirs)}")
    ours = {}
    with torch.no_grad():
        for name, value in params.items():
            value = np.asarray(value)
            ours[name] = theirs[torch_name(name)]
            ours[name].copy_(torch.from_numpy(value.T if _transposed(name, value) else value))
    return model, ours


def numpy_params(ours: dict[str, torch.Tensor], grad: bool = False) -> dict[str, np.ndarray]:
    """The parameters (or their gradients) back in jaxninja's names and layout."""
    out = {}
    for name, p in ours.items():
        t = (p.grad if grad else p).detach().numpy()
        out[name] = t.T.copy() if _transposed(name, t) else t.copy()
    return out


def _long(*arrays: np.ndarray) -> list[torch.Tensor]:
    return [torch.tensor(np.asarray(a)).long() for a in arrays]


# --- gradients, training ------------------------------------------------------------------------


def _retain_outputs(model: GPT) -> dict[str, torch.Tensor]:
    """Every module's output, retain_grad'ed as the forward makes it, by jaxninja's name (a
    Block's `h.0`, the GELU's `h.0.mlp.act`, the logits' `lm_head`). `attn` itself is left out:
    its output is its c_proj's."""
    outs: dict[str, torch.Tensor] = {}

    def hook(name):
        def keep(module, args, out):
            out.retain_grad()
            outs[name] = out

        return keep

    containers = (GPT, nn.ModuleDict, nn.ModuleList, CausalSelfAttention)
    for name, module in model.named_modules():
        if not isinstance(module, containers):
            module.register_forward_hook(hook(name.removeprefix("transformer.")))
    return outs


def autograd(
    params: dict[str, np.ndarray], X: np.ndarray, Y: np.ndarray, n_head: int
) -> tuple[float, dict[str, np.ndarray]]:
    """makemore's forward and loss.backward() on rows X, Y (B, T) (Y -1 where ignored): the loss
    and the gradient of every parameter and every module's output, by jaxninja's names."""
    model, ours = build(params, n_head)
    outs = _retain_outputs(model)
    X, Y = _long(X, Y)
    _, loss = model(X, Y)
    loss.backward()
    grads = {name: out.grad.numpy().copy() for name, out in outs.items()}
    return loss.item(), grads | numpy_params(ours, grad=True)


def train_loop(
    params: dict[str, np.ndarray],
    X: np.ndarray,
    Y: np.ndarray,
    batch_ix: np.ndarray,
    n_head: int,
    lr: float = LEARNING_RATE,
    betas: tuple[float, float] = BETAS,
    weight_decay: float = WEIGHT_DECAY,
    eps: float = ADAM_EPS,
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """makemore's training loop on given batches, batch_ix (steps, B) into the rows (X, Y): its
    AdamW (configure_optimizers), zero_grad(set_to_none=True), backward, step. Every step's loss
    and the final parameters; with jaxninja's initial parameters and batch indices it replays
    a run."""
    model, ours = build(params, n_head)
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=lr, betas=betas, weight_decay=weight_decay, eps=eps
    )
    X, Y, ix = _long(X, Y, batch_ix)
    lossi = []
    for step in range(len(ix)):
        _, loss = model(X[ix[step]], Y[ix[step]])
        model.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        lossi.append(loss.item())
    return np.array(lossi, np.float64), numpy_params(ours)
