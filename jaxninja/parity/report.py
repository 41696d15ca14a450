"""The parity report: every row of every seed and way, its verdict, and the table that shows it.

The table (`format`) has one line per row, the worst of its seeds, failing rows first, and fits
100 columns; under it the failing rows' messages and the summary, which names the first failing
row in data-flow order (taps, outputs, then gradients from the output back) and the first tap
where the sides differ: where the difference enters.
"""

from __future__ import annotations

import json
from typing import Any, NamedTuple

from jaxninja.parity.verdict import PASSING, SEVERITY

NAME_WIDTH = 27  # at most: with it a line is 98 columns
MAX_MESSAGES = 8


class Report(NamedTuple):
    dtype: str
    seeds: tuple[int, ...]
    ways: list[dict[str, str]]  # {"way", "other", "reference"}
    rows: list[dict[str, Any]]  # judge()'s rows, with "way", "seed" and "index" (data-flow order)

    @property
    def ok(self) -> bool:
        return not self.failures()

    def failures(self) -> list[dict[str, Any]]:
        """Every failing row of every seed, the first to fail first."""
        order = {w["way"]: i for i, w in enumerate(self.ways)}
        bad = [r for r in self.rows if r["verdict"] not in PASSING]
        return sorted(bad, key=lambda r: (order[r["way"]], r["index"], self.seeds.index(r["seed"])))

    @property
    def first_failure(self) -> dict[str, Any] | None:
        failures = self.failures()
        return _brief(failures[0]) if failures else None

    @property
    def first_tap(self) -> dict[str, Any] | None:
        """The first tap (value, or gradient) where the sides differ."""
        taps = [r for r in self.failures() if r["tap"] is not None]
        return _brief(taps[0]) if taps else None

    def format(self) -> str:
        lines = []
        for way in self.ways:
            lines += _table(self, way)
        return "\n".join([*lines, *_summary(self)])

    def to_json(self) -> str:
        head = {"ok": self.ok, "first_failure": self.first_failure, "first_tap": self.first_tap}
        return json.dumps({**head, **self._asdict()}, indent=2)


def _brief(row: dict[str, Any]) -> dict[str, Any]:
    keys = ("way", "seed", "name", "tap", "verdict", "message")
    return {k: row[k] for k in keys}


def _ratio(row: dict[str, Any]) -> float:
    cells = [c for c in (row["float64"], row["low"]) if c and c["bound"] > 0]
    return max((c["error"] / c["bound"] for c in cells), default=0.0)


def _worst_per_row(report: Report, way: str) -> list[dict[str, Any]]:
    """Each row's worst seed (severity, then error over bound), failing rows first."""
    best: dict[str, dict[str, Any]] = {}
    for r in report.rows:
        if r["way"] != way:
            continue
        old = best.get(r["name"])
        key = (SEVERITY.index(r["verdict"]), -_ratio(r))
        if old is None or key < (SEVERITY.index(old["verdict"]), -_ratio(old)):
            best[r["name"]] = r
    rows = sorted(best.values(), key=lambda r: r["index"])
    return [r for r in rows if r["verdict"] not in PASSING] + [
        r for r in rows if r["verdict"] in PASSING
    ]


def _num(x: float | None) -> str:
    return f"{x:7.1e}" if x is not None else " " * 7


def _line(r: dict[str, Any], width: int) -> str:
    name = r["name"] if len(r["name"]) <= width else "…" + r["name"][-width + 1 :]
    shape = r["shapes"][1] or r["shapes"][0]
    shape_text = "" if shape is None else str(tuple(shape))
    word = r["verdict"] if r["verdict"] in PASSING else r["verdict"].upper()
    f64, low = r["float64"] or {}, r["low"] or {}
    return (
        f"{name:{width}s} {shape_text[:11]:11s} {word:9s} | {_num(f64.get('error'))} "
        f"{_num(f64.get('bound'))} | {_num(low.get('error'))} {_num(low.get('ref_error'))} "
        f"{_num(low.get('bound'))} | {r['seed']}"
    ).rstrip()


def _table(report: Report, way: dict[str, str]) -> list[str]:
    other, ref = way["other"], way["reference"]
    low = report.dtype if report.dtype != "float64" else "-"
    title = f"{way['way']}: {other} against {ref} (the reference), {report.dtype}, seeds "
    rows = _worst_per_row(report, way["way"])
    width = min(NAME_WIDTH, max([3, *(len(r["name"]) for r in rows)]))
    head = (
        f"{'row':{width}s} {'shape':11s} {'verdict':9s} | {'f64 diff':>7s} {'bound':>7s} | "
        f"{low[:7]:>7s} {'ref':>7s} {'bound':>7s} | seed"
    )
    lines = [title + ", ".join(map(str, report.seeds)), head, "-" * len(head)]
    lines += [_line(r, width) for r in rows]
    lines.append("-" * len(head))
    lines.append(f"f64 diff: {other} - {ref}, in float64; worst seed shown")
    lines.append(f"{low}: {other}'s distance from the truth ({ref} in float64); ref: {ref}'s own")
    failing = [r for r in rows if r["verdict"] not in PASSING]
    lines += [f"  {r['name']}: {r['message']}"[:100] for r in failing[:MAX_MESSAGES]]
    if len(failing) > MAX_MESSAGES:  # the table above has them all
        lines.append(f"  ... and {len(failing) - MAX_MESSAGES} more failing rows (in the table)")
    return lines


def _summary(report: Report) -> list[str]:
    lines = []
    if one := sorted({r["name"] for r in report.rows if r["verdict"] == "one-sided"}):
        lines.append(f"taps on one side only (listed, not compared): {', '.join(one)}"[:100])
    if noise := sorted({r["name"] for r in report.rows if r["verdict"] == "noise"}):
        lines.append(
            f"noise: {report.dtype} cannot tell right from wrong in {len(noise)} rows "
            f"({', '.join(noise)})"[:92]
            + ": float64 judged them"
        )
    first = report.first_failure
    if first is None:
        n = len({(r["way"], r["name"]) for r in report.rows})
        lines.append(f"OK: {n} rows x {len(report.seeds)} seeds agree, dtype {report.dtype}")
        return lines
    lines.append(
        f"FAILED: first failing row: {first['name']} ({first['way']}, seed {first['seed']})"
    )
    lines.append(f"  {first['verdict']}: {first['message']}"[:100])
    if tap := report.first_tap:
        where = "the difference enters" + (" the backward" if tap["name"].startswith("d ") else "")
        lines.append(f"{where} at `{tap['tap']}`")
    return lines
