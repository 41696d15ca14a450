"""`jaxninja check --model wavenet`: the WaveNet's hand-written backward, checked three ways.

On one seeded case (the lecture's initialisation with gamma, beta and the bias moved off 1 and
0, so a gradient forgotten cannot pass) the stack's backward is compared, row by row, with:
  (1) jax.grad of the stack's forward (each layer's output tapped, as mlp_autodiff.py does);
  (2) PyTorch autograd on torch_ref's port of the lecture's layer classes;
  (3) each layer's own jax.vjp, fed the backward's own gradient of that layer's output: a
      layer whose backward is wrong fails at its own rows, whatever the layers after it do;
      and jax.grad against PyTorch autograd.
A row per layer output and parameter gradient, in the order the backward makes them (`linear4`,
`linear4.weight`, ..., `embedding.weight`), each source run in float64 and in the dtype under
test and judged by parity's rule (parity/named.py), as the MLP's check is.
"""

from __future__ import annotations

import jax
import numpy as np

from jaxninja.check import sources as checked_sources
from jaxninja.check.sources import SOURCES, WAYS
from jaxninja.config import ModelConfig
from jaxninja.models import layers, wavenet
from jaxninja.models.mlp import Case
from jaxninja.parity.named import Rules
from jaxninja.parity.table import Report

__all__ = ["CHECKED", "SOURCES", "WAYS", "gradient_sources", "layer_vjps", "rules", "run_check"]


def rules(cfg: ModelConfig, batch_size: int, ways=WAYS, sources=SOURCES) -> Rules:
    return checked_sources.rules(CHECKED, cfg, batch_size, ways, sources)


def layer_vjps(cfg: ModelConfig, params, Xb, Yb, manual: dict[str, jax.Array]) -> dict:
    """Every row by the jax.vjp of one layer: the cross-entropy's for the logits, then each
    layer's pullback of the backward's own gradient of its output."""
    net = wavenet.stack(cfg)
    inputs, x = [], Xb
    for layer in net:
        inputs.append(x)
        x = layer.forward(layers.own(params, layer), x)[0]
    _, pull = jax.vjp(lambda z: layers.cross_entropy_forward(z, Yb)[0], x)
    rows = {net[-1].name: pull(jax.numpy.ones((), x.dtype))[0]}
    for i in reversed(range(len(net))):
        layer, x = net[i], inputs[i]
        if i == 0:  # the embedding's input is integers: its weight alone is differentiated
            _, pull = jax.vjp(lambda p, L=layer, X=x: L.forward(p, X)[0], layers.own(params, layer))
            (dp,) = pull(manual[layer.name])
        else:
            _, pull = jax.vjp(
                lambda p, a, L=layer: L.forward(p, a)[0], layers.own(params, layer), x
            )
            dp, rows[net[i - 1].name] = pull(manual[layer.name])
        rows.update({f"{layer.name}.{k}": g for k, g in dp.items()})
    return rows


def _torch(cfg: ModelConfig, params, Xb, Yb):
    import torch_ref

    return torch_ref.wavenet.autograd(params, Xb, Yb, eps=cfg.eps)


CHECKED = checked_sources.checked("wavenet", wavenet, layer_vjps, _torch, hook="net")


def gradient_sources(
    cfg: ModelConfig, case: Case, with_torch: bool, net: tuple[layers.Layer, ...] | None = None
) -> tuple[dict[str, dict[str, np.ndarray]], dict[str, float]]:
    """The engine's flat sources (named.py) and the losses in the case's dtype; the references
    use the model's own stack, `net` (wavenet.with_backwards: other code in a layer's seat) the
    one checked."""
    return checked_sources.gradient_sources(CHECKED, cfg, case, with_torch, net)


def run_check(
    cfg: ModelConfig,
    X: np.ndarray,
    Y: np.ndarray,
    batch_size: int = 32,
    seed: int = 0,
    with_torch: bool | None = None,
    net: tuple[layers.Layer, ...] | None = None,
) -> Report:
    """Build the seeded case from (X, Y) and compare every way on it; `net` as in
    `gradient_sources`."""
    model = checked_sources.model_sources(CHECKED, cfg, net)
    return checked_sources.run_check(model, cfg, X, Y, batch_size, seed, with_torch)[0]
