"""The report of named rows: a model check's or a grade's table, its summary and its JSON.

One row per tensor in the model's backward order, a cell per way (named.py judges them); the
table shows a column per group of ways (the README's three: jax.grad, torch autograd, each
other; `wide`: every way, with error/bound), each cell the worst verdict of its ways and the
maxdiff of its two sources. The summary names the first failing tensor, where the error enters.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any, NamedTuple

from jaxninja.parity.verdict import LOW_FACTOR, LOW_FLOOR_ULPS, PASSING, SEVERITY

# the README's three ways, as the default table's columns: column title -> its ways
THREE_WAYS = {
    "(1) jax.grad": ("jax.grad",),
    "(2) torch autograd": ("torch",),
    "(3) each other": ("fused", "manual", "torch manual", "layer vjp", "grad~torch"),
}
TORCH_SOURCES = ("torch autograd", "torch manual")


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
            f"float64 within {LOW_FACTOR:g}x the row's own sensitivity; float32 against a float64 "
            f"truth, within {LOW_FACTOR:g}x\nfloat32 autodiff's own error there + "
            f"{LOW_FLOOR_ULPS:g} ulps ('f32 noise': autodiff's relative error)"
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
