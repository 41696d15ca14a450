"""jaxninja.parity in the dtypes real ports run in: code that fixes its own computation dtype
(judged in that dtype, named where it narrows), bfloat16 and float16 (the reference's own error
the yardstick, on an RMS), and any two implementations (JAX and JAX, a NumPy reference).

One seed, the pairs' first shape and input scale 1 (or the scale where a bug is one):
benchmarks/parity_sweep.py runs them over seeds, shapes and scales."""

import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("flax")

from jaxninja import parity as P  # noqa: E402
from jaxninja.errors import UsageError  # noqa: E402
from jaxninja.parity.verdict import PASSING  # noqa: E402
from tests import parity_dtype_pairs as D  # noqa: E402
from tests import parity_pairs as PP  # noqa: E402


def _first_scale(item) -> float:
    return 1.0 if 1.0 in item.scales else item.scales[0]


@pytest.mark.parametrize(
    "name, dtype", [(n, d) for n, p in D.PAIRS.items() for d in p.dtypes]
)  # fmt: skip
def test_right_ports_pass(name, dtype):
    pair = D.PAIRS[name]
    report = P.compare(*D.case(name, pair.shapes[0], _first_scale(pair)), dtype=dtype, seeds=(0,))
    assert report.ok, report.format()
    assert all(r["verdict"] in PASSING for r in report.rows)


@pytest.mark.parametrize(
    "name, dtype", [(n, d) for n, b in D.BUGS.items() for d in b.dtypes]
)  # fmt: skip
def test_wrong_ports_fail(name, dtype):
    """Each low-precision bug is right in exact arithmetic: float64 passes it, the low
    precision's verdict (or its NaNs) fails it."""
    bug = D.BUGS[name]
    case = D.case(bug.pair, bug.shapes[0], _first_scale(bug), bug=name)
    report = P.compare(*case, dtype=dtype, seeds=(0,))
    assert not report.ok, report.format()
    if name in D.LOW_BUGS:
        assert all(r["float64"]["verdict"] == "ok" for r in report.rows if r["float64"])


def test_flax_dense_float32_is_judged_in_float32_and_named():
    """The issue's case: flax.linen.Dense(dtype=jnp.float32) against F.linear failed on dtype
    and on every gradient in float64; now judged in float32, with the line that narrows."""
    report = P.assert_parity(*D.case("flax Dense(dtype=float32)", (4, 6, 3), 1.0), seeds=(0,))
    out = next(r for r in report.rows if r["name"] == "out")
    assert out["float64"]["dtype"] == "float32" and out["float64"]["verdict"] == "ok"
    # the bound is float32's (16x torch's own error + 4 ulps), not float64's 1e-11
    assert out["float64"]["bound"] > 1e-7
    (note,) = report.notes
    assert "jax computes in float32" in note and "convert_element_type at flax/linen/" in note
    assert "tests/parity_dtype_pairs.py" in note and "dtype=None" in note and "unseen" in note
    text = report.format()
    assert "float32 for jax: the dtype it computes in" in text
    assert max(len(line) for line in text.splitlines()) <= 100


def test_torch_cast_to_float32_is_widened():
    """torch's softmax(dtype=torch.float32) in the float64 run: the cast is skipped, so the
    torch side is a float64 truth and float64 judges the port at its usual bound."""
    report = P.assert_parity(*D.case("torch softmax(dtype=float32)", (4, 7), 1.0), seeds=(0,))
    out = next(r for r in report.rows if r["name"] == "out")
    assert "dtype" not in out["float64"] and out["float64"]["bound"] < 1e-10
    assert any("parity kept float64 there" in n and "_to_copy" in n for n in report.notes)


def test_fixed_reference_has_no_float64_truth():
    """A flax reference in float32: the sides agree within its float32 sensitivity, and the
    float32 verdict (no truth for it) is not given."""
    report = P.compare(*D.case("torch port, flax reference", (5, 6, 6), 1.0), seeds=(0,))
    assert report.ok, report.format()
    assert all(r["float64"]["dtype"] == "float32" and r["low"] is None for r in report.rows)
    assert any("no float64 truth" in n for n in report.notes)


def test_bfloat16_variance_bug_fails_and_upcast_layernorm_passes():
    """The issue's case: E[x^2] - E[x]^2 on inputs of mean 8 passed (float64 is exact); its
    bfloat16 output is far from the truth, torch's is not."""
    bug = D.case("LayerNorm upcast", (8, 64), 1.0, bug="variance as E[x^2] - E[x]^2")
    report = P.compare(*bug, dtype="bfloat16", seeds=(0,))
    out = next(r for r in report.rows if r["name"] == "out")
    assert out["float64"]["verdict"] == "ok" and out["low"]["verdict"] == "wrong"
    assert out["low"]["error"] > 10 * out["low"]["ref_error"]  # measured: ~70x
    assert "RMS from the truth in bfloat16" in out["message"]
    right = P.compare(*D.case("LayerNorm upcast", (8, 64), 1.0), dtype="bfloat16", seeds=(0,))
    assert right.ok, right.format()
    out = next(r for r in right.rows if r["name"] == "out")
    assert out["low"]["error"] <= 1.5 * out["low"]["ref_error"]  # torch's own rounding, ~1x


def test_low_precision_noise_only_where_the_reference_has_no_signal():
    """BatchNorm's d b1 is zero in exact arithmetic: torch's bfloat16 value is all rounding, so
    the row is noise; the rows with a signal are judged."""
    report = P.compare(*PP.case("batchnorm", (8, 5, 6), 1.0), dtype="bfloat16", seeds=(0,))
    low = {r["name"]: r["low"]["verdict"] for r in report.rows if r["low"]}
    assert low["d params['b1']"] == "noise"
    assert low["out"] in ("ok", "wrong") and low["d args[0]"] in ("ok", "wrong")


def test_two_jax_sides_and_a_numpy_reference():
    kernel = P.compare(*D.case("custom_vjp kernel, JAX reference", (4, 8), 1.0), seeds=(0,))
    assert kernel.ways[0] == {
        "way": "kernel~reference", "other": "kernel", "reference": "reference",
    }  # fmt: skip
    assert any(r["name"] == "d args[0]" for r in kernel.rows)
    numpy_ref = P.compare(*D.case("NumPy reference", (4, 7), 1.0), seeds=(0,))
    assert numpy_ref.ok and [r["name"] for r in numpy_ref.rows] == ["out"]  # values only
    assert "values only: a numpy side has no gradients" in numpy_ref.notes
    same = P.compare(P.torch(torch.tanh), P.torch(lambda x: torch.tanh(x)), P.normal(4), seeds=(0,))
    assert same.ways[0]["other"] == "torch 1" and same.ok


def test_sides_and_reference_bad_input_is_one_line():
    x = P.normal((3,))
    cases = [
        (lambda: P.compare(P.jax(lambda p, x: x), lambda p, x: x, {}, x), "two side objects"),
        (lambda: P.compare(P.jax(np.tanh), P.numpy(np.tanh), {}, x, reference="torch"),
         "choose 'jax' or 'numpy'"),
    ]  # fmt: skip
    for call, message in cases:
        with pytest.raises(UsageError, match=message) as info:
            call()
        assert "\n" not in str(info.value)


def test_a_dtype_the_side_cannot_run_is_one_line():
    def t(p, x):
        return torch.linalg.inv(x)

    with pytest.raises(UsageError, match="choose a dtype it runs in") as info:
        P.compare(lambda p, x: jnp.linalg.inv(x), t, {}, np.eye(3) * 2.0, dtype="float16")
    assert "in float16 (float64 ran)" in str(info.value) and "\n" not in str(info.value)
