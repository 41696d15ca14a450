"""A model's check on parity's engine, for the models whose rows are their layers' outputs and
parameters (the WaveNet, the GPT): one piece of code for what their checks share.

On one seeded case (the model's `check_params`: gains and biases moved off 1 and 0, so a
gradient forgotten cannot pass) every source gives its rows by name, in the dtype under test
and in float64 on the case upcast: the hand-written backward (`manual`), jax.grad of the
tapped forward, each layer's own jax.vjp fed the backward's gradient of that layer's output
(`layer vjp`: a layer whose backward is wrong fails at its own rows), and PyTorch autograd on
torch_ref's port of the lecture's classes; then jax.grad once more on the inputs moved by a few
ulps, the rows' sensitivity. parity/named.py judges every row of every way.

A model says what it is to the check in a `Checked`; `hook` is what a check (or a grader) puts
in the place of part of the backward: the WaveNet's stack with other code in a layer's seat,
the GPT's `Backwards`. It is a static argument of the jitted sources: each hook is traced once.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import numpy as np

from jaxninja.check.mlp import upcast
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


class Checked(NamedTuple):
    """What a model's check asks of the model."""

    model: str  # config.MODELS
    grad_order: Callable[[ModelConfig], tuple[str, ...]]  # the rows, in the backward's order
    shapes: Callable[[ModelConfig, int], dict[str, tuple[int, ...]]]  # every row's, at a batch
    init: Callable[[ModelConfig, int], dict[str, np.ndarray]]  # (cfg, seed): check_params
    # jitted, static (cfg, hook): (cfg, hook, params, Xb, Yb) -> (loss, {manual, jax.grad,
    # layer vjp}), the manual backward with `hook` in its seats
    jax_sources: Callable
    # jitted, static cfg: (cfg, params, Xb, Yb, rows) -> every row by one layer's jax.vjp fed
    # `rows`' gradient of its output (a grade's: the learner's backward as it flowed)
    layer_vjps: Callable
    torch: Callable  # (cfg, params, Xb, Yb) -> (loss, rows): torch_ref's, imported when called


def rules(checked: Checked, cfg: ModelConfig, batch_size: int, ways=WAYS, sources=SOURCES) -> Rules:
    order = checked.grad_order(cfg)
    return Rules(ways, order, checked.shapes(cfg, batch_size), dict.fromkeys(sources, order))


def in_dtype(cfg: ModelConfig, dtype: str) -> ModelConfig:
    return ModelConfig(**{**cfg.__dict__, "dtype": dtype})


def run_sources(checked: Checked, cfg: ModelConfig, params, Xb, Yb, with_torch: bool, hook=None):
    """Every source's rows in cfg's dtype (numpy), and the losses; `hook`: what is in the
    backward's seats (None: the model's own)."""
    loss, sources = checked.jax_sources(cfg, hook, to_device(params), Xb, Yb)
    losses = {"stack": float(loss)}
    if with_torch:
        losses["torch"], sources["torch autograd"] = checked.torch(cfg, params, Xb, Yb)
    return jax.tree.map(np.asarray, sources), losses


def gradient_sources(
    checked: Checked, cfg: ModelConfig, case: Case, with_torch: bool, hook: Any = None
) -> tuple[dict[str, dict[str, np.ndarray]], dict[str, float]]:
    """The engine's flat sources (named.py) and the losses in the case's dtype; the references
    use the model's own backward, `hook` the one checked."""
    sources, losses = run_sources(checked, cfg, case.params, case.Xb, case.Yb, with_torch, hook)
    with jax.enable_x64(True):
        cfg64 = in_dtype(cfg, "float64")
        if cfg.dtype != "float64":
            wide, _ = run_sources(
                checked, cfg64, upcast(case.params), case.Xb, case.Yb, with_torch, hook
            )
            sources |= {s + F64: g for s, g in wide.items()}
        # jax.grad on the moved inputs: the float64 sources' compile again, its jax.grad kept
        moved = to_device(moved_inputs(case.params, 0))
        moved = checked.jax_sources(cfg64, hook, moved, case.Xb, case.Yb)[1]["jax.grad"]
        sources[MOVED] = {k: np.asarray(v) * moved_cotangent(0) for k, v in moved.items()}
    return sources, losses


def check_case(
    checked: Checked,
    cfg: ModelConfig,
    X: np.ndarray,
    Y: np.ndarray,
    batch_size: int = 32,
    seed: int = 0,
    with_torch: bool | None = None,
    hook: Any = None,
) -> tuple[Report, dict[str, dict[str, np.ndarray]]]:
    """Build the seeded case from (X, Y) and compare every way on it: the report, and the
    sources it judged (a model's hints read them)."""
    if with_torch is None:
        with_torch = torch_available()
    case = make_case(cfg, X, Y, batch_size, seed, init=checked.init)
    with check_context(cfg.dtype):
        sources, losses = gradient_sources(checked, cfg, case, with_torch, hook)
    rows = judge_rows(sources, rules(checked, cfg, batch_size), cfg.dtype)
    report = make_report(cfg.dtype, batch_size, seed, WAYS, rows, losses, cfg.model)
    return report, sources


def close(a: np.ndarray, b: np.ndarray) -> bool:
    """The same tensor, up to far more than rounding and far less than a mistake: how a hint
    tells a known mistake's result from the learner's (or the backward's)."""
    return a.shape == b.shape and np.abs(a - b).max() <= 1e-3 * max(np.abs(b).max(), 1e-30)
