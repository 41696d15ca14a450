"""Grade a learner's own backward: the MLP's check (check/mlp.py) with their function in the seat
of exercise 1, 2 or 3; for exercise 5, the WaveNet's (grader_wavenet.py); for exercise 6, the
GPT's (grader_gpt.py).

`grade(fn, exercise)` runs `fn` on seeded cases (by default the notebook's batch of 32 and a
batch of 5 of another seed, so a batch size written in by hand, or a fit to one input, fails) and
compares what it returns with jax.grad, PyTorch autograd and the project's own backwards, row by
row in the notebook's order, under parity's verdicts (shapes first; float64, then float32 against a
float64 truth). `fn` is an argument, traced afresh on every call (a new jit each time), so an
edited function is never graded by a stale compile; what it is compared against does not depend
on it, and is computed once and kept (references.py). Running it is candidate.py's concern.

The signatures, one per exercise (the exercise files, `jaxninja exercises DIR`, hold them):
  1. fn(params, v, Xb, Yb) -> dict: `v` holds the 19 intermediates of `forward_chunked` by the
     notebook's names; return any of the 26 gradients, keyed by tensor name ("logprobs", ...,
     "C"), as the notebook's cmp calls name them. Rows not returned are "not written".
  2. fn(logits, Yb) -> dlogits
  3. fn(dhpreact, bngain, bnvar_inv, bnraw) -> dhprebn
  5. two functions, given as their module (or a mapping by name): part 5's layers' backwards,
     flatten_consecutive_backward(dout, n) -> dx and
     batchnorm_backward(dout, bnraw, bnvar_inv, gamma) -> (dx, dgamma, dbeta), graded in every
     seat of the WaveNet's stack (grader_wavenet.py)
  6. two functions, likewise: part 6's layers' backwards,
     layernorm_backward(dout, xhat, rstd, weight) -> (dx, dweight, dbias) and
     attention_backward(dy, q, k, v, att) -> (dq, dk, dv), graded in every seat of the GPT
     (grader_gpt.py)
A function that returns `...` (an unfilled exercise) has written nothing yet.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from pathlib import Path
from types import ModuleType
from typing import Any, NamedTuple

import jax
import numpy as np

from jaxninja.check import mlp as mlp_check
from jaxninja.check.sources import upcast
from jaxninja.config import check_batch_size, model_config
from jaxninja.data import resolve_data_path
from jaxninja.errors import UsageError
from jaxninja.learn import candidate, grader_gpt, grader_wavenet, hints, references, seating
from jaxninja.learn.candidate import DEFAULT_TIMEOUT, load_function, load_module, run_once
from jaxninja.models.mlp import GRAD_ORDER
from jaxninja.parity.named import F64, judge_rows
from jaxninja.parity.sides import check_context, torch_available
from jaxninja.parity.table import Report, make_report, table_lines

__all__ = ["EXERCISES", "Grade", "grade", "load_function", "load_module"]


class Exercise(NamedTuple):
    signature: str
    rows: tuple[str, ...]  # the tensors whose gradients it writes (exercises 5, 6: the model's say)


# the exercises of layer backwards, graded in every seat of their model (seating.py)
SEATED = {5: grader_wavenet.SEATED, 6: grader_gpt.SEATED}
EXERCISES = {
    1: Exercise("fn(params, v, Xb, Yb) -> dict of gradients by tensor name", GRAD_ORDER),
    2: Exercise("fn(logits, Yb) -> dlogits", ("logits",)),
    3: Exercise("fn(dhpreact, bngain, bnvar_inv, bnraw) -> dhprebn", ("hprebn",)),
    5: Exercise(grader_wavenet.SIGNATURE, ()),
    6: Exercise(grader_gpt.SIGNATURE, ()),
}
# (batch size, seed): the notebook's case, and a small odd batch of another seed
DEFAULT_CASES = ((32, 0), (5, 1))
# the candidate against every other source; a way is left out of a row a source does not make
GRADE_WAYS = {
    "jax.grad": ("yours", "jax.grad"),
    "torch": ("yours", "torch autograd"),
    "manual": ("yours", "manual"),
    "fused": ("yours", "fused"),
    "torch manual": ("yours", "torch manual"),
}


class Grade(NamedTuple):
    exercise: int
    function: str  # the function graded, as the learner named it
    reports: list[Report]  # one per case
    written: list[str]  # the rows the function returned, in the notebook's order
    hints: list[str | None]  # per case: what the first failure looks like, where we can tell
    notes: tuple[str, ...] = ()  # what the function's run showed beside the verdict (a print)
    rows: tuple[str, ...] = ()  # the rows the exercise writes, where not EXERCISES' (exercise 5)

    @property
    def ok(self) -> bool:
        """Right in every case, with something written: an unfilled file is not "OK"."""
        return bool(self.written) and all(r.ok for r in self.reports)

    @property
    def started(self) -> bool:
        return bool(self.written) or self.first_failing_case() is not None

    def hint(self) -> str | None:
        """The hint for the first failing case, where its failure looks like a known mistake."""
        i = self.first_failing_case()
        return None if i is None else self.hints[i]

    @property
    def of(self) -> int:
        return len(self.rows or EXERCISES[self.exercise].rows)

    def first_failing_case(self) -> int | None:
        return next((i for i, r in enumerate(self.reports) if not r.ok), None)

    def verdict(self) -> str:
        """One line: where the learner stands."""
        done = f"{len(self.written)} of {self.of} written"
        i = self.first_failing_case()
        if not self.started:
            return (
                f"NOT STARTED: {done}: nothing to grade yet; write a gradient where the file "
                "says `...  # TODO`, then grade again"
            )
        if i is None:
            rest = "" if len(self.written) == self.of else f" ({self.of - len(self.written)} to go)"
            cases = f"{len(self.reports)} case{'s' if len(self.reports) > 1 else ''}"
            return f"OK: {done}, all right in {cases}{rest}"
        report, first = self.reports[i], self.reports[i].first_failure()
        where = f"case {i + 1} (batch {report.batch_size}, seed {report.seed}, {report.dtype})"
        if first is None:
            return f"FAILED: {done}; in {where} the forward passes' losses disagree"
        kind = "shape error" if first["verdict"] == "shape" else "first wrong tensor"
        return f"FAILED: {done}; in {where}, {kind}: {first['name']}: {first['message']}"

    def format(self, wide: bool = False) -> str:
        i = self.first_failing_case()
        shown = self.reports[0 if i is None else i]
        lines = [f"exercise {self.exercise}: {self.function}", EXERCISES[self.exercise].signature]
        lines += table_lines(shown, wide)
        for k, report in enumerate(self.reports):
            if not report.ok:
                state = f"wrong at {(report.first_failure() or {'name': 'the loss'})['name']}"
            else:
                state = f"{len(self.written)} written, right" if self.written else "nothing yet"
            if report.ok and report.cannot_tell():
                state += f" (float32 cannot tell in {', '.join(report.cannot_tell())})"
            shown_here = " (the table above)" if report is shown and len(self.reports) > 1 else ""
            lines.append(
                f"case {k + 1} of {len(self.reports)}: batch {report.batch_size}, seed "
                f"{report.seed}, {report.dtype}: {state}{shown_here}"
            )
        if hint := self.hint():
            lines.append(f"hint: {hint}")
        lines += [f"note: {note}" for note in self.notes]
        lines.append(self.verdict())
        return "\n".join(lines)

    def to_json(self) -> str:
        cases = [
            {**json.loads(r.to_json()), "hint": h}
            for r, h in zip(self.reports, self.hints, strict=True)
        ]
        return json.dumps(
            {
                "ok": self.ok,
                "exercise": self.exercise,
                "function": self.function,
                "written": self.written,
                "of": self.of,
                "verdict": self.verdict(),
                "notes": list(self.notes),
                "cases": cases,
            },
            indent=2,
        )


def grade(
    fn: Callable | ModuleType | Mapping[str, Callable],
    exercise: int,
    *,
    dtype: str = "float32",
    seed: int | None = None,
    batch_size: int | None = None,
    n_hidden: int | None = None,
    n_embd: int | None = None,
    block_size: int | None = None,
    n_layer: int | None = None,
    n_head: int | None = None,
    data: str | None = None,
    with_torch: bool | None = None,
    name: str | None = None,
    timeout: float | None = DEFAULT_TIMEOUT,
) -> Grade:
    """Grade `fn` as exercise 1, 2, 3, 5 or 6 (signatures in the module docstring; for exercises
    5 and 6, a module or a mapping holding its two functions by name). With `seed` or
    `batch_size` given, that one case (the other from the defaults); else DEFAULT_CASES. The
    sizes left None are the exercise's model's for a check (the MLP's 3, 10, 64; the WaveNet's
    8, 24, 128; the GPT's block size 16, n_embd 64, 4 layers of 4 heads).

    What the function is compared against is computed once (references.py) and kept, in this
    process and on disk. `timeout`: seconds a case may spend in `fn` (tracing it included)
    before it is stopped; None for no limit."""
    if exercise not in EXERCISES:
        four = " (exercise 4 is training: jaxninja train --backward PATH.py:FUNCTION)"
        raise UsageError(
            f"exercise must be 1, 2, 3, 5 or 6, got {exercise!r}{four * (exercise == 4)}"
        )
    seated = SEATED.get(exercise)
    fns = seating.functions(seated, fn) if seated else _check_arity(fn, exercise)
    cases = _cases(seed, batch_size)
    model = seated.checked.model if seated else "mlp"
    given = {"block_size": block_size, "n_embd": n_embd, "n_hidden": n_hidden,
             "n_layer": n_layer, "n_head": n_head}  # fmt: skip
    given = {k: v for k, v in given.items() if v is not None}
    cfg = model_config(model, "check", vocab_size=2, dtype=dtype, **given)  # the sizes' checks
    sizes = references.Sizes(
        cfg.block_size, cfg.n_embd, cfg.n_hidden, dtype, model, cfg.n_layer, cfg.n_head
    )
    if with_torch is None:
        with_torch = torch_available()
    path = resolve_data_path(data)
    results = []
    for b, s in cases:
        refs = references.references(path, sizes, b, s, with_torch)
        if seated:
            results.append(seating.grade_case(seated, fns, refs, timeout))
        else:
            results.append(_grade_case(fn, exercise, refs, timeout))
    rows = tuple(seated.seats(cfg)) if seated else EXERCISES[exercise].rows
    reports = [r for r, _, _, _ in results]
    written = [k for k in rows if k in results[0][1]]
    notes = tuple(dict.fromkeys(n for _, _, _, ns in results for n in ns))
    hints = [h for _, _, h, _ in results]
    return Grade(exercise, name or _name(fn), reports, written, hints, notes, rows)


def _cases(seed: int | None, batch_size: int | None) -> tuple[tuple[int, int], ...]:
    if seed is None and batch_size is None:
        cases = DEFAULT_CASES
    else:
        cases = ((32 if batch_size is None else batch_size, 0 if seed is None else seed),)
    for b, _ in cases:
        check_batch_size(b)
    return cases


def _name(fn: Any) -> str:
    """How a grade names what it graded, where the caller does not: the function, the file."""
    if isinstance(fn, ModuleType):
        return Path(fn.__file__).name if getattr(fn, "__file__", None) else fn.__name__
    if isinstance(fn, Mapping):
        return ", ".join(getattr(f, "__qualname__", repr(f)) for f in fn.values())
    return getattr(fn, "__qualname__", repr(fn))


def _check_arity(fn: Callable, exercise: int) -> None:
    if not callable(fn):
        raise UsageError(f"exercise {exercise} needs a function, got {type(fn).__name__}")
    n_args = 4 if exercise in (1, 3) else 2
    candidate.check_arity(fn, n_args, exercise, EXERCISES[exercise].signature)


class _NotWritten(Exception):
    """An exercise-2/3 function that returned `...`: nothing written yet."""


def _grade_case(fn, exercise, refs: references.References, timeout):
    """(report, the rows written, a hint, notes) of one case against its references: the
    learner's function runs in float64 on the case upcast and in the dtype under test."""
    cfg, case = refs.cfg, refs.case
    sources = dict(refs.sources)
    with check_context(cfg.dtype), candidate.watching(fn, exercise, timeout) as notes:
        try:
            yours = _run_candidate(fn, exercise, case.params, refs.values[cfg.dtype], sources, case)
            sources["yours"] = jax.tree.map(np.asarray, yours)
            if cfg.dtype != "float64":
                with jax.enable_x64(True):
                    wide = upcast(case.params)
                    yours64 = _run_candidate(
                        fn, exercise, wide, refs.values["float64"], sources, case, F64
                    )
                sources["yours" + F64] = jax.tree.map(np.asarray, yours64)
        except _NotWritten:
            yours = sources["yours"] = sources["yours" + F64] = {}
    rows_of = {**mlp_check.ROWS_OF, "yours": tuple(yours)}
    rules = mlp_check.rules(refs.shapes, GRADE_WAYS, rows_of, EXERCISES[exercise].rows)
    compared = judge_rows(sources, rules, cfg.dtype)
    for row in compared:
        row["written"] = row["name"] in yours
    report = make_report(cfg.dtype, len(case.Yb), refs.seed, GRADE_WAYS, compared, refs.losses)
    bnraw = refs.values[cfg.dtype]["bnraw"]
    return report, yours, hints.hint(report, sources, case.Xb, bnraw), notes


def _run_candidate(fn, exercise, params, values, sources, case, run="") -> dict[str, jax.Array]:
    """The candidate's gradients by tensor name, traced afresh (a new jit wrapper each call).
    Exercises 2 and 3 get the forward's tensors (and the fused backward's dhpreact) as inputs;
    `run`: which of the sources' runs they come from ("" the dtype under test, or F64)."""
    p, values = jax.device_put(params), jax.device_put(values)  # no compile
    if exercise == 1:
        return run_once(lambda q, v, x, y: _written(fn(q, v, x, y)), p, values, case.Xb, case.Yb)
    if exercise == 2:
        args = (values["logits"], case.Yb)
    else:
        dhpreact = jax.device_put(sources["fused" + run]["hpreact"])
        args = (dhpreact, p["bngain"], values["bnvar_inv"], values["bnraw"])
    out = run_once(lambda *a: _one_array(fn(*a), exercise), *args)
    return {EXERCISES[exercise].rows[0]: out}


def _one_array(out: Any, exercise: int) -> Any:
    if out is Ellipsis:
        raise _NotWritten
    if not hasattr(out, "shape"):
        raise UsageError(
            f"exercise {exercise} returns one array ({EXERCISES[exercise].signature}); "
            f"yours returned {type(out).__name__}"
        )
    return out


def _written(out: Any) -> dict[str, Any]:
    """Exercise 1's return value, its blanks (`...`) left out; anything else is an error."""
    if not isinstance(out, dict):
        raise UsageError(
            f"exercise 1 returns a dict of gradients keyed by tensor name; yours returned "
            f"{type(out).__name__}"
        )
    unknown = [k for k in out if k not in GRAD_ORDER]
    if unknown:
        key = unknown[0]
        near = f" (the key of d{key[1:]} is {key[1:]!r})" if str(key)[1:] in GRAD_ORDER else ""
        raise UsageError(
            f"exercise 1 returned the key {key!r}{near}: the keys are the tensors' names, "
            f"{', '.join(GRAD_ORDER[:3])}, ..., {GRAD_ORDER[-1]}"
        )
    bad = [k for k, x in out.items() if x is not Ellipsis and not hasattr(x, "shape")]
    if bad:
        raise UsageError(f"d{bad[0]} is a {type(out[bad[0]]).__name__}, not an array")
    return {k: x for k, x in out.items() if x is not Ellipsis}
