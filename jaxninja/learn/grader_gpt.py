"""Exercise 6: a learner's backward of the two layers part 6 adds, LayerNorm and causal
self-attention, graded in every seat of makemore's GPT.

Their two functions (`layernorm_backward(dout, xhat, rstd, weight) -> (dx, dweight, dbias)`
and `attention_backward(dy, q, k, v, att) -> (dq, dk, dv)`, the attention between its two
Linears, per head) stand in for jaxninja's in every LayerNorm (each Block's ln_1 and ln_2, and
ln_f) and every attention (models/gpt.py's `Backwards`). The GPT's backward then runs on the
check's case with them, and its rows are compared as `jaxninja check --model gpt` compares them
(seating.py). A learner's rows are where their outputs appear in the check's rows:
  - a LayerNorm's dweight and dbias, its own rows (`h.0.ln_1.weight`);
  - its dx, the row of its input: ln_f's is the last Block's output (`h.3`); ln_2's and ln_1's
    join a residual, so their rows are the residual's sum, the skip's gradient plus theirs
    (`h.0.attn.c_proj` for ln_2's dx, the Block's input `h.0`'s... `wte` for h.0.ln_1's);
  - the attention's dq, dk and dv, side by side as c_attn's output (`h.0.attn.c_attn`), the
    heads merged: written when any of the three is (jaxninja's stands in for a blank one).
The seating and grading of a case are seating.py's, shared with exercise 5.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import jax.numpy as jnp
import numpy as np

from jaxninja.check import gpt as gpt_check
from jaxninja.check.sources import close
from jaxninja.config import ModelConfig
from jaxninja.learn import references, seating
from jaxninja.learn.seating import Seat, array, fits, flowing
from jaxninja.models import gpt, layers
from jaxninja.models import transformer as tf
from jaxninja.parity.table import Report

# the layers' kinds -> the learner's function, its arity
FUNCTIONS = {"layernorm": ("layernorm_backward", 4), "attention": ("attention_backward", 5)}
SIGNATURES = {
    "layernorm": "layernorm_backward(dout, xhat, rstd, weight) -> (dx, dweight, dbias)",
    "attention": "attention_backward(dy, q, k, v, att) -> (dq, dk, dv)",
}
SIGNATURE = "\n".join(SIGNATURES.values())


def _layernorms(cfg: ModelConfig) -> list[str]:
    """Every LayerNorm, in the order the backward calls them (ln_f, h.3.ln_2, h.3.ln_1, ...)."""
    return [r.removesuffix(".weight") for r in gpt.grad_order(cfg) if r.endswith("ln_1.weight")
            or r.endswith("ln_2.weight") or r == "ln_f.weight"]  # fmt: skip


def _attentions(cfg: ModelConfig) -> list[str]:
    return [r.removesuffix(".c_attn") for r in gpt.grad_order(cfg) if r.endswith(".attn.c_attn")]


def _dx_row(cfg: ModelConfig, layernorm: str) -> str:
    """The row a LayerNorm's dx appears in: its input's gradient (after a residual's sum)."""
    if layernorm == "ln_f":
        return f"h.{cfg.n_layer - 1}"
    block, which = layernorm.rsplit(".", 1)
    if which == "ln_2":
        return f"{block}.attn.c_proj"  # x2 = x + attn(...): ln_2's input
    i = int(block.split(".")[1])
    return f"h.{i - 1}" if i else "wte"  # the Block's input


def seats(cfg: ModelConfig) -> dict[str, Seat]:
    """The rows the learner's functions write, in the order the backward makes them."""
    found = {f"{a}.c_attn": Seat(a, "attention", "dqkv") for a in _attentions(cfg)}
    for ln in _layernorms(cfg):
        found[f"{ln}.weight"] = Seat(ln, "layernorm", "dweight")
        found[f"{ln}.bias"] = Seat(ln, "layernorm", "dbias")
        found[_dx_row(cfg, ln)] = Seat(ln, "layernorm", "dx")
    return {row: found[row] for row in gpt.grad_order(cfg) if row in found}


# --- the seats ----------------------------------------------------------------------------------


def _layernorm_seat(cfg, fn: Callable, names: list[str], seen: dict, dxs: dict, kept: dict):
    def backward(dout, cache, axis_name=None):
        layer = names.pop(0)
        own_params, own = gpt.OWN.layernorm(dout, cache, axis_name)
        out = seating.outputs(fn(dout, cache.xhat, cache.rstd, cache.weight), 3, 6,
                              SIGNATURES["layernorm"])  # fmt: skip
        names_out = ("dx", "dweight", "dbias")
        dx, dweight, dbias = (
            array(x, f"layernorm_backward's {k}", 6) for x, k in zip(out, names_out, strict=True)
        )
        for key, g in (("weight", dweight), ("bias", dbias)):
            if g is not Ellipsis:
                seen[f"{layer}.{key}"] = g
        if dx is not Ellipsis:
            dxs[_dx_row(cfg, layer)] = dx
        kept[layer] = {"dout": dout, "xhat": cache.xhat, "rstd": cache.rstd}
        kept[layer]["yours"] = dx if fits(dx, own) else own
        return own_params, flowing(dx, own)

    return backward


def _parts(dqkv: jnp.ndarray, n_head: int) -> list[jnp.ndarray]:
    """c_attn's output gradient (B, T, 3C) as dq, dk, dv, each (B, nh, T, hs)."""
    C = dqkv.shape[-1] // 3
    return [tf.split_heads(dqkv[..., i * C : (i + 1) * C], n_head) for i in range(3)]


def _attention_seat(fn: Callable, names: list[str], seen: dict, kept: dict):
    def backward(dout, cache, axis_name=None):
        layer = names.pop(0)
        own_params, _, own_dqkv = gpt.OWN.attention(dout, cache, axis_name)
        dy = layers.linear_backward(dout, cache.c_proj, axis_name)[0]  # (B, T, C)
        dy = tf.split_heads(dy, cache.q.shape[1])  # (B, nh, T, hs)
        out = seating.outputs(fn(dy, cache.q, cache.k, cache.v, cache.att), 3, 6,
                              SIGNATURES["attention"])  # fmt: skip
        yours = [array(x, f"attention_backward's {k}", 6) for x, k in zip(out, "qkv", strict=True)]
        own = _parts(own_dqkv, cache.q.shape[1])
        flows = [flowing(d, o) for d, o in zip(yours, own, strict=True)]
        dqkv = jnp.concatenate([tf.merge_heads(d) for d in flows], axis=-1)  # (B, T, 3C)
        wrong = [d for d, o in zip(yours, own, strict=True) if d is not ... and not fits(d, o)]
        if any(d is not ... for d in yours):
            seen[f"{layer}.c_attn"] = wrong[0] if wrong else dqkv  # a shape error says which
        kept[layer] = {"dy": dy, "q": cache.q, "k": cache.k, "v": cache.v, "att": cache.att}
        kept[layer] |= {"yours": flows, "own": own}
        dx, dW, db = layers.linear_backward(dqkv, cache.c_attn, axis_name)
        return {**own_params, "c_attn.weight": dW, "c_attn.bias": db}, dx, dqkv

    return backward


def _candidate_run(cfg: ModelConfig, fns: dict[str, Callable]) -> Callable:
    """(params, Xb, Yb) -> (loss, the gradients as they flowed, the learner's outputs by row,
    each seat's inputs and outputs for the hints)."""

    def run(params, Xb, Yb):
        seen, dxs, kept = {}, {}, {}
        lns, attns = _layernorms(cfg), _attentions(cfg)
        backwards = gpt.Backwards(
            layernorm=_layernorm_seat(cfg, fns["layernorm"], lns, seen, dxs, kept),
            attention=_attention_seat(fns["attention"], attns, seen, kept),
        )
        loss, flow, _ = gpt.loss_and_grads(cfg, backwards=backwards)(params, Xb, Yb)
        assert not lns and not attns, (lns, attns)  # every seat taken, in grad_order's order
        for row, dx in dxs.items():  # the row of a LayerNorm's input: the residual's sum with it
            seen[row] = flow[row] if fits(dx, flow[row]) else dx
        return loss, flow, seen, kept

    return run


# --- hints: what the known mistakes look like from outside --------------------------------------


def _hint(report: Report, sources: dict, refs: references.References, kept: dict) -> str | None:
    """A hint for the first failure of a case, where it is one of the learner's rows and looks
    like a known mistake."""
    if (first := seating.first_seated(report, seats(refs.cfg))) is None:
        return None
    name, seat, verdict = first
    if verdict == "shape":
        got, want = np.shape(sources["yours"][name]), refs.shapes[name]
        return _shape_hint(seat, name, got, want, kept[seat.layer])
    if verdict != "wrong":
        return None
    inputs = {k: v for k, v in kept[seat.layer].items() if k not in ("yours", "own")}
    inputs = {k: np.asarray(v, np.float64) for k, v in inputs.items()}
    if seat.kind == "layernorm" and seat.output == "dx":
        weight = np.asarray(refs.case.params[f"{seat.layer}.weight"], np.float64)
        return _layernorm_hint(seat, name, np.asarray(kept[seat.layer]["yours"]), inputs, weight)
    if seat.kind == "attention":
        yours, own = (
            [np.asarray(x, np.float64) for x in kept[seat.layer][k]] for k in ("yours", "own")
        )
        return _attention_hint(seat, name, yours, own, inputs)
    return None


def _shape_hint(seat: Seat, name: str, got: tuple, want: tuple, kept: dict) -> str:
    if seat.kind == "attention":
        part = tuple(kept["q"].shape)
        return (
            f"{name} is {seat.layer}'s dq, dk and dv side by side, the heads merged, {want}: "
            f"each must have q's shape, {part}; one of yours is {got}"
        )
    if seat.output == "dx":
        return f"{name} is where {seat.layer}'s dx goes: it must have x's shape, {want}"
    if math.prod(got) == math.prod(want):
        return f"{seat.output} has weight's shape, {want}: sum without keepdims"
    if len(got) == 2 and got[-1] == want[0]:
        return (
            f"weight is shared by every position of every row: {seat.output} sums over (0, 1), "
            f"B and T, to weight's shape {want}, not over axis 0 alone"
        )
    return f"{seat.output} must have weight's shape, {want}"


def layernorm_dx(
    dout, xhat, rstd, weight, n_mean: float, n_third: float | None, inside: bool = False
) -> np.ndarray:
    """LayerNorm's dx with its two means' counts (n_third None: the third term dropped); or,
    `inside`, with the weight taken out of the sums, as BatchNorm's gamma can be."""
    dnorm = dout if inside else dout * weight
    third = 0.0 if n_third is None else xhat * (dnorm * xhat).sum(-1, keepdims=True) / n_third
    dx = rstd * (dnorm - dnorm.sum(-1, keepdims=True) / n_mean - third)
    return dx * weight if inside else dx


def _layernorm_hint(seat: Seat, name: str, yours, inputs: dict, weight) -> str | None:
    """LayerNorm's dx run with each known mistake on the seat's own inputs: the one that gives
    the learner's dx names it."""
    n = inputs["xhat"].shape[-1]
    bessel = (
        f"LayerNorm's variance is the biased one, a mean over the n = C = {n} channels (as "
        "nn.LayerNorm's): no n-1 anywhere (exercise 3's BatchNorm has Bessel's; LayerNorm not)"
    )
    mistakes = [  # (hint, the two means' counts, the weight out of the sums)
        (
            "the third term is missing: dx = rstd * (dnorm - mean(dnorm) - xhat * mean(dnorm * "
            "xhat)), the last through the variance (dnorm = dout * weight, means over C)",
            n, None, False,
        ),
        (bessel, n, n - 1, False),
        (bessel, n - 1, n - 1, False),
        (
            "the weight is per channel, along the axis the means run over, so unlike "
            "BatchNorm's gamma it cannot come out of them: dnorm = dout * weight, then its means",
            n, n, True,
        ),
    ]  # fmt: skip
    args = (inputs["dout"], inputs["xhat"], inputs["rstd"], weight)
    for hint, n_mean, n_third, inside in mistakes:
        if close(yours, layernorm_dx(*args, n_mean, n_third, inside)):
            return f"d{name} ({seat.layer}'s dx): {hint}"
    return None


def attention_grads(dy, q, k, v, att, axis: int = -1, through_att: bool = True, scale=None):
    """(dq, dk, dv) of y = softmax(mask(q @ k^T * scale)) @ v, with the softmax's backward sum over
    `axis` and, `through_att` False, its second term not times att (the known mistakes)."""
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    datt = dy @ v.swapaxes(-1, -2)
    dv = att.swapaxes(-1, -2) @ dy
    total = (datt * att).sum(axis, keepdims=True)
    dscores = (att * (datt - total) if through_att else att * datt - total) * scale
    return dscores @ k, dscores.swapaxes(-1, -2) @ q, dv


def _attention_hint(seat: Seat, name: str, yours: list, own: list, inputs: dict) -> str | None:
    """The known mistakes' (dq, dk, dv) on the seat's own inputs: the one that gives the
    learner's names it; else what is visibly wrong (a gradient at a masked position)."""
    wrong = [d for d, y, o in zip(("dq", "dk", "dv"), yours, own, strict=True) if not close(y, o)]
    where = f"d{name} ({seat.layer}: {' and '.join(wrong)} wrong)"
    hs = inputs["q"].shape[-1]
    leak = (
        "the gradient leaks into masked positions: where the mask put -inf, att is 0, and so "
        "must dscores be; att * (datt - sum(datt * att)) is, with att times the whole difference"
    )
    mistakes = [
        (
            "softmax's backward sums datt * att over the axis the softmax normalised, the last "
            "(the keys, -1), not -2",
            {"axis": -2},
        ),
        (leak, {"through_att": False}),
        (
            f"scores = q @ k^T * (1 / sqrt(hs)): the gradient goes back through the same "
            f"1/sqrt(hs) (hs = {hs}), to dq and dk",
            {"scale": 1.0},
        ),
        (f"the scale is 1/sqrt(hs) (hs = {hs}), not sqrt(hs)", {"scale": math.sqrt(hs)}),
    ]
    args = [inputs[k] for k in ("dy", "q", "k", "v", "att")]
    for hint, mistake in mistakes:
        if all(map(close, yours, attention_grads(*args, **mistake))):
            return f"{where}: {hint}"
    if "dv" in wrong and close(yours[2], inputs["att"] @ inputs["dy"]):
        return f"{where}: y = att @ v, so dv = att^T @ dy: att transposed"
    if "dq" in wrong and np.abs(yours[0][..., 0, :]).max() > 1e-3 * np.abs(own[0]).max():
        return (
            f"{where}: dq at the first position must be 0 (it attends to itself alone, so its "
            f"softmax is constant) and yours is not: {leak}"
        )
    return None


SEATED = seating.Seated(6, FUNCTIONS, SIGNATURES, gpt_check.CHECKED, seats, _candidate_run, _hint)
