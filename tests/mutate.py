"""Rebuild a function from its source with one piece of it replaced: how the tests put a known
mistake into a backward (or fill an exercise file's blanks) without a copy of the whole code."""

from __future__ import annotations

import inspect
import textwrap
from collections.abc import Callable


def mutate(fn: Callable, old: str, new: str) -> Callable:
    """`fn` with `old` (which must occur exactly once in its source) replaced by `new`, compiled
    in fn's own module namespace (its decorators, a jit included, are applied again)."""
    fn = inspect.unwrap(fn)
    source = textwrap.dedent(inspect.getsource(fn))
    assert source.count(old) == 1, f"{old!r} occurs {source.count(old)} times in {fn.__name__}"
    namespace = dict(fn.__globals__)
    exec(compile(source.replace(old, new), f"<{fn.__name__} mutated>", "exec"), namespace)
    return namespace[fn.__name__]
