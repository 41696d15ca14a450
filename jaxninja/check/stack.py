"""`jaxninja check --model wavenet`: the WaveNet's hand-written backward, checked three ways.

On one seeded case (the lecture's initialisation with gamma, beta and the bias moved off 1 and
0, so a gradient forgotten cannot pass) the stack's backward is compared, row by row, with:
  (1) jax.grad of the stack's forward (each layer's output tapped, as autodiff.py does);
  (2) PyTorch autograd on torch_ref's port of the lecture's layer classes;
  (3) each layer's own jax.vjp, fed the backward's own gradient of that layer's output: a
      layer whose backward is wrong fails at its own rows, whatever the layers after it do;
      and jax.grad against PyTorch autograd.
A row per layer output and parameter gradient, in the order the backward makes them (the
notebook's cmp order: `linear4`, `linear4.weight`, ..., `embedding.weight`), judged with
verify.py's verdicts (shapes first; float32 against a float64 truth, calibrated on autodiff).
"""

from __future__ import annotations

from functools import partial

import jax
import numpy as np

from jaxninja.check import verify
from jaxninja.config import ModelConfig
from jaxninja.models import layers, wavenet
from jaxninja.models.mlp import Case, make_case, to_device

WAYS = {
    "jax.grad": ("manual", "jax.grad"),
    "torch": ("manual", "torch autograd"),
    "layer vjp": ("manual", "layer vjp"),
    "grad~torch": ("jax.grad", "torch autograd"),
}


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


@partial(jax.jit, static_argnames=("cfg", "net"))
def _jax_sources(cfg: ModelConfig, net: tuple[layers.Layer, ...] | None, params, Xb, Yb):
    loss, manual, _ = wavenet.loss_and_grads(cfg, net=net)(params, Xb, Yb)
    sources = {
        "manual": manual,
        "jax.grad": wavenet.grads_autodiff(cfg, params, Xb, Yb),
        "layer vjp": layer_vjps(cfg, params, Xb, Yb, manual),
    }
    return loss, sources


# jitted: eagerly, each of the stack's ops would be dispatched (and compiled) one by one (9 s here)
_grads_autodiff = jax.jit(wavenet.grads_autodiff, static_argnums=0)


def gradient_sources(
    cfg: ModelConfig, case: Case, with_torch: bool, net: tuple[layers.Layer, ...] | None = None
) -> tuple[dict[str, dict[str, np.ndarray]], dict[str, float], dict[str, tuple[int, ...]]]:
    """Every source's gradients as numpy dicts by row name, the losses, and each row's shape.
    `net`: the stack whose backward is checked (wavenet.with_backwards: other code in a layer's
    seat); the references use the model's own. A float32 case also gets the float64 truth
    (jax.grad on the inputs upcast)."""
    p = to_device(case.params)
    loss, sources = _jax_sources(cfg, net, p, case.Xb, case.Yb)
    losses = {"stack": float(loss)}
    if cfg.dtype == "float32":
        wide = {k: np.asarray(v, np.float64) for k, v in case.params.items()}
        with jax.enable_x64(True):
            cfg64 = ModelConfig(**{**cfg.__dict__, "dtype": "float64"})
            truth = _grads_autodiff(cfg64, to_device(wide), case.Xb, case.Yb)
            sources["truth"] = jax.tree.map(np.asarray, truth)
    if with_torch:
        import torch_ref

        losses["torch"], sources["torch autograd"] = torch_ref.wavenet.autograd(*case, eps=cfg.eps)
    shapes = {**wavenet.output_shapes(cfg, len(case.Xb)), **wavenet.param_shapes(cfg)}
    return jax.tree.map(np.asarray, sources), losses, shapes


def run_check(
    cfg: ModelConfig,
    X: np.ndarray,
    Y: np.ndarray,
    batch_size: int = 32,
    seed: int = 0,
    with_torch: bool | None = None,
    net: tuple[layers.Layer, ...] | None = None,
) -> verify.Report:
    """Build the seeded case from (X, Y) and compare every way on it (verify's Report); `net`
    as in `gradient_sources`."""
    if with_torch is None:
        with_torch = verify.torch_available()
    case = make_case(cfg, X, Y, batch_size, seed, init=wavenet.check_params)
    with verify.check_context(cfg.dtype):
        sources, losses, shapes = gradient_sources(cfg, case, with_torch, net)
    order = wavenet.grad_order(cfg)
    rows_of = {s: order for s in ("manual", "jax.grad", "layer vjp", "torch autograd")}
    rows = verify.compare(sources, shapes, cfg.dtype, WAYS, order, rows_of)
    return verify.make_report(cfg.dtype, batch_size, seed, WAYS, rows, losses, cfg.model)
