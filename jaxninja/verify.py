"""The three ways of checking the hand-written backward, and the notebook's `cmp` table.

On one seeded case (model.make_case), the JAX manual backward (atomic, exercise 1) is compared
  - with jax.grad (autodiff.py), for every parameter and intermediate;
  - with PyTorch autograd (torch_ref), the same 26 tensors;
and the results with each other: fused vs atomic, JAX manual vs torch_ref's manual backward,
jax.grad vs PyTorch autograd, which closes the triangle. Without PyTorch the torch ways are skipped.

Tolerances (`tolerance_ok`): float64 holds maxdiff below 1e-10 of the row's largest reference
magnitude; float32 holds `allclose(rtol=1e-5, atol=1e-7)` and also maxdiff below 1e-5 of the row's
scale, which is the tighter bound for rows of small magnitude. Rows that are zero in exact
arithmetic (their gradient is rounding noise) are held to an absolute bound instead: 1e-14
(float64) or 1e-7 (float32), or, where the terms that cancel into them are large (a batch of 2
can make d hprebn ~10), 1e-12 (float64) or 1e-5 (float32) of those terms' largest magnitude.
"""

from __future__ import annotations

import importlib.util
import json
from contextlib import ExitStack
from typing import Any, NamedTuple

import jax
import numpy as np

from jaxninja.autodiff import grads_autodiff
from jaxninja.backward import backward_atomic, loss_and_grads
from jaxninja.config import ModelConfig
from jaxninja.model import GRAD_ORDER, Case, forward_chunked, forward_loss, make_case, to_device

# Zero in exact arithmetic: d loss/d logit_maxes (softmax is shift invariant) and d loss/d b1
# (BatchNorm subtracts the batch mean, so b1 cannot change the loss); each is a sum of the
# gradient named here, whose magnitude sets the size of the rounding noise left over.
EXACT_ZERO = {"logit_maxes": "norm_logits", "b1": "hprebn"}
ZERO_ABS = {"float64": 1e-14, "float32": 1e-7}
ZERO_REL = {"float64": 1e-12, "float32": 1e-5}

# way name -> (candidate, reference); each a gradient source below
WAYS = {
    "jax.grad": ("manual", "jax.grad"),
    "torch": ("manual", "torch autograd"),
    "fused": ("fused", "manual"),
    "torch manual": ("manual", "torch manual"),
    "grad~torch": ("jax.grad", "torch autograd"),
}
TORCH_SOURCES = ("torch autograd", "torch manual")


def torch_available() -> bool:
    return importlib.util.find_spec("torch") is not None


def _absmax(a: np.ndarray) -> float:
    return float(np.abs(a).max()) if a.size else 0.0


def tolerance_ok(
    name: str, got: np.ndarray, ref: np.ndarray, dtype: str, source_scale: float = 0.0
) -> bool:
    """Whether `got` is within this row's tolerance of `ref` (see the module docstring).

    `source_scale` is, for an EXACT_ZERO row, the largest magnitude of the gradient it sums.
    """
    maxdiff = _absmax(got - ref)
    if name in EXACT_ZERO:
        return maxdiff <= max(ZERO_ABS[dtype], ZERO_REL[dtype] * source_scale)
    scale = _absmax(ref)
    if dtype == "float64":
        return maxdiff <= 1e-10 * scale
    return bool(np.allclose(got, ref, rtol=1e-5, atol=1e-7)) and maxdiff <= 1e-5 * scale


# Below this batch size, float32 cannot meet the tolerances: BatchNorm over 2 or 3 examples
# cancels nearly all of dhprebn, leaving float32 rounding of the cancelled terms (~1e-6).
FLOAT32_MIN_BATCH = 4


class Report(NamedTuple):
    dtype: str
    batch_size: int
    rows: list[dict[str, Any]]  # {"name", "shape", way: {"exact", "approx", "maxdiff"} | None}
    losses: dict[str, float]  # chunked, compact, fused (and torch): one loss, computed each way
    loss_ok: bool
    skipped: list[str]  # ways not run, with the reason in `skip_reason`
    skip_reason: str | None

    @property
    def ok(self) -> bool:
        return self.loss_ok and all(r[w]["approx"] for r in self.rows for w in WAYS if r[w])

    def to_json(self) -> str:
        return json.dumps({"ok": self.ok, **self._asdict()}, indent=2)


def gradient_sources(case: Case, eps: float, with_torch: bool) -> tuple[dict, dict[str, float]]:
    """Every way's gradients of the case as numpy dicts keyed by tensor name, and the losses."""
    p = to_device(case.params)
    loss_chunked, values = forward_chunked(p, case.Xb, case.Yb, eps=eps)
    loss_fused, fused = loss_and_grads(p, case.Xb, case.Yb, eps=eps)
    sources = {
        "manual": backward_atomic(p, values, case.Xb, case.Yb, eps=eps),
        "fused": fused,
        "jax.grad": grads_autodiff(p, case.Xb, case.Yb, eps=eps),
    }
    losses = {
        "chunked": float(loss_chunked),
        "compact": float(forward_loss(p, case.Xb, case.Yb, eps=eps)),
        "fused": float(loss_fused),
    }
    if with_torch:
        import torch_ref

        torch_loss, _, sources["torch autograd"] = torch_ref.autograd(*case, eps=eps)
        sources["torch manual"] = torch_ref.manual_backward(*case, eps=eps)
        losses["torch"] = torch_loss
    return jax.tree.map(np.asarray, sources), losses


def compare(sources: dict[str, dict[str, np.ndarray]], dtype: str) -> list[dict[str, Any]]:
    """One row per tensor in the notebook's cmp order; a way absent for a row is None."""
    rows = []
    for name in GRAD_ORDER:
        row: dict[str, Any] = {"name": name, "shape": list(sources["manual"][name].shape)}
        for way, (cand, ref) in WAYS.items():
            if cand not in sources or ref not in sources or name not in sources[cand]:
                row[way] = None
                continue
            got, want = sources[cand][name], sources[ref][name]
            source = sources[ref].get(EXACT_ZERO.get(name, ""))
            row[way] = {
                "exact": bool(np.array_equal(got, want)),
                "approx": tolerance_ok(
                    name, got, want, dtype, _absmax(source) if source is not None else 0.0
                ),
                "maxdiff": _absmax(got - want),
            }
        rows.append(row)
    return rows


def run_check(
    cfg: ModelConfig,
    X: np.ndarray,
    Y: np.ndarray,
    batch_size: int = 32,
    seed: int = 0,
    with_torch: bool | None = None,
) -> Report:
    """Build the seeded case from (X, Y) and compare every way on it."""
    if with_torch is None:
        with_torch = torch_available()
    case = make_case(cfg, X, Y, batch_size, seed)
    with ExitStack() as stack:
        # full float32 matmuls (GPU TF32 would break parity); x64 only where asked for
        stack.enter_context(jax.default_matmul_precision("highest"))
        if cfg.dtype == "float64":
            stack.enter_context(jax.enable_x64(True))
        sources, losses = gradient_sources(case, cfg.eps, with_torch)
    rows = compare(sources, cfg.dtype)
    skipped = (
        [] if with_torch else [w for w, pair in WAYS.items() if set(pair) & set(TORCH_SOURCES)]
    )
    reason = None if with_torch else "PyTorch is not installed: pip install 'jaxninja[torch]'"
    ref = losses["chunked"]
    loss_bound = (1e-12 if cfg.dtype == "float64" else 1e-6) * max(1.0, abs(ref))
    loss_ok = all(abs(v - ref) <= loss_bound for v in losses.values())
    return Report(cfg.dtype, batch_size, rows, losses, loss_ok, skipped, reason)


def format_table(report: Report) -> str:
    """The notebook's cmp, one row per tensor, one (exact, approx, maxdiff) group per way."""
    header = f"{'tensor':15s} {'shape':12s}" + "".join(f" | {w:^24s}" for w in WAYS)
    sub = f"{'':15s} {'':12s}" + " | exact approx  maxdiff  " * len(WAYS)
    lines = [header, sub, "-" * len(header)]
    for r in report.rows:
        cells = []
        for w in WAYS:
            c = r[w]
            if c is None:
                cells.append(f" | {'skipped' if w in report.skipped else '-':^24s}")
            else:
                cells.append(f" | {c['exact']!s:5s} {c['approx']!s:6s} {c['maxdiff']:9.2e} ")
        shape = "(" + ", ".join(map(str, r["shape"])) + ")"
        lines.append(f"{r['name']:15s} {shape:12s}" + "".join(cells))
    lines.append("-" * len(header))
    lines.append("losses: " + ", ".join(f"{k} {v:.12g}" for k, v in report.losses.items()))
    exact = {
        w: sum(1 for r in report.rows if r[w] and r[w]["exact"])
        for w in WAYS
        if any(r[w] for r in report.rows)
    }
    n_rows = {w: sum(1 for r in report.rows if r[w]) for w in exact}
    lines.append("bit-exact rows: " + ", ".join(f"{w} {exact[w]}/{n_rows[w]}" for w in exact))
    if report.skipped:
        lines.append(f"skipped: {', '.join(report.skipped)} ({report.skip_reason})")
    failed = sorted({r["name"] for r in report.rows for w in WAYS if r[w] and not r[w]["approx"]})
    if report.dtype == "float32" and report.batch_size < FLOAT32_MIN_BATCH:
        lines.append(
            f"note: float32 at batch size < {FLOAT32_MIN_BATCH} is ill-conditioned (BatchNorm over "
            "so few examples cancels nearly all of dhprebn): use --dtype float64"
        )
    if not report.loss_ok:
        failed.append("loss")
    if report.ok:
        lines.append(
            f"OK: {len(report.rows)} tensors, {sum(n_rows.values())} comparisons within "
            f"tolerance, dtype {report.dtype}"
        )
    else:
        lines.append(f"FAILED: {', '.join(failed)} outside tolerance, dtype {report.dtype}")
    return "\n".join(lines)
