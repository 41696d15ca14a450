"""Sides whose float64 run is not float64 throughout: found, named, and where possible widened.

Code that fixes its own computation dtype (flax's `Dense(dtype=jnp.float32)`, HF's
`softmax(..., dtype=torch.float32)`, a LayerNorm that upcasts with `.astype(jnp.float32)`) runs
in float32 inside parity's float64 run. Its float64 run is then no float64 truth, and its
difference from a float64 side is float32 rounding, not a port bug. Found here:
  - JAX: every equation of the program's jaxpr (nested ones too) with a float64 operand and a
    narrower float result (`convert_element_type` to float32, `dot_general` with a narrower
    `preferred_element_type`, ...), named with its source line as JAX records it;
  - PyTorch: the same test on every aten op, through a TorchDispatchMode. A torch cast
    (`aten._to_copy`) to a narrower float is *widened* instead: the op keeps float64, so the
    side computes the same function in float64 and float64 judges it. Other narrowing ops
    (a `copy_` into a float32 buffer) cannot be widened and make the side fixed;
  - any side: a narrower float among the float64 run's outputs.
A fixed side is judged against the truth in the dtype it computes in (verdict.py).
"""

from __future__ import annotations

import os
import sys
import sysconfig
import traceback
from functools import lru_cache
from typing import Any, NamedTuple

import numpy as np

Frame = tuple[str, int, str]  # file, line, function


class Narrowing(NamedTuple):
    """A side's float64 run narrowed to `dtype` (the narrowest it reached), first at `where`."""

    dtype: str
    where: str
    widened: bool = False  # a torch cast, skipped: the side ran in float64 after all


def library_dirs() -> tuple[str, ...]:
    """Frames under these are not the user's: the numerics libraries and parity itself."""
    names = ("jax", "jaxlib", "numpy", "torch", "jaxninja.parity", "contextlib", "functools")
    mods = [sys.modules[n] for n in names if n in sys.modules]
    return tuple(os.path.dirname(m.__file__) + os.sep for m in mods if m.__file__)


def _installed(path: str) -> bool:
    return path.startswith(sysconfig.get_paths()["purelib"])


def _show(frame: Frame) -> str:
    path, line, fn = frame
    purelib = sysconfig.get_paths()["purelib"] + os.sep
    shown = path.removeprefix(purelib) if _installed(path) else os.path.relpath(path)
    return f"{shown}:{line} ({fn.split('.<locals>')[0]})"


def where(frames: list[Frame]) -> str:
    """The innermost frame outside the numerics libraries (frames innermost first), and, when
    that is in an installed package (flax), the user's own frame that called it."""
    skip = library_dirs()
    mine = [f for f in frames if not f[0].startswith(skip) and not f[0].startswith("<")]
    if not mine:
        return "an unknown line"
    text = _show(mine[0])
    if _installed(mine[0][0]):
        user = next((f for f in mine if not _installed(f[0])), None)
        text += f", from {_show(user)}" if user else ""
    return text


def _bits(dtype: Any) -> int:
    return np.dtype(dtype).itemsize * 8


def _is_float(dtype: Any) -> bool:
    import jax.numpy as jnp

    return jnp.issubdtype(dtype, jnp.floating)


def narrowest(found: list[Narrowing]) -> Narrowing | None:
    """What a side's float64 run computed in: the narrowest narrowing not widened (the first
    found among equals), else the narrowest widened one (the run was float64 after all)."""
    return min(found, key=lambda n: (n.widened, _bits(n.dtype)), default=None)


def _subjaxprs(params: dict) -> list:
    out, todo = [], list(params.values())
    while todo:
        v = todo.pop()
        if hasattr(v, "eqns"):
            out.append(v)
        elif hasattr(v, "jaxpr") and hasattr(v.jaxpr, "eqns"):
            out.append(v.jaxpr)
        elif isinstance(v, tuple | list):
            todo.extend(v)
    return out


def jax_narrowings(jaxpr: Any) -> list[Narrowing]:
    """Every equation of `jaxpr` (a Jaxpr or ClosedJaxpr, nested ones too) with a float64 operand
    and a narrower float result."""
    found, todo = [], [getattr(jaxpr, "jaxpr", jaxpr)]
    while todo:
        for eqn in todo.pop().eqns:
            todo.extend(_subjaxprs(eqn.params))
            ins = [v.aval.dtype for v in eqn.invars if hasattr(v.aval, "dtype")]
            if not any(_is_float(d) and _bits(d) == 64 for d in ins):
                continue
            for v in eqn.outvars:
                d = getattr(v.aval, "dtype", None)
                if d is not None and _is_float(d) and _bits(d) < 64:
                    frames = [
                        (f.file_name, f.line_num, f.function_name)
                        for f in eqn.source_info.traceback.frames
                    ] if eqn.source_info.traceback else []  # fmt: skip
                    where_ = f"{eqn.primitive.name} at {where(frames)}"
                    found.append(Narrowing(np.dtype(d).name, where_))
                    break
    return found


def output_narrowings(outs: list[tuple[str, Any]]) -> list[Narrowing]:
    """A narrower float among a float64 run's outputs (path, array-like with a dtype)."""
    found = []
    for path, x in outs:
        name = str(x.dtype).removeprefix("torch.")
        if name in ("float32", "bfloat16", "float16"):
            found.append(Narrowing(name, f"its output {path} is {name}"))
    return found


def _stack() -> list[Frame]:
    return [(f.filename, f.lineno, f.name) for f in reversed(traceback.extract_stack())]


@lru_cache(maxsize=1)
def _torch_mode_class() -> type:
    import torch
    from torch.utils._python_dispatch import TorchDispatchMode
    from torch.utils._pytree import tree_flatten

    narrow = (torch.float32, torch.bfloat16, torch.float16)
    to_copy = torch.ops.aten._to_copy.default

    class Narrowings(TorchDispatchMode):
        """Records (and, for casts, widens) every aten op that narrows a float64 operand."""

        def __init__(self) -> None:
            super().__init__()
            self.found: list[Narrowing] = []

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            kwargs = kwargs or {}
            leaves = tree_flatten((args, kwargs))[0]
            if not any(isinstance(t, torch.Tensor) and t.dtype == torch.float64 for t in leaves):
                return func(*args, **kwargs)
            name = str(func.overloadpacket.__name__)
            if func is to_copy and kwargs.get("dtype") in narrow:
                dtype = str(kwargs["dtype"]).removeprefix("torch.")
                self.found.append(Narrowing(dtype, f"{name} at {where(_stack())}", True))
                return func(*args, **{**kwargs, "dtype": torch.float64})
            out = func(*args, **kwargs)
            for t in tree_flatten(out)[0]:
                if isinstance(t, torch.Tensor) and t.dtype in narrow:
                    dtype = str(t.dtype).removeprefix("torch.")
                    self.found.append(Narrowing(dtype, f"{name} at {where(_stack())}"))
                    break
            return out

    return Narrowings


def torch_watch() -> Any:
    """A fresh TorchDispatchMode that widens torch's narrowing casts and records every narrowing
    op in `.found`; enter it around a side's float64 forward."""
    return _torch_mode_class()()


_HOW = {  # how to let float64 judge such a side
    "jax": "flax modules with dtype=None, jnp.promote_types(x.dtype, jnp.float32) for a fixed cast",
    "manual": "jnp.promote_types(x.dtype, jnp.float32) for a fixed cast",
    "torch": "x.to(torch.promote_types(x.dtype, torch.float32)) for a fixed cast",
    "numpy": "np.promote_types(x.dtype, np.float32) for a fixed dtype",
}


def fixed_note(label: str, n: Narrowing, role: str, ref: str, kind: str) -> str:
    """What the report says of a side whose float64 run narrowed: where, how it is judged, what
    that leaves unseen, and how to let float64 judge it. `role`: "other" or "reference"."""
    head = f"{label} computes in {n.dtype} inside its float64 run: {n.where}"
    if n.widened:
        return f"{head}\nparity kept float64 there (the cast skipped): float64 judges {label}"
    if role == "other":
        judged = f"judged against the truth ({ref} in float64) in {n.dtype}, by {n.dtype}'s rule"
    else:
        judged = f"no float64 truth: the sides must agree within its sensitivity in {n.dtype}"
    return (
        f"{head}\n{judged}; differences below {n.dtype}'s resolution go unseen. For float64 to "
        f"judge: {_HOW.get(kind, _HOW['jax'])}"
    )
