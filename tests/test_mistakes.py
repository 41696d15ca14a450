"""The mistake catalogue: real errors of manual backprop, each injected into the atomic or the
fused backward, must fail `check`, naming the first wrong tensor in the notebook's order; and what
is not a mistake must pass. Also the bad input a checker must survive (NaN, dtype, missing rows).

Run without PyTorch's ways (the mistakes are in the JAX code; test_backward covers the torch ways)
so that float32's noise yardstick is jax.grad's alone, the stricter case for a false alarm.
"""

from __future__ import annotations

import numpy as np
import pytest

from jaxninja.check.mlp import run_check
from jaxninja.config import ModelConfig
from jaxninja.models import layers
from jaxninja.models.mlp import make_case
from jaxninja.models.mlp_backward import backward_atomic
from jaxninja.parity.table import format_table
from tests.mutate import mutate


def _fused_dhprebn(old: str, new: str):
    """Exercise 3's seat filled with layers.batchnorm_backward, mutated."""
    bad = mutate(layers.batchnorm_backward, old, new)

    def dhprebn_fn(dhpreact, bngain, bnvar_inv, bnraw):
        return bad(dhpreact, layers.BatchNormCache(bnraw, bnvar_inv, bngain, None, None))[0]

    return {"dhprebn_fn": dhprebn_fn}


def _atomic(old: str, new: str):
    return {"atomic": mutate(backward_atomic, old, new)}


# name -> (what to inject, first wrong tensor, its verdict)
CATALOGUE = {
    "Bessel's n instead of n-1 in dbndiff2": (
        lambda: _atomic("1.0 / (n - 1) * jnp.ones_like", "1.0 / n * jnp.ones_like"),
        "bndiff2",
        "wrong",
    ),
    "Bessel's n instead of n-1 in the fused dhprebn": (
        lambda: _fused_dhprebn("- n / (n - 1) * bnraw * dbngain", "- bnraw * dbngain"),
        "hprebn",
        "wrong",
    ),
    "1/(n-1) instead of 1/n in dhprebn's mean term": (
        lambda: _atomic("dhprebn = dbndiff + 1.0 / n *", "dhprebn = dbndiff + 1.0 / (n - 1) *"),
        "hprebn",
        "wrong",
    ),
    "1/(n-1) instead of 1/n in the fused dhprebn's mean term": (
        lambda: _fused_dhprebn("n * dhpreact - dbnbias", "n * dhpreact - n / (n - 1) * dbnbias"),
        "hprebn",
        "wrong",
    ),
    "a dropped keepdims": (
        lambda: _atomic("dbnmeani = -dbndiff.sum(0, keepdims=True)", "dbnmeani = -dbndiff.sum(0)"),
        "bnmeani",
        "shape",
    ),
    "the second use of counts forgotten": (
        lambda: _atomic("dcounts = dcounts + dcounts_sum", "dcounts = dcounts"),
        "counts",
        "wrong",
    ),
    "dC by .set instead of .add": (
        lambda: _atomic(".at[Xb].add(demb)", ".at[Xb].set(demb)"),
        "C",
        "wrong",
    ),
    "1 - h instead of 1 - h**2": (
        lambda: _atomic("(1.0 - h**2) * dh", "(1.0 - h) * dh"),
        "hpreact",
        "wrong",
    ),
    "a missing transpose in dW2": (
        lambda: _atomic("dW2 = h.T @ dlogits", "dW2 = dlogits.T @ h"),
        "W2",
        "shape",
    ),
    "dbngain summed over the wrong axis": (
        lambda: _atomic("(bnraw * dhpreact).sum(0,", "(bnraw * dhpreact).sum(1,"),
        "bngain",
        "shape",
    ),
}
# (dtype, batch size, seed): float64 at the notebook's batch and at the smallest; float32 at the
# defaults. Seed 1's batch of 2 reads a character twice, so dC by .set is wrong there too.
CASES = [("float64", 32, 0), ("float64", 2, 1), ("float32", 32, 0)]


def _check(splits, dtype: str, batch_size: int, seed: int, **seat):
    cfg = ModelConfig(vocab_size=splits.vocab.size, dtype=dtype)
    return run_check(cfg, *splits.data["train"], batch_size, seed, with_torch=False, **seat)


def test_the_small_case_repeats_a_character(splits):
    cfg = ModelConfig(vocab_size=splits.vocab.size)
    Xb = make_case(cfg, *splits.data["train"], 2, 1).Xb
    assert len(np.unique(Xb)) < Xb.size  # else dC by .set could not be wrong there


@pytest.mark.parametrize(("dtype", "batch_size", "seed"), CASES)
@pytest.mark.parametrize("mistake", list(CATALOGUE))
def test_each_mistake_fails_naming_the_first_wrong_tensor(splits, mistake, dtype, batch_size, seed):
    inject, first, verdict = CATALOGUE[mistake]
    report = _check(splits, dtype, batch_size, seed, **inject())
    assert not report.ok
    assert report.first_failure()["name"] == first, report.first_failure()
    assert report.first_failure()["verdict"] == verdict, report.first_failure()
    assert f"FAILED: first wrong tensor: {first}: " in format_table(report)


def test_a_shape_error_names_both_shapes(splits):
    report = _check(splits, "float32", 32, 0, **CATALOGUE["a dropped keepdims"][0]())
    assert report.first_failure()["message"] == (
        "manual: dbnmeani has shape (64,), bnmeani is (1, 64)"
    )
    row = next(r for r in report.rows if r["name"] == "bnmeani")
    assert row["jax.grad"]["shapes"] == [[64], [1, 64]]


@pytest.mark.parametrize(("dtype", "batch_size", "seed"), CASES)
def test_a_dropped_dlogit_maxes_term_is_not_a_mistake(splits, dtype, batch_size, seed):
    """It is zero in exact arithmetic: leaving it out changes dlogits by rounding alone."""
    seat = _atomic("dlogits = dnorm_logits + argmax * dlogit_maxes", "dlogits = dnorm_logits")
    report = _check(splits, dtype, batch_size, seed, **seat)
    assert report.ok, report.first_failure()


@pytest.mark.parametrize(
    ("old", "new", "first", "verdict", "message"),
    [
        ('"h": dh,', '"h": dh * jnp.nan,', "h", "nonfinite", "manual: dh holds 2048 NaN or inf"),
        (
            '"W2": dW2,',
            '"W2": dW2.astype(jnp.float16),',
            "W2",
            "dtype",
            "manual: dW2 is float16, W2 is float32",
        ),
        ('"b2": db2,', "", "b2", "missing", "manual: db2 is missing from its results"),
    ],
)
def test_bad_gradients_fail_their_row(splits, old, new, first, verdict, message):
    report = _check(splits, "float32", 32, 0, **_atomic(old, new))
    failure = report.first_failure()
    assert not report.ok
    assert (failure["name"], failure["verdict"]) == (first, verdict)
    assert failure["message"].startswith(message), failure["message"]
