"""A model's check on parity's engine: `run_check`, the one run of every model's check (the
case, the sources, the judged rows, the report), and what the checks of the models whose rows
are their layers' outputs and parameters (the WaveNet, the GPT) share besides.

On one seeded case (the model's `check_params`: gains and biases moved off 1 and 0, so a
gradient forgotten cannot pass) every source gives its rows by name, in the dtype under test
and in float64 on the case upcast: the hand-written backward (`manual`), jax.grad of the
tapped forward, each layer's own jax.vjp fed the backward's gradient of that layer's output
(`layer vjp`: a layer whose backward is wrong fails at its own rows), and PyTorch autograd on
torch_ref's port of the lecture's classes; then jax.grad once more on the inputs moved by a few
ulps, the rows' sensitivity. parity/named.py judges every row of every way.

A model says what it is to the check in a `Checked` (`checked` makes one from its module);
`hook` is what a check (or a grader) puts in the place of part of the backward: the WaveNet's
stack with other code in a layer's seat, the GPT's `Backwards`. It is a static argument of the
jitted sources: each hook is traced once.
"""

from __future__ import annotations

from collections.abc import Callable
from types import ModuleType
from typing import Any, NamedTuple

import jax
import numpy as np

from jaxninja.compile_cache import quick_jit
from jaxninja.config import ModelConfig
from jaxninja.models.mlp import Case, make_case, to_device
from jaxninja.parity.named import F64, MOVED, Rules, judge_rows, moved_cotangent, moved_inputs
from jaxninja.parity.sides import check_context, torch_available
from jaxninja.parity.table import Report, make_report

WAYS = {
    "jax.grad": ("manual", "jax.grad"),
    "torch": ("manual", "torch autograd"),
    "layer vjp": ("manual", "layer vjp"),
    "grad~torch": ("jax.grad", "torch autograd"),
}
SOURCES = ("manual", "jax.grad", "layer vjp", "torch autograd")


class ModelSources(NamedTuple):
    """What a model's check runs on its case, and reports."""

    # (case, with_torch) -> (the engine's flat sources, the losses, the rules that judge them)
    run: Callable[[Case, bool], tuple[dict[str, dict[str, np.ndarray]], dict[str, float], Rules]]
    ways: dict[str, tuple[str, str]]  # the report's: name -> (candidate, reference)
    init: Callable[[ModelConfig, int], dict[str, np.ndarray]] | None = None  # None: the MLP's


def run_check(
    model: ModelSources, cfg: ModelConfig, X: np.ndarray, Y: np.ndarray,
    batch_size: int, seed: int, with_torch: bool | None,
) -> tuple[Report, dict[str, dict[str, np.ndarray]]]:  # fmt: skip
    """Every model's check: the seeded case drawn from (X, Y), the model's sources run on it
    under check_context, every row judged by their rules and its ways reported. The report, and
    the sources it judged (a model's hints read them); with_torch None: PyTorch's ways if it is
    installed."""
    if with_torch is None:
        with_torch = torch_available()
    case = make_case(cfg, X, Y, batch_size, seed, init=model.init)
    with check_context(cfg.dtype):
        sources, losses, rules_of = model.run(case, with_torch)
    rows = judge_rows(sources, rules_of, cfg.dtype)
    return make_report(cfg.dtype, batch_size, seed, model.ways, rows, losses, cfg.model), sources


class Checked(NamedTuple):
    """What a model's check asks of the model."""

    model: str  # config.MODELS
    grad_order: Callable[[ModelConfig], tuple[str, ...]]  # the rows, in the backward's order
    shapes: Callable[[ModelConfig, int], dict[str, tuple[int, ...]]]  # every row's, at a batch
    init: Callable[[ModelConfig, int], dict[str, np.ndarray]]  # (cfg, seed): check_params
    # jitted, static (cfg, hook, vjps): (cfg, hook, params, Xb, Yb, vjps) -> (loss, {manual,
    # jax.grad, layer vjp}), the manual backward with `hook` in its seats; without `layer vjp`
    # where vjps is False (a grade's references: its layer vjps are fed the learner's rows)
    jax_sources: Callable
    # jitted, static cfg: (cfg, params, Xb, Yb, rows) -> every row by one layer's jax.vjp fed
    # `rows`' gradient of its output (a grade's: the learner's backward as it flowed)
    layer_vjps: Callable
    torch: Callable  # (cfg, params, Xb, Yb) -> (loss, rows): torch_ref's, imported when called


def checked(
    name: str, model: ModuleType, layer_vjps: Callable, torch: Callable, hook: str
) -> Checked:
    """A model's Checked from its module (models/wavenet.py, models/gpt.py: its grad_order,
    output and parameter shapes, check_params, loss_and_grads and grads_autodiff), its layers'
    vjps (cfg, params, Xb, Yb, rows) -> rows and its torch_ref source; `hook`: the keyword its
    loss_and_grads takes what is in the backward's seats by (None there: the model's own)."""

    def jax_sources(cfg: ModelConfig, seats: Any, params, Xb, Yb, vjps: bool = True):
        loss, manual, _ = model.loss_and_grads(cfg, **{hook: seats})(params, Xb, Yb)
        sources = {"manual": manual, "jax.grad": model.grads_autodiff(cfg, params, Xb, Yb)}
        if vjps:
            sources["layer vjp"] = layer_vjps(cfg, params, Xb, Yb, manual)
        return loss, sources

    def shapes(cfg: ModelConfig, batch_size: int) -> dict[str, tuple[int, ...]]:
        return {**model.output_shapes(cfg, batch_size), **model.param_shapes(cfg)}

    return Checked(
        name, model.grad_order, shapes, model.check_params,
        quick_jit(jax_sources, static_argnums=(0, 1, 5)), quick_jit(layer_vjps, static_argnums=0),
        torch,
    )  # fmt: skip


def rules(checked: Checked, cfg: ModelConfig, batch_size: int, ways=WAYS, sources=SOURCES) -> Rules:
    order = checked.grad_order(cfg)
    return Rules(ways, order, checked.shapes(cfg, batch_size), dict.fromkeys(sources, order))


def in_dtype(cfg: ModelConfig, dtype: str) -> ModelConfig:
    return ModelConfig(**{**cfg.__dict__, "dtype": dtype})


def upcast(params: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {k: np.asarray(v, np.float64) for k, v in params.items()}


def run_sources(
    checked: Checked, cfg: ModelConfig, params, Xb, Yb, with_torch: bool, hook=None, vjps=True
):
    """Every source's rows in cfg's dtype (numpy), and the losses; `hook`: what is in the
    backward's seats (None: the model's own); vjps False: without the layer vjps."""
    loss, sources = checked.jax_sources(cfg, hook, to_device(params), Xb, Yb, vjps)
    losses = {"stack": float(loss)}
    if with_torch:
        losses["torch"], sources["torch autograd"] = checked.torch(cfg, params, Xb, Yb)
    return jax.tree.map(np.asarray, sources), losses


def gradient_sources(
    checked: Checked, cfg: ModelConfig, case: Case, with_torch: bool, hook: Any = None,
    vjps: bool = True,
) -> tuple[dict[str, dict[str, np.ndarray]], dict[str, float]]:  # fmt: skip
    """The engine's flat sources (named.py) and the losses in the case's dtype; the references
    use the model's own backward, `hook` the one checked; vjps False: without the layer vjps."""
    run = (case.Xb, case.Yb, with_torch, hook, vjps)
    sources, losses = run_sources(checked, cfg, case.params, *run)
    with jax.enable_x64(True):
        cfg64 = in_dtype(cfg, "float64")
        if cfg.dtype != "float64":
            wide, _ = run_sources(checked, cfg64, upcast(case.params), *run)
            sources |= {s + F64: g for s, g in wide.items()}
        # jax.grad on the moved inputs: the float64 sources' compile again, its jax.grad kept
        moved = to_device(moved_inputs(case.params, 0))
        moved = checked.jax_sources(cfg64, hook, moved, case.Xb, case.Yb, vjps)[1]["jax.grad"]
        sources[MOVED] = {k: np.asarray(v) * moved_cotangent(0) for k, v in moved.items()}
    return sources, losses


def model_sources(checked: Checked, cfg: ModelConfig, hook: Any = None) -> ModelSources:
    """A Checked model's sources for run_check, with `hook` in the backward's seats."""

    def run(case: Case, with_torch: bool):
        sources, losses = gradient_sources(checked, cfg, case, with_torch, hook)
        return sources, losses, rules(checked, cfg, len(case.Yb))

    return ModelSources(run, WAYS, checked.init)


def close(a: np.ndarray, b: np.ndarray) -> bool:
    """The same tensor, up to far more than rounding and far less than a mistake: how a hint
    tells a known mistake's result from the learner's (or the backward's)."""
    return a.shape == b.shape and np.abs(a - b).max() <= 1e-3 * max(np.abs(b).max(), 1e-30)
