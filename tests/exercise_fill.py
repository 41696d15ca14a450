"""Fill an exercise file's blanks (`dX = ...  # TODO`) from the project's own solution: each
blank gets the lines of the solution that end with the last assignment of its gradient."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

from jaxninja.backward import backward_atomic
from jaxninja.model import GRAD_ORDER

BLANK = re.compile(r"^(\s*)d(\w+) = \.\.\.  # TODO$")


def solution_blocks() -> dict[str, list[str]]:
    """Tensor name -> the solution's lines (dedented to 4 spaces) that compute its gradient."""
    lines = inspect.getsource(inspect.unwrap(backward_atomic)).splitlines()
    start = next(i for i, line in enumerate(lines) if line.strip() == "n, V = logits.shape") + 1
    end = next(i for i, line in enumerate(lines) if line.strip() == "return {")
    rest, blocks = lines[start:end], {}
    for name in GRAD_ORDER:
        last = max(i for i, line in enumerate(rest) if line.strip().startswith(f"d{name} = "))
        blocks[name], rest = rest[: last + 1], rest[last + 1 :]
    assert not rest, rest
    return blocks


def fill(text: str, blocks: dict[str, list[str]]) -> str:
    out = []
    for line in text.splitlines():
        m = BLANK.match(line)
        out.extend(blocks[m.group(2)] if m else [line])
    return "\n".join(out) + "\n"


def filled_ex1(folder: Path, exercise_text: str, only: tuple[str, ...] = GRAD_ORDER) -> Path:
    """ex1_backward.py with the blanks of `only` filled; the others left blank."""
    blocks = {k: v for k, v in solution_blocks().items() if k in only}
    path = folder / "ex1_filled.py"
    kept = {k: [f"    d{k} = ...  # TODO"] for k in GRAD_ORDER if k not in only}
    path.write_text(fill(exercise_text, {**blocks, **kept}))
    return path
