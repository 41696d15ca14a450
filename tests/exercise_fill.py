"""Fill an exercise file's blanks (`dX = ...  # TODO`) from the project's own solution: each
blank gets the lines of the solution that end with the last assignment of its gradient.
Exercises 5's and 6's solutions (the learner's signatures are not the layers') are written out
here."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

from jaxninja.models.mlp import GRAD_ORDER
from jaxninja.models.mlp_backward import backward_atomic

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


# Exercise 5's solution, blank by blank: each function's `...  # TODO` lines, in file order.
EX5_SOLUTION = {
    "flatten_consecutive_backward": {
        "dx": [
            "    if dout.ndim == 2:  # the forward squeezed T // n == 1: that axis comes back",
            "        dout = dout[:, None, :]",
            "    B, Tn, Cn = dout.shape",
            "    dx = dout.reshape(B, Tn * n, Cn // n)",
        ],
    },
    "batchnorm_backward": {
        "dgamma": [
            "    dim = tuple(range(dout.ndim - 1))  # every axis but the channels'",
            "    n = dout.size // dout.shape[-1]  # the values a channel's statistics average",
            "    dgamma = (dout * bnraw).sum(dim)",
        ],
        "dbeta": ["    dbeta = dout.sum(dim)"],
        "dx": [
            "    dx = gamma * bnvar_inv / n * (n * dout - dbeta - n / (n - 1) * bnraw * dgamma)"
        ],
    },
}
# Exercise 6's, likewise.
EX6_SOLUTION = {
    "layernorm_backward": {
        "dweight": ["    dweight = (dout * xhat).sum((0, 1))"],
        "dbias": ["    dbias = dout.sum((0, 1))"],
        "dx": [
            "    dnorm = dout * weight  # (B, T, C)",
            "    dx = rstd * (dnorm - dnorm.mean(-1, keepdims=True)"
            " - xhat * (dnorm * xhat).mean(-1, keepdims=True))",
        ],
    },
    "attention_backward": {
        "datt": ["    datt = dy @ v.swapaxes(-1, -2)  # (B, nh, T, T)"],
        "dv": ["    dv = att.swapaxes(-1, -2) @ dy"],
        "dscores": [
            "    dscores = att * (datt - (datt * att).sum(-1, keepdims=True))",
            "    dscores = dscores * (1.0 / math.sqrt(q.shape[-1]))",
        ],
        "dq": ["    dq = dscores @ k"],
        "dk": ["    dk = dscores.swapaxes(-1, -2) @ q"],
    },
}
EX5_BLANK = re.compile(r"^(\s*)(\w+) = \.\.\.  # TODO$")


def fill_functions(text: str, solution: dict, only: tuple[str, ...] | None = None) -> str:
    """An exercise file with the blanks of the functions in `only` (all: None) filled from
    `solution`; the others left blank."""
    out, function = [], None
    for line in text.splitlines():
        if line.startswith("def "):
            function = line[4:].split("(")[0]
        m = EX5_BLANK.match(line)
        fill = m and function in (solution if only is None else only)
        out.extend(solution[function][m.group(2)] if fill else [line])
    return "\n".join(out) + "\n"


def fill_ex5(text: str, only: tuple[str, ...] = tuple(EX5_SOLUTION)) -> str:
    """ex5_wavenet.py with the blanks of the functions in `only` filled; the others left blank."""
    return fill_functions(text, EX5_SOLUTION, only)


def fill_ex6(text: str, only: tuple[str, ...] = tuple(EX6_SOLUTION)) -> str:
    """ex6_transformer.py with the blanks of the functions in `only` filled; the others blank."""
    return fill_functions(text, EX6_SOLUTION, only)
