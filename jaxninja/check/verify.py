"""The three ways of checking a hand-written backward, and the notebook's `cmp` table.

On one seeded case (model.make_case) every gradient source is computed: the atomic manual
backward (exercise 1), the fused one (exercises 2 + 3), jax.grad, PyTorch autograd and PyTorch's
manual backward (torch_ref). A *way* compares two sources row by row, in the notebook's order:
  (1) manual vs jax.grad;  (2) manual vs PyTorch autograd;
  (3) against each other: fused vs atomic, JAX manual vs PyTorch manual, jax.grad vs autograd.
Without PyTorch the torch ways are skipped, and said so.

Each cell is first checked for what values cannot hide: a gradient missing from a source, a
shape other than its tensor's (a `(64,)` against `(1, 64)` would broadcast in `got - ref`),
another dtype, NaN or inf. Then the values:
  - float64: the two sources within 1e-10 of the row's scale (the rows that are zero in exact
    arithmetic: 1e-14 absolute, or 1e-12 of the gradient they sum where that is large);
  - float32: each source's distance from a float64 truth (jax.grad on the upcast inputs) is held
    to a bound calibrated on that input: F32_FACTOR times float32 autodiff's own distance from
    the truth, plus F32_FLOOR_ULPS ulps of the row's scale. A backward is right when it is about
    as accurate as autodiff is there. Where that bound reaches F32_CANNOT_TELL of the row's
    scale, float32 cannot tell right from wrong: the row says `noise` (neither pass nor fail)
    and float64 is the judge.
"""

from __future__ import annotations

import importlib.util
import json
from collections.abc import Callable, Iterable
from contextlib import ExitStack
from functools import partial
from typing import Any, NamedTuple

import jax
import numpy as np

from jaxninja.config import ModelConfig
from jaxninja.models.mlp import (
    GRAD_ORDER,
    Case,
    forward,
    forward_chunked,
    make_case,
    to_device,
)
from jaxninja.models.mlp_autodiff import grads_autodiff
from jaxninja.models.mlp_backward import FUSED_ROWS, backward_atomic, backward_fused

# Zero in exact arithmetic: d loss/d logit_maxes (softmax is shift invariant) and d loss/d b1
# (BatchNorm subtracts the batch mean, so b1 cannot change the loss). Each is a sum, over the
# axis named, of the gradient named; that gradient's size sets the size of the rounding left over.
EXACT_ZERO = {"logit_maxes": ("norm_logits", 1), "b1": ("hprebn", 0)}
ZERO_ABS = 1e-14  # float64, absolute
ZERO_REL = 1e-12  # float64, of the summed gradient's largest magnitude
F64_REL = 1e-10  # float64, of the row's largest reference magnitude

# float32, against the float64 truth. The factor: the fused formulas reorder the arithmetic
# (dhprebn's one expression cancels three batch-sized terms), so on ill-conditioned inputs they
# are several times less accurate than autodiff while being right; benchmarks/check_sweep.py
# measures the largest ratio over 560 cases and prints the margin left. The floor: a few ulps of
# the row's scale, for rows where autodiff happens to round (nearly) exactly.
F32_FACTOR = 16.0
F32_FLOOR_ULPS = 4.0
F32_EPS = float(np.finfo(np.float32).eps)
# float32 cannot tell right from wrong where its bound is this much of the row's scale: a mistake
# that moves the row by less would pass unseen, so neither verdict would mean anything.
F32_CANNOT_TELL = 1e-2

AUTODIFF = ("jax.grad", "torch autograd")
TORCH_SOURCES = ("torch autograd", "torch manual")
# the rows each source makes
ROWS_OF = {
    "manual": GRAD_ORDER,
    "fused": FUSED_ROWS,
    "jax.grad": GRAD_ORDER,
    "torch autograd": GRAD_ORDER,
    "torch manual": GRAD_ORDER,
}
# way name -> (candidate, reference)
WAYS = {
    "jax.grad": ("manual", "jax.grad"),
    "torch": ("manual", "torch autograd"),
    "fused": ("fused", "manual"),
    "torch manual": ("manual", "torch manual"),
    "grad~torch": ("jax.grad", "torch autograd"),
}
# the README's three ways, as the default table's columns: column title -> its ways
THREE_WAYS = {
    "(1) jax.grad": ("jax.grad",),
    "(2) torch autograd": ("torch",),
    "(3) each other": ("fused", "manual", "torch manual", "layer vjp", "grad~torch"),
}
PASSING = ("ok", "noise")  # verdicts that do not fail a check ("noise": float32 cannot tell)
# the order in which a cell's verdicts are shown when a column merges several ways: worst first
SEVERITY = ("missing", "shape", "dtype", "nonfinite", "wrong", "noise", "ok")


def torch_available() -> bool:
    return importlib.util.find_spec("torch") is not None


def _absmax(a: np.ndarray) -> float:
    return float(np.abs(a).max()) if a.size else 0.0


def _shape(shape: Iterable[int]) -> str:
    return str(tuple(shape))


class Report(NamedTuple):
    dtype: str
    batch_size: int
    seed: int
    ways: dict[str, tuple[str, str]]  # way -> (candidate source, reference source)
    rows: list[dict[str, Any]]  # {"name", "shape", "noise", "cannot_tell", "written", way: cell}
    losses: dict[str, float]  # chunked, compact (and torch): one loss, computed each way
    loss_ok: bool
    skipped: list[str]  # ways not run, with the reason in `skip_reason`
    skip_reason: str | None
    model: str = "mlp"  # whose backward: config.MODELS

    @property
    def ok(self) -> bool:
        return self.loss_ok and not self.failures()

    def failures(self) -> list[tuple[str, str, dict[str, Any]]]:
        """(tensor, way, cell) of every failing cell, in the notebook's order."""
        return [
            (r["name"], w, r[w])
            for r in self.rows
            for w in self.ways
            if r.get(w) and r[w]["verdict"] not in PASSING
        ]

    def first_failure(self) -> dict[str, Any] | None:
        """Where the error enters: the first failing tensor in the notebook's order."""
        failures = self.failures()
        if not failures:
            return None
        name, way, cell = failures[0]
        return {"name": name, "way": way, "verdict": cell["verdict"], "message": cell["message"]}

    def cannot_tell(self) -> list[str]:
        return [r["name"] for r in self.rows if r.get("cannot_tell")]

    def to_json(self) -> str:
        return json.dumps(
            {"ok": self.ok, "first_failure": self.first_failure(), **self._asdict()}, indent=2
        )


def fused_gradients(
    params: dict[str, jax.Array], Xb: jax.Array, Yb: jax.Array, eps: float, **parts: Callable
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """The compact forward and the fused backward, exercise 3 optionally swapped for `parts`
    (backward_fused's `dhprebn_fn`)."""
    loss_value, cache = forward(params, Xb, Yb, eps)
    return loss_value, backward_fused(cache, **parts)


_fused_jit = jax.jit(fused_gradients, static_argnames="eps")


def gradient_sources(
    case: Case,
    eps: float,
    with_torch: bool,
    atomic: Callable = backward_atomic,
    **parts: Callable,
) -> tuple[dict[str, dict[str, np.ndarray]], dict[str, float], dict[str, tuple[int, ...]]]:
    """Every source's gradients of the case as numpy dicts keyed by tensor name, the losses, and
    each tensor's shape. `atomic` stands in for exercise 1 (params, v, Xb, Yb) -> dict, `parts`
    for exercise 3 in the fused backward. A float32 case also gets the float64 "truth"."""
    p = to_device(case.params)
    loss_chunked, values = forward_chunked(p, case.Xb, case.Yb, eps=eps)
    if parts:  # a fresh trace: another's code is never run from a stale compile
        fused_fn = jax.jit(lambda q, x, y: fused_gradients(q, x, y, eps, **parts))
    else:
        fused_fn = partial(_fused_jit, eps=eps)
    loss_compact, fused = fused_fn(p, case.Xb, case.Yb)
    sources = {
        "manual": atomic(p, values, case.Xb, case.Yb),
        "fused": fused,
        "jax.grad": grads_autodiff(p, case.Xb, case.Yb, eps=eps),
    }
    losses = {"chunked": float(loss_chunked), "compact": float(loss_compact)}
    shapes = {k: tuple(x.shape) for k, x in {**values, **p}.items()}
    if next(iter(case.params.values())).dtype == np.float32:
        sources["truth"] = float64_truth(case, eps)
    if with_torch:
        import torch_ref

        torch_loss, _, sources["torch autograd"] = torch_ref.autograd(*case, eps=eps)
        sources["torch manual"] = torch_ref.manual_backward(*case, eps=eps)
        losses["torch"] = torch_loss
    return jax.tree.map(np.asarray, sources), losses, shapes


def float64_truth(case: Case, eps: float) -> dict[str, jax.Array]:
    """jax.grad in float64 on the case's inputs upcast: what float32 results are judged against."""
    params64 = {k: np.asarray(v, np.float64) for k, v in case.params.items()}
    with jax.enable_x64(True):
        return jax.tree.map(np.asarray, grads_autodiff(to_device(params64), case.Xb, case.Yb, eps))


def _source_problem(
    source: str, grads: dict[str, np.ndarray], name: str, shape: tuple, dtype: str
) -> tuple[str, str] | None:
    """(verdict, message) for what a value comparison could not see, or None."""
    if name not in grads:
        return "missing", f"{source}: d{name} is missing from its results"
    x = grads[name]
    if tuple(x.shape) != shape:
        return "shape", f"{source}: d{name} has shape {_shape(x.shape)}, {name} is {_shape(shape)}"
    if x.dtype != np.dtype(dtype):
        return "dtype", f"{source}: d{name} is {x.dtype}, {name} is {dtype}"
    if not np.isfinite(x).all():
        bad = int((~np.isfinite(x)).sum())
        return "nonfinite", f"{source}: d{name} holds {bad} NaN or inf of {x.size}"
    return None


def _row_scale(name: str, grads: dict[str, np.ndarray]) -> float:
    """The magnitude a row's errors are measured against: its own, or for a row that is zero in
    exact arithmetic, that of the gradient it sums."""
    return _absmax(grads[EXACT_ZERO[name][0]] if name in EXACT_ZERO else grads[name])


def float32_noise(name: str, sources: dict[str, dict[str, np.ndarray]]) -> tuple[float, float]:
    """(float32 autodiff's largest distance from the truth on this row, the row's scale).

    A row that is zero in exact arithmetic is a sum of rounding errors: autodiff can cancel them
    exactly by the order it adds them in, so its noise there is taken as the summed gradient's
    noise times the count of terms summed, the most that a right backward's errors can add up to.
    """
    truth = sources["truth"]
    autodiff = [sources[s] for s in AUTODIFF if s in sources]
    noise = max(_absmax(a[name] - truth[name]) for a in autodiff)
    if name in EXACT_ZERO:
        summed, axis = EXACT_ZERO[name]
        terms = truth[summed].shape[axis]
        noise = max(noise, terms * max(_absmax(a[summed] - truth[summed]) for a in autodiff))
    return noise, _row_scale(name, truth)


def float32_bound(noise: float, scale: float) -> float:
    """How far from the truth a float32 source may be: F32_FACTOR x autodiff's own distance,
    plus F32_FLOOR_ULPS ulps of the row's scale."""
    return F32_FACTOR * noise + F32_FLOOR_ULPS * F32_EPS * scale


def _value_cell(
    name: str, got: np.ndarray, ref: np.ndarray, dtype: str, ref_grads: dict, f32: dict | None
) -> dict[str, Any]:
    """Verdict, error and bound of two well-formed gradients (see the module docstring)."""
    maxdiff = _absmax(got - ref)
    if f32 is not None:  # float32: both against the truth
        truth = f32["truth"][name]
        error = max(_absmax(got - truth), _absmax(ref - truth))
        bound = f32["bound"]
    else:
        error = maxdiff
        if name in EXACT_ZERO:
            bound = max(ZERO_ABS, ZERO_REL * _row_scale(name, ref_grads))
        else:
            bound = F64_REL * _absmax(ref)
    if f32 is not None and f32["cannot_tell"]:
        verdict, message = "noise", f"float32 cannot tell here: d{name} judged in float64 only"
    elif error <= bound:
        verdict, message = "ok", None
    else:
        verdict = "wrong"
        message = f"d{name} is off by {error:.3g}, more than {bound:.3g}"
    return {
        "verdict": verdict,
        "message": message,
        "exact": bool(np.array_equal(got, ref)),
        "maxdiff": maxdiff,
        "error": error,
        "bound": bound,
    }


def compare_row(
    name: str,
    shape: tuple[int, ...],
    sources: dict[str, dict[str, np.ndarray]],
    dtype: str,
    ways: dict[str, tuple[str, str]],
    rows_of: dict[str, Iterable[str]],
) -> dict[str, Any]:
    """One row of the table: the tensor, float32's noise there, and a cell per way."""
    row: dict[str, Any] = {
        "name": name, "shape": list(shape), "noise": None, "cannot_tell": False, "written": True,
    }  # fmt: skip
    f32 = None
    if "truth" in sources:
        noise, scale = float32_noise(name, sources)
        bound = float32_bound(noise, scale)
        row["noise"] = noise / scale if scale else 0.0
        row["cannot_tell"] = bound >= F32_CANNOT_TELL * scale and scale > 0
        f32 = {"truth": sources["truth"], "bound": bound, "cannot_tell": row["cannot_tell"]}
    for way, (cand, ref) in ways.items():
        if not all(s in sources and name in rows_of[s] for s in (cand, ref)):
            row[way] = None
            continue
        problem = _source_problem(cand, sources[cand], name, shape, dtype) or _source_problem(
            ref, sources[ref], name, shape, dtype
        )
        if problem:
            got, want = sources[cand].get(name), sources[ref].get(name)
            row[way] = {
                "verdict": problem[0],
                "message": problem[1],
                "shapes": [None if x is None else list(x.shape) for x in (got, want)],
            }
            continue
        got, want = sources[cand][name], sources[ref][name]
        row[way] = {
            **_value_cell(name, got, want, dtype, sources[ref], f32),
            "shapes": [list(got.shape), list(want.shape)],
        }
    return row


def compare(
    sources: dict[str, dict[str, np.ndarray]],
    shapes: dict[str, tuple[int, ...]],
    dtype: str,
    ways: dict[str, tuple[str, str]] = WAYS,
    rows: Iterable[str] = GRAD_ORDER,
    rows_of: dict[str, Iterable[str]] = ROWS_OF,
) -> list[dict[str, Any]]:
    """One row per tensor of `rows` (the notebook's cmp order); a way is None for a row that one
    of its sources does not make (`rows_of`)."""
    return [compare_row(name, shapes[name], sources, dtype, ways, rows_of) for name in rows]


def check_context(dtype: str) -> ExitStack:
    """What every check runs under: full float32 matmuls (a GPU's TF32 would break parity), x64
    only for float64, and rank promotion allowed, so a `(64,)` where `(1, 64)` belongs reaches
    the table as a shape error instead of raising inside the backward."""
    stack = ExitStack()
    stack.enter_context(jax.default_matmul_precision("highest"))
    stack.enter_context(jax.numpy_rank_promotion("allow"))
    if dtype == "float64":
        stack.enter_context(jax.enable_x64(True))
    return stack


def run_check(
    cfg: ModelConfig,
    X: np.ndarray,
    Y: np.ndarray,
    batch_size: int = 32,
    seed: int = 0,
    with_torch: bool | None = None,
    atomic: Callable = backward_atomic,
    **parts: Callable,
) -> Report:
    """Build the seeded case from (X, Y) and compare every way on it.

    `atomic` and `parts` (`dhprebn_fn`) put other code in the seats of exercises 1 and 3 (the
    mistake catalogue's tests)."""
    if with_torch is None:
        with_torch = torch_available()
    case = make_case(cfg, X, Y, batch_size, seed)
    with check_context(cfg.dtype):
        sources, losses, shapes = gradient_sources(case, cfg.eps, with_torch, atomic, **parts)
    return make_report(
        cfg.dtype, batch_size, seed, WAYS, compare(sources, shapes, cfg.dtype), losses
    )


def make_report(
    dtype: str,
    batch_size: int,
    seed: int,
    ways: dict[str, tuple[str, str]],
    rows: list[dict[str, Any]],
    losses: dict[str, float],
    model: str = "mlp",
) -> Report:
    """The report of compared rows: the losses checked, the ways PyTorch's absence skipped."""
    with_torch = "torch" in losses
    skipped = (
        [] if with_torch else [w for w, pair in ways.items() if set(pair) & set(TORCH_SOURCES)]
    )
    reason = None if with_torch else "PyTorch is not installed: pip install 'jaxninja[torch]'"
    ref = next(iter(losses.values()))  # the first forward's: the others must agree with it
    loss_bound = (1e-12 if dtype == "float64" else 1e-6) * max(1.0, abs(ref))
    loss_ok = all(abs(v - ref) <= loss_bound for v in losses.values())
    return Report(dtype, batch_size, seed, ways, rows, losses, loss_ok, skipped, reason, model)


# --- the table --------------------------------------------------------------------------------


def _worst(cells: list[dict[str, Any]]) -> dict[str, Any]:
    return min(cells, key=lambda c: SEVERITY.index(c["verdict"]))


def _cell_text(cell: dict[str, Any] | None, skipped: bool, wide: bool) -> str:
    if cell is None:
        return "skipped" if skipped else "-"
    word = cell["verdict"] if cell["verdict"] in PASSING else cell["verdict"].upper()
    if "maxdiff" not in cell:  # a problem before the values: the word says which
        return word
    text = f"{word:8s}{cell['maxdiff']:9.2e}"
    if wide:
        ratio = cell["error"] / cell["bound"] if cell["bound"] else float("inf")
        text += f" {ratio:6.2f}"
    return text


def format_table(report: Report, wide: bool = False) -> str:
    """The table and its summary: the verdict, led by the first failing tensor."""
    return "\n".join([*table_lines(report, wide), *_summary(report)])


def table_lines(report: Report, wide: bool = False) -> list[str]:
    """The notebook's cmp: one row per tensor; a column per way (the three of the README, or
    with `wide` every way, with error/bound), each cell a verdict and the maxdiff."""
    columns = {w: (w,) for w in report.ways} if wide else THREE_WAYS
    f32 = report.dtype == "float32"
    width = 24 if wide else 18
    w_name = max([14, *(len(r["name"]) for r in report.rows)])  # a stack's `embedding.weight`
    w_shape = max([11, *(len(_shape(r["shape"])) for r in report.rows)])
    head = f"{'tensor':{w_name}s} {'shape':{w_shape}s}" + (f" {'f32 noise':>9s}" if f32 else "")
    header = (head + "".join(f" | {c:{width}s}" for c in columns)).rstrip()
    lines = [header, "-" * len(header)]
    for r in report.rows:
        line = f"{r['name']:{w_name}s} {_shape(r['shape']):{w_shape}s}"
        if f32:
            line += f" {r['noise']:9.1e}"
        for ways in columns.values():
            cells = [r[w] for w in ways if r.get(w)]
            skipped = any(w in report.skipped for w in ways)
            text = _cell_text(_worst(cells) if cells else None, skipped, wide)
            line += f" | {text if r['written'] else 'not written':{width}s}"
        lines.append(line.rstrip())
    lines.append("-" * len(header))
    if report.dtype == "float32":
        lines.append(
            f"float32 judged against a float64 truth: within {F32_FACTOR:g}x float32 autodiff's "
            f"own error there + {F32_FLOOR_ULPS:g} ulps\n('f32 noise': autodiff's relative error)"
        )
    if not wide:
        lines.append("each cell: the worst verdict of its ways and its maxdiff; --wide: every way")
    return lines


def _summary(report: Report) -> list[str]:
    lines = ["losses: " + ", ".join(f"{k} {v:.12g}" for k, v in report.losses.items())]
    counted = [w for w in report.ways if any(r.get(w) for r in report.rows)]
    exact = {w: sum(1 for r in report.rows if r[w] and r[w].get("exact")) for w in counted}
    n_rows = {w: sum(1 for r in report.rows if r[w]) for w in counted}
    lines.append("bit-exact rows: " + ", ".join(f"{w} {exact[w]}/{n_rows[w]}" for w in counted))
    if report.skipped:
        lines.append(f"skipped: {', '.join(report.skipped)} ({report.skip_reason})")
    if unjudged := report.cannot_tell():
        lines.append(
            f"noise: float32 cannot tell right from wrong in {len(unjudged)} rows here "
            f"({', '.join(unjudged)}): --dtype float64 judges them"
        )
    if not report.loss_ok:
        lines.append("FAILED: the losses of the forward passes disagree")
    if first := report.first_failure():
        names = list(dict.fromkeys(name for name, _, _ in report.failures()))
        lines.append(f"FAILED: first wrong tensor: {first['name']}: {first['message']}")
        lines.append(f"failing rows, in the notebook's order: {', '.join(names)}")
    elif report.ok:
        n = sum(n_rows.values())
        lines.append(f"OK: {len(report.rows)} tensors, {n} comparisons, dtype {report.dtype}")
    return lines
