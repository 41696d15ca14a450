"""Exercise 5: a learner's backward of the two layers part 5 adds, FlattenConsecutive and the
(B, T, C) BatchNorm1d, graded in every seat of the WaveNet's stack.

Their two functions (`flatten_consecutive_backward(dout, n) -> dx` and
`batchnorm_backward(dout, bnraw, bnvar_inv, gamma) -> (dx, dgamma, dbeta)`) stand in for
jaxninja's in every layer of their kind (the stack's `with_backwards`, here one seat per layer,
so each output is named by its row). The stack's backward then runs on the check's case, and
its rows are compared as `jaxninja check --model wavenet` compares them (check/wavenet.py): with
jax.grad, PyTorch autograd, the stack's own backward and each layer's jax.vjp fed the same
gradient of its output. A learner's rows are the gradients their functions return: the dx of
every FlattenConsecutive and BatchNorm (each named as the stack names it, by the layer whose
output it is: flatten3's dx is the row `tanh2`) and the BatchNorms' dgamma and dbeta.

The seating, what a blank or a wrong shape does, and the grade of a case are seating.py's,
shared with exercise 6.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable

import numpy as np

from jaxninja.check import wavenet as wavenet_check
from jaxninja.check.sources import close
from jaxninja.config import WAVENET_FLATTEN, ModelConfig
from jaxninja.learn import candidate, references, seating
from jaxninja.learn.seating import Seat, array, flowing
from jaxninja.models import wavenet
from jaxninja.models.layers import Layer
from jaxninja.parity.named import F64
from jaxninja.parity.table import Report

# the layers' kinds (as wavenet.with_backwards names them) -> the learner's function, its arity
FUNCTIONS = {"flatten": ("flatten_consecutive_backward", 2), "bn": ("batchnorm_backward", 4)}
SIGNATURES = {
    "flatten": "flatten_consecutive_backward(dout, n) -> dx",
    "bn": "batchnorm_backward(dout, bnraw, bnvar_inv, gamma) -> (dx, dgamma, dbeta)",
}
SIGNATURE = "\n".join(SIGNATURES.values())  # a line each, as a grade shows them


def _kind(layer: Layer) -> str:
    return layer.name.rstrip("0123456789")


def seats(cfg: ModelConfig) -> dict[str, Seat]:
    """The rows the learner's functions write, in the order the backward makes them."""
    found = {}
    for below, layer in itertools.pairwise(wavenet.stack(cfg)):
        if _kind(layer) == "bn":
            found[f"{layer.name}.gamma"] = Seat(layer.name, "bn", "dgamma")
            found[f"{layer.name}.beta"] = Seat(layer.name, "bn", "dbeta")
        if _kind(layer) in FUNCTIONS:
            found[below.name] = Seat(layer.name, _kind(layer), "dx")  # dx: the layer below's out
    return {row: found[row] for row in wavenet.grad_order(cfg) if row in found}


def _flatten_seat(fn: Callable, layer: Layer, below: str, seen: dict) -> Callable:
    def backward(dout, shape):
        _, own = layer.backward(dout, shape)
        try:
            dx = fn(dout, WAVENET_FLATTEN)
        except Exception as e:
            if dout.ndim == 2:
                e.add_note(candidate.HINT_NOTE + _squeezed(layer.name, dout.shape, shape))
            raise
        if array(dx, "flatten_consecutive_backward's dx", 5) is not Ellipsis:
            seen[below] = dx
        return {}, flowing(dx, own)

    return backward


def _bn_seat(fn: Callable, layer: Layer, below: str, seen: dict, inputs: dict) -> Callable:
    def backward(dout, cache):
        own_params, own = layer.backward(dout, cache)
        inputs[layer.name] = (cache.bnraw, cache.bnvar_inv)
        out = fn(dout, cache.bnraw, cache.bnvar_inv, cache.bngain)
        out = seating.outputs(out, 3, 5, SIGNATURES["bn"])
        names = ("dx", "dgamma", "dbeta")
        dx, dgamma, dbeta = (
            array(x, f"batchnorm_backward's {k}", 5) for x, k in zip(out, names, strict=True)
        )
        for row, g in ((f"{layer.name}.gamma", dgamma), (f"{layer.name}.beta", dbeta), (below, dx)):
            if g is not Ellipsis:
                seen[row] = g
        return own_params, flowing(dx, own)  # the parameters' rows: `seen`, whatever shape

    return backward


def _seated(cfg: ModelConfig, fns: dict[str, Callable], seen: dict, inputs: dict):
    """The stack with the learner's functions in the seats of their kind, each seat writing its
    outputs into `seen` by row (and a BatchNorm's inputs into `inputs`, for the hints)."""
    net = wavenet.stack(cfg)
    out = [net[0]]
    for below, layer in itertools.pairwise(net):
        kind = _kind(layer)
        if kind == "flatten" and kind in fns:
            layer = layer._replace(backward=_flatten_seat(fns[kind], layer, below.name, seen))
        elif kind == "bn" and kind in fns:
            layer = layer._replace(backward=_bn_seat(fns[kind], layer, below.name, seen, inputs))
        out.append(layer)
    return tuple(out)


def _candidate_run(cfg: ModelConfig, fns: dict[str, Callable]) -> Callable:
    """(params, Xb, Yb) -> (loss, the gradients as they flowed, the learner's outputs by row,
    each BatchNorm's (bnraw, bnvar_inv))."""

    def run(params, Xb, Yb):
        seen, inputs = {}, {}
        net = _seated(cfg, fns, seen, inputs)
        loss, flow, _ = wavenet.loss_and_grads(cfg, net=net)(params, Xb, Yb)
        return loss, flow, seen, inputs

    return run


# --- hints: what the known mistakes look like from outside ------------------------------------


def _squeezed(layer: str, dout_shape: tuple, x_shape: tuple) -> str:
    return (
        f"{layer}'s forward squeezed its length-1 time axis, so its dout is {dout_shape}: dx is "
        f"still its input's shape, {x_shape}, the squeezed axis put back"
    )


def _hint(report: Report, sources: dict, refs: references.References, inputs: dict):
    """A hint for the first failure of a case, where it is one of the learner's rows and looks
    like a known mistake."""
    mine = seats(refs.cfg)
    if (first := seating.first_seated(report, mine)) is None:
        return None
    name, seat, verdict = first
    yours = np.asarray(sources["yours"][name], np.float64)
    below = next(r for r, s in mine.items() if s.layer == seat.layer and s.output == "dx")
    x_shape, out_shape = refs.shapes[below], refs.shapes[seat.layer]
    if verdict == "shape":
        return _shape_hint(seat, name, refs.shapes[name], yours.shape, x_shape, out_shape)
    if verdict != "wrong":
        return None
    ref = np.asarray(sources.get("jax.grad" + F64, sources["jax.grad"])[name], np.float64)
    if seat.kind == "flatten":
        return _reshape_hint(seat, name, yours, ref, x_shape)
    if seat.output == "dx":
        dout = np.asarray(sources["yours"][seat.layer], np.float64)
        bnraw, bnvar_inv = (np.asarray(a, np.float64) for a in inputs[seat.layer])
        gamma = np.asarray(refs.case.params[f"{seat.layer}.gamma"], np.float64)
        return _batchnorm_hint(seat, name, yours, dout, bnraw, bnvar_inv, gamma)
    return None


def _shape_hint(seat: Seat, name: str, want: tuple, got: tuple, x_shape: tuple, out_shape: tuple):
    if seat.kind == "flatten" and len(out_shape) == 2:
        return f"{name} is {seat.layer}'s input: {_squeezed(seat.layer, out_shape, x_shape)}"
    if seat.kind == "flatten":
        return (
            f"{name} is {seat.layer}'s input: its dx must have that shape, {want}: the reshape "
            f"of dout {out_shape} back"
        )
    if seat.output == "dx":
        return f"{name} is {seat.layer}'s input: its dx must have that shape, {want}"
    if len(x_shape) == 3 and tuple(d for d in got if d != 1) == x_shape[1:]:
        return (
            f"{seat.layer}'s input is {x_shape}: BatchNorm's statistics run over every axis "
            f"but the last, (0, 1) here, so {seat.output} sums over both, not over axis 0 alone, "
            f"to gamma's shape {want}"
        )
    if math.prod(got) == math.prod(want):
        return f"{seat.output} has gamma's shape, {want}: sum without keepdims"
    return f"{seat.output} must have gamma's shape, {want}"


def _reshape_hint(seat: Seat, name: str, yours: np.ndarray, ref: np.ndarray, x_shape: tuple):
    if not close(np.sort(yours, axis=None), np.sort(ref, axis=None)):
        return None
    return (
        f"d{name} holds the right numbers in the wrong places: {seat.layer}'s forward only "
        f"reshapes, (B, T, C) -> (B, T // n, C * n), so its backward is the reshape back to "
        f"{x_shape}, the axes in the forward's order (no transpose, no axes swapped)"
    )


def batchnorm_dx(dout, bnraw, bnvar_inv, gamma, axes: tuple[int, ...], n: int, bessel: bool):
    """Exercise 3's expression for dx with its sums over `axes` and its count n: the right one
    (every axis but the last, n their size, Bessel's n/(n-1)) and the known mistakes."""
    dbeta, dgamma = dout.sum(axes, keepdims=True), (dout * bnraw).sum(axes, keepdims=True)
    corr = n / (n - 1) if bessel else 1.0
    return gamma * bnvar_inv / n * (n * dout - dbeta - corr * bnraw * dgamma)


def _batchnorm_hint(seat: Seat, name: str, yours, dout, bnraw, bnvar_inv, gamma) -> str | None:
    """Exercise 3's expression run with each known mistake on the seat's own inputs: the one that
    gives the learner's dx names it."""
    axes, B = tuple(range(dout.ndim - 1)), dout.shape[0]
    n = math.prod(dout.shape[:-1])
    mistakes = [  # (hint, the sums' axes, n, Bessel's n/(n-1)), where it differs from the right
        (
            f"{seat.layer}'s input is {dout.shape}: the forward's statistics run over (0, 1), "
            f"n = B*T = {n} values a channel; your sums run over axis 0 alone, with n = B (as "
            "for exercise 3's (B, C) input)",
            (0,), B, True,
        ),
        (
            f"n counts the values each channel's statistics average: B*T = {n} here, not B = {B}",
            axes, B, True,
        ),
        (
            "Bessel's correction: the forward's variance divides by n-1, so the term through "
            f"it carries n/(n-1) (n = {n} here)",
            axes, n, False,
        ),
    ]  # fmt: skip
    for hint, wrong_axes, wrong_n, bessel in mistakes:
        if (wrong_axes, wrong_n, bessel) == (axes, n, True):
            continue  # a (B, C) input: this mistake is no mistake there
        if close(yours, batchnorm_dx(dout, bnraw, bnvar_inv, gamma, wrong_axes, wrong_n, bessel)):
            return f"d{name} ({seat.layer}'s dx): {hint}"
    return None


SEATED = seating.Seated(
    5, FUNCTIONS, SIGNATURES, wavenet_check.CHECKED, seats, _candidate_run, _hint
)
