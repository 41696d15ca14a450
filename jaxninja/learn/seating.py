"""A learner's layer backwards graded in every seat of a model: what exercises 5 (the WaveNet,
grader_wavenet.py) and 6 (the GPT, grader_gpt.py) share.

An exercise names its functions by the kind of layer they stand in for (`bn`, `layernorm`); a
model puts them in every seat of that kind, so each output is named by the row of the model's
check where it appears. The model's backward then runs on the check's case with them, and its
rows are compared as the model's check compares them (check/sources.py): with jax.grad, PyTorch
autograd, the model's own backward and each layer's jax.vjp fed the same gradient of its output.

A function's output still `...` is not written, and the model's own flows on in its place, so
each function (each output) can be graded alone. One of the wrong shape or dtype is a shape
error in its row, and the backward goes on with the model's, so the first failure is where the
mistake is. What is compared against is the learner-independent part of the check's sources,
kept by references.py.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping
from functools import partial
from pathlib import Path
from typing import Any, NamedTuple

import jax
import numpy as np

from jaxninja.check import sources as checked_sources
from jaxninja.check.sources import upcast
from jaxninja.config import ModelConfig
from jaxninja.errors import UsageError
from jaxninja.learn import candidate, references
from jaxninja.parity.named import F64, judge_rows
from jaxninja.parity.sides import check_context
from jaxninja.parity.table import make_report

# the learner's rows against every other source, as a model check's ways against the manual one
WAYS = {
    "jax.grad": ("yours", "jax.grad"),
    "torch": ("yours", "torch autograd"),
    "manual": ("yours", "manual"),
    "layer vjp": ("yours", "layer vjp"),
}


class Seat(NamedTuple):
    """Where a row of the learner's comes from: a layer (`bn2`, `h.0.ln_1`), its kind, which
    of the function's outputs (`dx`, `dgamma`, ...)."""

    layer: str
    kind: str
    output: str


class Seated(NamedTuple):
    """An exercise of layer backwards, and the model it seats them in."""

    exercise: int
    functions: dict[str, tuple[str, int]]  # kind -> (the learner's function's name, its arity)
    signatures: dict[str, str]  # kind -> `name(args) -> outputs`, as a grade shows it
    checked: checked_sources.Checked  # the model's check: its rows, their order and shapes
    seats: Callable[[ModelConfig], dict[str, Seat]]  # the rows the functions write, in order
    # (cfg, fns) -> (params, Xb, Yb) -> (loss, the gradients as they flowed, the learner's
    # outputs by row, what the hints need)
    run: Callable[[ModelConfig, dict[str, Callable]], Callable]
    # (report, sources, references, what the run kept) -> a hint for the first failure, or None
    hint: Callable[..., str | None]


def first_seated(report, mine: dict[str, Seat]) -> tuple[str, Seat, str] | None:
    """(name, seat, verdict) of a case's first failure where it is one of the learner's rows
    (`mine`: the exercise's seats), else None: where a hint may look."""
    first = report.first_failure()
    if first is None or first["name"] not in mine:
        return None
    return first["name"], mine[first["name"]], first["verdict"]


def signature(seated: Seated) -> str:
    return "\n".join(seated.signatures.values())  # a line each, as a grade shows them


def functions(seated: Seated, given: Any) -> dict[str, Callable]:
    """The learner's functions by kind, from a module (or any object holding them by name) or
    a mapping by name; each checked for its number of arguments."""
    found = {}
    for kind, (name, arity) in seated.functions.items():
        fn = given.get(name) if isinstance(given, Mapping) else getattr(given, name, None)
        if not callable(fn):
            where = getattr(given, "__file__", None) or type(given).__name__
            names = " and ".join(n for n, _ in seated.functions.values())
            raise UsageError(
                f"exercise {seated.exercise} grades {names}; {Path(where).name} has no function "
                f"{name}"
            )
        candidate.check_arity(fn, arity, seated.exercise, seated.signatures[kind])
        found[kind] = fn
    return found


def array(x: Any, what: str, exercise: int) -> Any:
    """x, where it is an array or `...` (not written); anything else is a one-line error."""
    if x is not Ellipsis and not hasattr(x, "shape"):
        raise UsageError(f"exercise {exercise}: {what} is a {type(x).__name__}, not an array")
    return x


def outputs(out: Any, n: int, exercise: int, signature: str) -> tuple:
    """A function's n outputs, `...` for each where it returned `...` alone."""
    if out is Ellipsis:
        return (...,) * n
    if not isinstance(out, tuple | list) or len(out) != n:
        got = f"{len(out)} values" if isinstance(out, tuple | list) else type(out).__name__
        raise UsageError(f"exercise {exercise}: {signature}, but yours returned {got}")
    return tuple(out)


def fits(dx: Any, own: jax.Array) -> bool:
    """Whether the learner's output can flow on in the model's: written, its shape and dtype."""
    return dx is not Ellipsis and dx.shape == own.shape and dx.dtype == own.dtype


def flowing(dx: Any, own: jax.Array) -> jax.Array:
    """What flows on to the layer below: the learner's dx, or the model's where theirs is blank
    or of another shape or dtype (its own row says so)."""
    return dx if fits(dx, own) else own


def _runs(cfg: ModelConfig, params) -> dict[str, tuple[ModelConfig, Any, Any]]:
    """Each run of a case: its source suffix -> (its config, parameters, x64 context): the
    dtype under test's, and for a float32 case float64's on the parameters upcast."""
    runs = {"": (cfg, params, contextlib.nullcontext)}
    if cfg.dtype != "float64":
        cfg64 = checked_sources.in_dtype(cfg, "float64")
        runs[F64] = (cfg64, upcast(params), partial(jax.enable_x64, True))
    return runs


def _sources(seated: Seated, fns: dict[str, Callable], refs: references.References, timeout):
    """The learner's sources of one case (their model's rows, `yours`, and each layer's vjp of
    them, `layer vjp`, in each run), the loss, their outputs by row, what the hints need, and
    the notes. Their code runs under the time limit; the layer vjps, the model's own jitted
    function (compiled once, not with theirs), after it."""
    case, runs, outs, sources = refs.case, _runs(refs.cfg, refs.case.params), {}, {}
    first_fn = next(iter(fns.values()))  # any: their file is the same
    with candidate.watching(first_fn, seated.exercise, timeout) as notes:
        for run, (cfg, params, x64) in runs.items():
            with x64():
                params = jax.device_put(params)
                outs[run] = candidate.run_once(seated.run(cfg, fns), params, case.Xb, case.Yb)
    for run, (cfg, params, x64) in runs.items():
        _, flow, seen, _ = outs[run]
        with x64():
            vjps = seated.checked.layer_vjps(cfg, jax.device_put(params), case.Xb, case.Yb, flow)
        flow, seen, vjps = jax.tree.map(np.asarray, (flow, seen, vjps))
        sources |= {"yours" + run: {**flow, **seen}, "layer vjp" + run: vjps}
    loss, _, seen, kept = jax.tree.map(np.asarray, outs[""])
    return sources, float(loss), seen, kept, notes


def grade_case(
    seated: Seated, fns: dict[str, Callable], refs: references.References, timeout: float | None
):
    """(report, the rows written, a hint, notes) of one case, as grader._grade_case: the
    learner's model runs in float64 on the case upcast and in the dtype under test."""
    cfg, case = refs.cfg, refs.case
    with check_context(cfg.dtype):
        yours, loss, seen, kept, notes = _sources(seated, fns, refs, timeout)
    sources = {**refs.sources, **yours}
    mine, order = seated.seats(cfg), seated.checked.grad_order(cfg)
    blank = {row for row in mine if row not in seen}
    sticks = [s for s in checked_sources.SOURCES if s in sources]
    rules = checked_sources.rules(seated.checked, cfg, len(case.Yb), WAYS, [*sticks, "yours"])
    rules = rules._replace(rows_of={**rules.rows_of, "yours": [r for r in order if r not in blank]})
    compared = judge_rows(sources, rules, cfg.dtype)
    for row in compared:
        row["written"] = row["name"] not in blank
    losses = {**refs.losses, "yours": loss}
    report = make_report(cfg.dtype, len(case.Yb), refs.seed, WAYS, compared, losses, cfg.model)
    return report, seen, seated.hint(report, sources, refs, kept), notes
