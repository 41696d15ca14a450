"""The JAX models `compare_modules` runs unedited: a flax.linen module, a flax.nnx module, an
equinox module, or a function `fn(params, *args)` with its own taps.

Each becomes a `JaxModel`: the paths and shapes of the arrays its weights are made of (the ones
the user's mapping must set), and `run(values, args, namer)`, which builds the model on the
mapped values and calls it with every submodule's call tapped, no line of the model edited:
linen through `nn.intercept_methods`; nnx and equinox by wrapping, for the length of the call,
the `__call__` of the classes of the submodules found by graph traversal (`nnx.iter_graph`,
equinox's pytree), each instance known by identity. `namer(raw)` turns a submodule's path
(`h.0.mlp`) into its row name, or None to leave it untapped.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from jaxninja.errors import UsageError
from jaxninja.parity.taps import tap

Namer = Callable[[str], str | None]
INPUT = " (in)"  # a submodule's inputs: their gradient is the one through that submodule only


class JaxModel(NamedTuple):
    kind: str  # "flax.linen", "flax.nnx", "equinox" or "function"
    paths: list[str]  # each leaf's path, "h_0/mlp/c_fc/kernel" (a function: none)
    shapes: list[Any]  # each leaf's ShapeDtypeStruct, or None where it is not an array
    required: list[bool]  # the leaves the weights must set: the float arrays (linen: all)
    run: Callable[[dict[str, Any], tuple, Namer], Any]  # (path -> value, args, namer) -> out


def tap_tree(name: str, tree: Any) -> Any:
    """`tree` with each array leaf tapped: `name` for a lone array, else `name[0]`, ..."""
    flat, treedef = jax.tree_util.tree_flatten_with_path(tree)
    arrays = [i for i, (_, x) in enumerate(flat) if hasattr(x, "shape")]
    leaves = [x for _, x in flat]
    for i in arrays:
        key = name if len(arrays) == 1 else name + jax.tree_util.keystr(flat[i][0])
        leaves[i] = tap(key, leaves[i])
    return jax.tree_util.tree_unflatten(treedef, leaves)


def tapped_call(name: str, call: Callable, args: tuple, kwargs: dict, root: Any) -> Any:
    """A submodule's call with its positional inputs and its outputs tapped; untapped under a
    transformation inside the model (jax.vmap, a scan, a remat): `root` is the trace the model
    was called in, and a tap's value cannot leave an inner one."""
    if trace_state() != root:
        return call(*args, **kwargs)
    return tap_tree(name, call(*tap_tree(name + INPUT, tuple(args)), **kwargs))


def trace_state() -> Any:
    """The current trace, as an opaque value to compare: jax.extend.core's call (jax 0.9 on),
    jax.core's before it (deprecated after)."""
    import jax.extend.core

    get = getattr(jax.extend.core, "get_opaque_trace_state", None)
    get = get or jax.core.get_opaque_trace_state
    return get(convention="jaxninja.parity")


def key_name(key: Any) -> str:
    for attr in ("name", "key", "idx"):
        if hasattr(key, attr):
            return str(getattr(key, attr))
    return str(key)


def _path(keys: tuple, drop_value: bool = False) -> str:
    names = [key_name(k) for k in keys]
    if drop_value and names and names[-1] == "value":  # an nnx Variable's array
        names = names[:-1]
    return "/".join(names)


def _template(tree: Any, drop_value: bool = False) -> tuple[list, list, list, list, Any]:
    """(paths, shapes, required, leaves, treedef) of a pytree of arrays and other leaves."""
    flat, treedef = jax.tree_util.tree_flatten_with_path(tree)
    paths = [_path(p, drop_value) for p, _ in flat]
    leaves = [x for _, x in flat]
    shapes = [jax.ShapeDtypeStruct(x.shape, x.dtype) if _is_array(x) else None for x in leaves]
    required = [s is not None and jnp.issubdtype(s.dtype, jnp.floating) for s in shapes]
    return paths, shapes, required, leaves, treedef


def _is_array(x: Any) -> bool:
    return isinstance(x, jax.Array | jax.ShapeDtypeStruct) or type(x).__module__ == "numpy"


def _rebuild(paths: list[str], leaves: list, treedef: Any, values: dict[str, Any]) -> Any:
    return jax.tree_util.tree_unflatten(
        treedef, [values.get(p, x) for p, x in zip(paths, leaves, strict=True)]
    )


def _module(name: str) -> Any:
    return sys.modules.get(name)  # None unless the user imported it: theirs cannot be one then


def jax_model(model: Any, arg_shapes: tuple) -> JaxModel:
    """The JaxModel of a linen, nnx or equinox module, or of a function; `arg_shapes` the
    inputs' ShapeDtypeStructs (a linen module's parameter shapes come from its init on them)."""
    linen, nnx, eqx = _module("flax.linen"), _module("flax.nnx"), _module("equinox")
    if linen is not None and isinstance(model, linen.Module):
        return _linen(linen, model, arg_shapes)
    if nnx is not None and isinstance(model, nnx.Module):
        return _nnx(nnx, model)
    if eqx is not None and isinstance(model, eqx.Module):
        return _equinox(eqx, model)
    if callable(model) and not type(model).__module__.startswith("torch"):
        return JaxModel("function", [], [], [], lambda values, args, _: model(values, *args))
    raise UsageError(
        f"the JAX model is a {type(model).__name__}: give a flax.linen Module, a flax.nnx "
        "Module, an equinox Module, or a function fn(params, *args)"
    )


def _linen(linen: Any, model: Any, arg_shapes: tuple) -> JaxModel:
    try:
        with jax.numpy_rank_promotion("allow"):  # as the engine runs the model
            variables = jax.eval_shape(lambda a: model.init(jax.random.key(0), *a), arg_shapes)
    except Exception as e:
        first = (str(e).strip().splitlines() or [""])[0][:160]
        raise UsageError(f"the flax.linen module's init on the inputs raised: {first}") from None
    paths, shapes, _, leaves, treedef = _template(variables)

    def run(values: dict[str, Any], args: tuple, namer: Namer) -> Any:
        root = trace_state()

        def intercept(next_fun, a, kw, context):
            path = context.module.path
            name = namer(".".join(path)) if context.method_name == "__call__" and path else None
            return next_fun(*a, **kw) if name is None else tapped_call(name, next_fun, a, kw, root)

        with linen.intercept_methods(intercept):
            return model.apply(_rebuild(paths, leaves, treedef, values), *args)

    return JaxModel("flax.linen", paths, shapes, [True] * len(paths), run)


def _nnx(nnx: Any, model: Any) -> JaxModel:
    graphdef, state = nnx.split(model)
    paths, shapes, required, leaves, treedef = _template(state, drop_value=True)

    def run(values: dict[str, Any], args: tuple, namer: Namer) -> Any:
        built = nnx.merge(graphdef, _rebuild(paths, leaves, treedef, values))
        found = ((".".join(map(str, p)), m) for p, m in nnx.iter_graph(built) if p)
        with _calls_tapped([(namer(raw), m) for raw, m in found if isinstance(m, nnx.Module)]):
            return built(*args)

    return JaxModel("flax.nnx", paths, shapes, required, run)


def _equinox(eqx: Any, model: Any) -> JaxModel:
    paths, shapes, required, leaves, treedef = _template(model)

    def run(values: dict[str, Any], args: tuple, namer: Namer) -> Any:
        built = _rebuild(paths, leaves, treedef, values)
        found = _submodules(built, lambda x: isinstance(x, eqx.Module))
        with _calls_tapped([(namer(raw), m) for raw, m in found]):
            return built(*args)

    return JaxModel("equinox", paths, shapes, required, run)


def _submodules(node: Any, is_module: Callable, prefix: str = "") -> Iterator[tuple[str, Any]]:
    """(path, module) of every module inside `node`'s pytree, parents before children."""
    inner = jax.tree_util.tree_flatten_with_path(
        node, is_leaf=lambda x: x is not node and is_module(x)
    )[0]
    for keys, sub in inner:
        if is_module(sub) and sub is not node:
            path = ".".join(filter(None, [prefix, *map(key_name, keys)]))
            yield path, sub
            yield from _submodules(sub, is_module, path)


def _defining_class(cls: type) -> type | None:
    return next((c for c in cls.__mro__ if "__call__" in c.__dict__), None)


@contextmanager
def _calls_tapped(found: list[tuple[str | None, Any]]) -> Iterator[None]:
    """For the length of the call, the `__call__` of each submodule's class taps the instances
    named in `found` (known by id); every other instance, the root among them, calls through."""
    names = {id(m): name for name, m in found if name is not None}
    root = trace_state()
    classes = {_defining_class(type(m)) for name, m in found if name is not None} - {None}
    originals = {cls: cls.__dict__["__call__"] for cls in classes}
    active: set[int] = set()  # a subclass's __call__ reaching its parent's: tapped once

    def wrap(original: Any) -> Callable:
        def __call__(self, *args, **kwargs):
            bound = original.__get__(self, type(self))
            name = names.get(id(self))
            if name is None or id(self) in active:
                return bound(*args, **kwargs)
            active.add(id(self))
            try:
                return tapped_call(name, bound, args, kwargs, root)
            finally:
                active.discard(id(self))

        return __call__

    try:
        for cls, original in originals.items():
            type.__setattr__(cls, "__call__", wrap(original))
        yield
    finally:
        for cls, original in originals.items():
            type.__setattr__(cls, "__call__", original)
