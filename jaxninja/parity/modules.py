"""compare_modules: a whole torch `nn.Module` against its JAX port, a tap on every submodule,
no line of either model edited.

The weights are the torch module's own (every parameter and persistent buffer, by its
`state_dict` name): they are `compare`'s params, so both sides get the same values and every
weight's gradient is a row. The user's mapping says where each goes in the JAX model, as a path
("h_0/mlp/c_fc/kernel") or a path and a function of the torch array (`("...", lambda w: w.T)`,
differentiated through, so each gradient row stays in torch's layout).

Submodules are paired by name: the torch side taps through forward hooks, the JAX side as
jax_models.py says; names agree after normalisation (`.`, `/` and a `_3` suffix all separate:
`h.3.mlp`, `h_3/mlp`), and `name_map` renames JAX prefixes to torch ones for the rest. Each
submodule gives two taps: its output (`h.3.mlp`) and its inputs (`h.3.mlp (in)`), whose gradient
is the one through that submodule only (torch's side taps a clone of each input for that), so
the report's first failing tap names the submodule where the two sides part, forward or
backward. A submodule on one side only is listed under the table, not an error.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxninja.errors import UsageError
from jaxninja.parity import jax_models
from jaxninja.parity.assertion import assert_ok
from jaxninja.parity.engine import compare
from jaxninja.parity.jax_models import INPUT, JaxModel, Namer, tap_tree
from jaxninja.parity.report import Report
from jaxninja.parity.sides import torch_available
from jaxninja.parity.specs import Spec

Target = str | tuple[str, Callable] | None  # a JAX path, with a function of the torch array


def canonical(name: str) -> tuple[str, ...]:
    """`h.3.mlp`, `h_3/mlp` and `h/3/mlp` all give ("h", "3", "mlp")."""
    parts: list[str] = []
    for token in filter(None, re.split(r"[./]", name)):
        m = re.fullmatch(r"(.*[^_\d])_(\d+)", token)
        parts += [m.group(1), m.group(2)] if m else [token]
    return tuple(parts)


def compare_modules(
    torch_module: Any,
    jax_model: Any,
    weights: Mapping[str, Target],
    *args: Any,
    name_map: Mapping[str, str] | None = None,
    depth: int | None = None,
    seeds: Iterable[int] = (0, 1, 2),
    dtype: str = "float32",
    reference: str = "torch",
) -> Report:
    """Compare `torch_module(*args)` with the JAX model on the same inputs and weights (as
    `compare` does two functions), with a tap on every submodule of both.

    `weights` maps each torch `state_dict` name the JAX model uses to its JAX path, or to
    (path, fn) with fn a jnp function of the torch array (`lambda w: w.T`); None or absent: the
    JAX model has no counterpart. `name_map` maps torch submodule names (or prefixes) to the JAX
    ones that normalisation cannot pair; `depth` taps only names that many parts deep or less
    (`transformer.h.3` is 3)."""
    module = _torch_module(torch_module)
    if depth is not None and not (isinstance(depth, int) and depth >= 1):
        raise UsageError(f"depth {depth!r}: give a positive int (names that many parts deep)")
    model = jax_models.jax_model(jax_model, tuple(_shape_of(a) for a in args))
    params = _torch_weights(module)
    targets = assignment(weights, params, model, module)
    torch_names = {canonical(n): n for n, _ in module.named_modules() if n}
    renames = _renames(name_map or {}, torch_names, model, targets, args)
    jax_namer = _namer(torch_names, renames, depth)
    torch_namer = _namer(torch_names, [], depth)

    def jax_fn(p: dict, *a: Any) -> Any:
        values = {path: fn(p[name]) for name, (path, fn) in targets.items()}
        return model.run(values, a, jax_namer)

    def torch_fn(p: dict, *a: Any) -> Any:
        from torch.func import functional_call

        return functional_call(module, p, a)

    with _torch_taps(module, torch_namer):
        return compare(
            jax_fn, torch_fn, params, *args, seeds=seeds, dtype=dtype, reference=reference
        )


def assert_modules(*args: Any, **kwargs: Any) -> Report:
    """compare_modules(...), raising AssertionError with the table unless every row passes."""
    return assert_ok(compare_modules(*args, **kwargs))


def _torch_module(module: Any) -> Any:
    if not torch_available():
        raise UsageError("parity.compare_modules needs PyTorch: pip install 'jaxninja[torch]'")
    import torch

    if not isinstance(module, torch.nn.Module):
        raise UsageError(f"the torch model is a {type(module).__name__}: give a torch.nn.Module")
    return module


def _shape_of(x: Any) -> jax.ShapeDtypeStruct:
    if isinstance(x, Spec):
        return jax.ShapeDtypeStruct(x.shape, jnp.int32 if x.kind == "integers" else jnp.float32)
    x = np.asarray(x)
    dt = jnp.float32 if jnp.issubdtype(x.dtype, jnp.floating) else x.dtype
    return jax.ShapeDtypeStruct(x.shape, dt)


def _torch_weights(module: Any) -> dict[str, np.ndarray]:
    """Every parameter (a tied one once) and persistent buffer, by name, as numpy."""
    import torch

    state = module.state_dict(keep_vars=True)
    own = dict(module.named_parameters()) | {n: b for n, b in module.named_buffers() if n in state}
    out = {}
    for name, t in own.items():
        t = t.detach().cpu()
        out[name] = (t.float() if t.dtype == torch.bfloat16 else t).numpy()  # read, never written
    return out


def _close(word: str, choices: Iterable[str]) -> str:
    near = difflib.get_close_matches(word, list(choices), n=3, cutoff=0.5)
    return f" (close: {', '.join(near)})" if near else ""


def assignment(
    weights: Mapping[str, Target], params: dict[str, np.ndarray], model: JaxModel, module: Any
) -> dict[str, tuple[str, Callable]]:
    """Each torch name -> (the JAX leaf's path, fn), checked: every name a weight of the module,
    every path a leaf of the model's, set once, to the shape it has; every leaf set."""
    if not isinstance(weights, Mapping):
        raise UsageError(f"weights is a {type(weights).__name__}: give a dict name -> JAX path")
    index = {canonical(p): i for i, p in enumerate(model.paths)}
    targets: dict[str, tuple[str, Callable]] = {}
    set_by: dict[str, str] = {}
    for name, target in weights.items():
        if target is None:
            continue
        _check_name(name, params, module)
        raw, fn = target if isinstance(target, tuple) else (target, lambda w: w)
        if not (isinstance(raw, str) and callable(fn)):
            raise UsageError(f"weights[{name!r}]: give a JAX path, or (path, function)")
        path = _leaf(raw, index, model) if model.paths else raw
        if path in set_by:
            raise UsageError(f"weights: {path!r} is set twice, by {set_by[path]!r} and {name!r}")
        set_by[path] = name
        _check_shape(name, path, fn, params[name], model)
        targets[name] = (path, fn)
    unset = [p for p, r in zip(model.paths, model.required, strict=True) if r and p not in set_by]
    if unset:
        more = f" and {len(unset) - 3} more" if len(unset) > 3 else ""
        raise UsageError(f"weights: the {model.kind} model's {', '.join(unset[:3])}{more} unset")
    return targets


def _check_name(name: str, params: dict[str, np.ndarray], module: Any) -> None:
    if name in params:
        return
    state = module.state_dict(keep_vars=True)
    if name in state:
        tied = next(n for n in params if state[n] is state[name])
        raise UsageError(f"weights: {name!r} is tied to {tied!r}: map {tied!r} only")
    raise UsageError(f"weights: the torch module has no {name!r}{_close(name, params)}")


def _leaf(raw: str, index: dict[tuple[str, ...], int], model: JaxModel) -> str:
    key = canonical(raw)
    i = index.get(key, index.get(("params", *key)))  # linen: the params collection by default
    if i is None:
        near = _close(raw, model.paths)
        raise UsageError(f"weights: the {model.kind} model has no {raw!r}{near}")
    return model.paths[i]


def _check_shape(name: str, path: str, fn: Callable, w: np.ndarray, model: JaxModel) -> None:
    try:
        got = jax.eval_shape(fn, jax.ShapeDtypeStruct(w.shape, w.dtype)).shape
    except Exception as e:
        first = (str(e).strip().splitlines() or [""])[0][:120]
        raise UsageError(f"weights[{name!r}]: its function raised: {first}") from None
    if model.paths:
        want = model.shapes[model.paths.index(path)]
        if want is None or tuple(got) != tuple(want.shape):
            hint = ": transpose it, (path, lambda w: w.T)" if got[::-1] == want.shape else ""
            raise UsageError(
                f"weights: {name!r} gives {path!r} shape {tuple(got)}, the JAX model's is "
                f"{None if want is None else tuple(want.shape)}{hint}"
            )


Rename = tuple[tuple[str, ...], tuple[str, ...]]  # (JAX prefix, torch prefix)


def _renames(
    name_map: Mapping[str, str], torch_names: dict, model: JaxModel, targets: dict, args: tuple
) -> list[Rename]:
    """name_map as (JAX prefix, torch prefix) pairs, longest first, each name checked."""
    if not name_map:
        return []
    if not isinstance(name_map, Mapping) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in name_map.items()
    ):
        raise UsageError("name_map: give a dict of torch submodule name -> JAX submodule name")
    if model.kind == "function":
        raise UsageError("name_map: a function's taps are yours to name: name them as torch's")
    jax_names = _jax_module_names(model, targets, args)
    pairs = []
    for t, j in name_map.items():
        for side, name, names in (("torch", t, torch_names), ("JAX", j, jax_names)):
            if not any(n[: len(canonical(name))] == canonical(name) for n in names):
                shown = [".".join(n) for n in names]
                raise UsageError(f"name_map: the {side} model has no submodule {name!r}"
                                 f"{_close('.'.join(canonical(name)), shown)}")  # fmt: skip
        pairs.append((canonical(j), canonical(t)))
    return sorted(pairs, key=lambda p: -len(p[0]))


def _jax_module_names(model: JaxModel, targets: dict, args: tuple) -> set[tuple[str, ...]]:
    """The submodules the JAX model calls, traced once on shapes: no value computed."""
    seen: set[tuple[str, ...]] = set()

    def collect(raw: str) -> None:
        seen.add(canonical(raw))

    shapes = {p: model.shapes[model.paths.index(p)] for p, _ in targets.values()}
    with jax.numpy_rank_promotion("allow"):  # as the engine runs the model
        jax.eval_shape(lambda v, a: model.run(v, a, collect), shapes, tuple(map(_shape_of, args)))
    return seen


def _namer(torch_names: dict, renames: list[Rename], depth: int | None) -> Namer:
    """raw submodule path -> its row name (torch's spelling where torch has it), or None."""

    def name(raw: str) -> str | None:
        key = canonical(raw)
        for jax_prefix, torch_prefix in renames:
            if key[: len(jax_prefix)] == jax_prefix:
                key = torch_prefix + key[len(jax_prefix) :]
                break
        if depth is not None and len(key) > depth:
            return None
        return torch_names.get(key, ".".join(key))

    return name


@contextmanager
def _torch_taps(module: Any, namer: Namer) -> Iterator[None]:
    """Forward hooks on every named submodule, removed after."""
    handles = []
    for raw, sub in module.named_modules():
        if raw and (name := namer(raw)) is not None:
            handles.append(sub.register_forward_pre_hook(_pre_hook(name)))
            handles.append(sub.register_forward_hook(_post_hook(name)))
    try:
        yield
    finally:
        for h in handles:
            h.remove()


def _pre_hook(name: str) -> Callable:
    def hook(_module: Any, args: tuple) -> tuple:
        # a clone of each float input: its gradient is the one through this submodule only, as
        # the JAX side's zero perturbation of the input sees it
        fresh = tuple(a.clone() if _float_tensor(a) else a for a in args)
        return tap_tree(name + INPUT, fresh)

    return hook


def _post_hook(name: str) -> Callable:
    return lambda _module, _args, out: tap_tree(name, out)


def _float_tensor(x: Any) -> bool:
    return hasattr(x, "is_floating_point") and x.is_floating_point()
