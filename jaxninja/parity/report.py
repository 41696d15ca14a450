"""The parity report: every row of every seed and way, its verdict, and the table that shows it.

The table (`format`) has one line per row, the worst of its seeds, failing rows first, and fits
100 columns; under it the failing rows' messages and the summary, which names the first failing
row in data-flow order (taps, outputs, then gradients from the output back) and the first tap
where the sides differ: where the difference enters.
"""

from __future__ import annotations

import json
import textwrap
from typing import Any, NamedTuple

from jaxninja.parity.verdict import LOW16, PASSING, SEVERITY

WIDTH = 100  # columns: a name longer than its room gets a line of its own
MAX_MESSAGES = 8


class Report(NamedTuple):
    dtype: str
    seeds: tuple[int, ...]
    ways: list[dict[str, str]]  # {"way", "other", "reference"}
    rows: list[dict[str, Any]]  # judge()'s rows, with "way", "seed" and "index" (data-flow order)
    notes: tuple[str, ...] = ()  # what the table alone does not say (a side's dtype, ...)

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
        """The first failing row, at its worst seed (the one the table shows)."""
        return self._worst_of_first(self.failures())

    @property
    def first_tap(self) -> dict[str, Any] | None:
        """The first tap (value, or gradient) where the sides differ, at its worst seed."""
        return self._worst_of_first([r for r in self.failures() if r["tap"] is not None])

    @staticmethod
    def _worst_of_first(failures: list[dict[str, Any]]) -> dict[str, Any] | None:
        if not failures:
            return None
        first = failures[0]
        same = [r for r in failures if (r["way"], r["name"]) == (first["way"], first["name"])]
        return _brief(min(same, key=_badness))

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


def _badness(row: dict[str, Any]) -> tuple[int, float]:
    """Worst first: by severity, then error over bound."""
    return SEVERITY.index(row["verdict"]), -_ratio(row)


def _worst_per_row(report: Report, way: str) -> list[dict[str, Any]]:
    """Each row's worst seed (severity, then error over bound), failing rows first."""
    best: dict[str, dict[str, Any]] = {}
    for r in report.rows:
        if r["way"] != way:
            continue
        old = best.get(r["name"])
        if old is None or _badness(r) < _badness(old):
            best[r["name"]] = r
    rows = sorted(best.values(), key=lambda r: r["index"])
    return [r for r in rows if r["verdict"] not in PASSING] + [
        r for r in rows if r["verdict"] in PASSING
    ]


def _num(x: float | None) -> str:
    return f"{x:7.1e}" if x is not None else " " * 7


def _shape(r: dict[str, Any]) -> str:
    shape = r["shapes"][1] or r["shapes"][0]
    return "" if shape is None else str(tuple(shape))


def _word(r: dict[str, Any]) -> str:
    return r["verdict"] if r["verdict"] in PASSING else r["verdict"].upper()


def _line(r: dict[str, Any], widths: tuple[int, int, int]) -> list[str]:
    """The row's line; a name longer than its column goes whole on a line of its own above."""
    width, shape_width, word_width = widths
    f64, low = r["float64"] or {}, r["low"] or {}
    name = r["name"] if len(r["name"]) <= width else ""
    line = (
        f"{name:{width}s} {_shape(r):{shape_width}s} {_word(r):{word_width}s} | "
        f"{_num(f64.get('error'))} {_num(f64.get('bound'))} | {_num(low.get('error'))} "
        f"{_num(low.get('ref_error'))} {_num(low.get('bound'))} | {r['seed']}"
    ).rstrip()
    return [line] if name else [r["name"], line]


def _widths(rows: list[dict[str, Any]]) -> tuple[int, int, int]:
    """(name, shape, verdict) column widths: shapes and verdicts whole, names what is left of
    WIDTH columns (at least 12; a longer name gets a line of its own)."""
    shape_width = max([11, *(len(_shape(r)) for r in rows)])
    word_width = max([9, *(len(_word(r)) for r in rows)])
    room = WIDTH - 54 - shape_width - word_width
    width = min(max([3, *(len(r["name"]) for r in rows)]), max(room, 12))
    return width, shape_width, word_width


def _wrapped(text: str, indent: str = "  ") -> list[str]:
    return textwrap.wrap(text, WIDTH, subsequent_indent=indent + "  ", initial_indent=indent)


def _table(report: Report, way: dict[str, str]) -> list[str]:
    other, ref = way["other"], way["reference"]
    low = {"float64": "-", "bfloat16": "bf16", "float16": "fp16"}.get(report.dtype, report.dtype)
    title = f"{way['way']}: {other} against {ref} (the reference), {report.dtype}, seeds "
    rows = _worst_per_row(report, way["way"])
    widths = _widths(rows)
    head = (
        f"{'row':{widths[0]}s} {'shape':{widths[1]}s} {'verdict':{widths[2]}s} | "
        f"{'f64 diff':>7s} {'bound':>7s} | {low[:7]:>7s} {'ref':>7s} {'bound':>7s} | seed"
    )
    lines = [title + ", ".join(map(str, report.seeds)), head, "-" * len(head)]
    for r in rows:
        lines += _line(r, widths)
    lines.append("-" * len(head))
    fixed = {f"{d} for {other if 'ref_error' in c else ref}" for r in rows
             if (d := (c := r["float64"] or {}).get("dtype"))}  # fmt: skip
    narrower = f" ({', '.join(sorted(fixed))}: the dtype it computes in)" if fixed else ""
    lines.append(f"f64 diff: {other} - {ref}, in float64{narrower}; worst seed shown")
    measure = "RMS distance" if report.dtype in LOW16 else "distance"
    if low != "-":  # a float64 run has no columns of its dtype under test to explain
        lines.append(
            f"{report.dtype}: {other}'s {measure} from the truth ({ref} in float64); "
            f"ref: {ref}'s own"
        )
    failing = [r for r in rows if r["verdict"] not in PASSING]
    for r in failing[:MAX_MESSAGES]:
        lines += _wrapped(f"{r['name']}: {r['message']}")
    if len(failing) > MAX_MESSAGES:  # the table above has them all
        lines.append(f"  ... and {len(failing) - MAX_MESSAGES} more failing rows (in the table)")
    return lines


def _listed(head: str, names: list[str], most: int = 8) -> list[str]:
    """`head` and the first `most` of `names` (then how many more), wrapped, no name cut."""
    more = f", and {len(names) - most} more" if len(names) > most else ""
    return _wrapped(head + ", ".join(names[:most]) + more, "")


def _summary(report: Report) -> list[str]:
    lines = []
    for note in report.notes:
        first, *rest = note.split("\n")
        lines += _wrapped("note: " + first, "")
        for more in rest:
            lines += _wrapped(more)
    if one := sorted({r["name"] for r in report.rows if r["verdict"] == "one-sided"}):
        lines += _listed("taps on one side only (listed, not compared): ", one)
    if noise := sorted({r["name"] for r in report.rows if r["verdict"] == "noise"}):
        head = f"noise: {report.dtype} cannot tell right from wrong here, float64 judged them: "
        lines += _listed(head, noise)
    first = report.first_failure
    if first is None:
        n = len({(r["way"], r["name"]) for r in report.rows})
        lines.append(f"OK: {n} rows x {len(report.seeds)} seeds agree, dtype {report.dtype}")
        return lines
    lines.append(
        f"FAILED: first failing row: {first['name']} ({first['way']}, seed {first['seed']})"
    )
    lines += _wrapped(f"{first['verdict']}: {first['message']}")
    if tap := report.first_tap:
        where = "the difference enters" + (" the backward" if tap["name"].startswith("d ") else "")
        lines.append(f"{where} at `{tap['tap']}`")
    return lines
