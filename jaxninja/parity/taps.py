"""`tap(name, x)`: a named intermediate, compared across the two sides inside `compare`.

Outside `compare` no recorder is set and `tap` returns `x` at once: no cost, no trace effect.
Inside, the side being run sets one. JAX: the tap records its value and adds a zero-valued
perturbation, whose gradient is exactly the gradient at the tap (autodiff.py's trick). PyTorch:
it records a detached copy and, through a tensor hook, the gradient. A name used again within one
call becomes `name#2`, `name#3`, the same on both sides.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

from jaxninja.errors import UsageError

T = TypeVar("T")
_recorder: Any = None  # the side being run inside compare, or None


def tap(name: str, x: T) -> T:
    """Return `x`; inside `parity.compare`, its value and gradient become rows named `name`.
    Use what it returns (`h = tap("h", h)`): in JAX the gradient is that of the returned value."""
    return x if _recorder is None else _recorder.tap(name, x)


@contextmanager
def recording(recorder: Any) -> Iterator[Any]:
    global _recorder
    previous, _recorder = _recorder, recorder
    try:
        yield recorder
    finally:
        _recorder = previous


def _is_torch(x: Any) -> bool:
    return type(x).__module__.startswith("torch")


class _Names:
    """Tap names made unique in call order."""

    def __init__(self) -> None:
        self.seen: Counter[str] = Counter()

    def key(self, name: Any) -> str:
        if not isinstance(name, str):
            raise UsageError(f"parity.tap: name {name!r} is not a string")
        self.seen[name] += 1
        n = self.seen[name]
        return name if n == 1 else f"{name}#{n}"


class JaxTaps(_Names):
    """Taps of a JAX run: `perturb` maps names to the zero arrays to add (none in the pass that
    only learns the taps' names and shapes); `values` collects what each tap returned."""

    def __init__(self, perturb: dict[str, Any]) -> None:
        super().__init__()
        self.perturb = perturb
        self.values: dict[str, Any] = {}

    def tap(self, name: str, x: Any) -> Any:
        key = self.key(name)
        if _is_torch(x) or not hasattr(x, "shape"):
            return x
        if key in self.perturb:
            x = x + self.perturb[key]
        self.values[key] = x
        return x


class TorchTaps(_Names):
    def __init__(self) -> None:
        super().__init__()
        self.values: dict[str, Any] = {}
        self.grads: dict[str, Any] = {}

    def tap(self, name: str, x: Any) -> Any:
        key = self.key(name)
        if not _is_torch(x):
            return x
        self.values[key] = x.detach().clone()
        if x.requires_grad:
            x.register_hook(lambda g: self.grads.__setitem__(key, g.detach().clone()))
        return x
