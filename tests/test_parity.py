"""jaxninja.parity: real JAX/PyTorch pairs pass, real port bugs fail where they enter, and the
verdict's two promises hold (1e-6 relative fails in float64 at any scale; rows that cancel in
exact arithmetic raise no false alarm)."""

import json
import re
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch")

from jaxninja import parity as P  # noqa: E402
from jaxninja.errors import UsageError  # noqa: E402
from jaxninja.models import layers  # noqa: E402
from jaxninja.parity.verdict import PASSING  # noqa: E402
from tests import parity_pairs as PP  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("name", list(PP.PAIRS))
def test_correct_pairs_pass(name):
    """Over 3 seeds, the pair's first shape, input scales 0.1, 1 and 10 (the sweep: more)."""
    for scale in PP.SCALES:
        report = P.assert_parity(*PP.case(name, PP.PAIRS[name].shapes[0], scale))
        assert report.rows and all(r["verdict"] in PASSING for r in report.rows)
        assert not report.notes  # float64 throughout: no side is taken for a fixed-dtype one


@pytest.mark.parametrize("name", list(PP.BUGS))
def test_bug_catalogue_fails_where_it_enters(name):
    """In float64, the verdict that comes first (one compile per bug; the float32 verdicts of
    the catalogue: benchmarks/parity_sweep.py and test_report_table_and_json)."""
    bug = PP.BUGS[name]
    for scale in PP.SCALES:
        report = P.compare(*PP.case(bug.pair, bug.shapes[0], scale, bug=name), dtype="float64")
        assert not report.ok
        assert report.first_failure["name"] == bug.first_row, report.format()
        tap = report.first_tap
        assert (tap and tap["tap"]) == bug.first_tap, report.format()
    with pytest.raises(AssertionError, match=re.escape(f"first failing row: {bug.first_row}")):
        P.assert_parity(*PP.case(bug.pair, bug.shapes[0], 1.0, bug=name), dtype="float64")


def test_float64_fails_a_1e_6_relative_difference_at_any_scale():
    """float32 cannot see it (its noise is larger); float64's bound is far below it."""
    for scale in PP.SCALES:
        report = P.compare(
            lambda p, x: jnp.tanh(x) * (1 + 1e-6), lambda p, x: torch.tanh(x), {},
            P.normal((16, 16), scale), dtype="float64",
        )  # fmt: skip
        out = [r for r in report.rows if r["name"] == "out"]
        assert all(r["verdict"] == "wrong" and r["float64"]["verdict"] == "wrong" for r in out)
        # the bound is under 1e-10 of the row's scale here: 1e-6 is 1e4 times past it
        assert all(r["float64"]["bound"] <= 1e-10 * r["float64"]["scale"] for r in out)


def test_rows_that_cancel_exactly_raise_no_false_alarm():
    """d b1 under BatchNorm and d max under softmax are zero in exact arithmetic: each side's
    float64 value is rounding noise (nonzero), the two differ, and the row still passes."""
    for name, row in (("batchnorm", "d params['b1']"), ("softmax", "d max")):
        for scale in PP.SCALES:
            report = P.compare(*PP.case(name, PP.PAIRS[name].shapes[0], scale))
            rows = [r for r in report.rows if r["name"] == row]
            assert len(rows) == 3 and all(r["verdict"] in PASSING for r in rows), report.format()
            assert max(r["float64"]["error"] for r in rows) > 0  # noise there, tolerated
            # float32 cannot judge a row that is all rounding: noise, and float64 judges
            assert all(r["low"]["verdict"] == "noise" for r in rows)


def test_cancelling_row_whose_input_gradient_is_tiny():
    """Softmax at scale 10 saturates: d x is ~1e-5, while d max (zero in exact arithmetic) is
    rounding of the cotangent's O(1) terms; the floor counts the cotangents (seed 4 of this
    case false-alarmed when it counted the gradient rows alone)."""

    def only_max(p, x, lib):
        m = P.tap("max", x.max(-1, keepdims=True) if lib is jnp else x.max(-1, True).values)
        return jax.nn.softmax(x - m, axis=-1) if lib is jnp else torch.softmax(x - m, -1)

    report = P.compare(
        lambda p, x: only_max(p, x, jnp), lambda p, x: only_max(p, x, torch), {},
        P.normal((4, 7), 10.0), seeds=range(5), dtype="float64",
    )  # fmt: skip
    assert report.ok, report.format()


def test_taps_under_jit_even_compiled_before():
    @jax.jit
    def f(p, x):
        h = P.tap("h", jnp.sin(x))
        return h * p["w"][None, :]

    x = np.linspace(0.0, 1.0, 12).reshape(3, 4)
    w = np.ones(4)
    assert np.array_equal(f({"w": w}, x), np.sin(x))  # traced and compiled without recording
    assert P.tap("h", x) is x  # outside compare: x itself

    def g(p, x):
        return P.tap("h", torch.sin(x)) * p["w"]

    report = P.assert_parity(f, g, {"w": w}, x, seeds=(0,), dtype="float64")
    names = [r["name"] for r in report.rows]
    assert names == ["h", "out", "d h", "d params['w']", "d args[0]"]


def test_one_sided_tap_listed_by_compare_failed_by_assert_parity():
    """A typo ("hh" for "h") ended OK with the taps listed; assert_parity (strict_taps) fails
    the tap's value and names the likely typo."""

    def f(p, x):
        return P.tap("hh", x * 2.0)

    def g(p, x):
        return P.tap("h", x * 2.0)

    report = P.compare(f, g, {}, P.normal((3,)), dtype="float64")
    one = {r["name"] for r in report.rows if r["verdict"] == "one-sided"}
    assert report.ok and one == {"hh", "h", "d hh", "d h"}
    assert "one side only" in report.format()
    with pytest.raises(AssertionError, match=r"only on the jax side \(a typo for 'h'\?\)"):
        P.assert_parity(f, g, {}, P.normal((3,)), dtype="float64")


def test_in_place_torch_changes_neither_jax_nor_caller():
    x = np.arange(6.0).reshape(2, 3)

    def t(p, x):
        x.add_(1.0)
        return x * 2.0

    P.assert_parity(lambda p, x: (x + 1.0) * 2.0, t, {}, x, seeds=(0,), dtype="float64")
    assert np.array_equal(x, np.arange(6.0).reshape(2, 3))


def test_integer_outputs_compared_exactly_and_pytrees():
    def j(p, x, i):
        return {"arg": jnp.argmax(x, -1), "picked": jnp.take_along_axis(x, i[:, None], 1)}

    def t(p, x, i):
        return {"arg": x.argmax(-1), "picked": x.gather(1, i[:, None])}

    report = P.assert_parity(j, t, {}, P.normal((4, 5)), P.integers((4,), 0, 5), seeds=(0, 1))
    assert all(r["low"] is not None for r in report.rows if r["name"] == "out['picked']")
    names = [r["name"] for r in report.rows if r["seed"] == 0]
    assert names == ["out['arg']", "out['picked']", "d args[0]"]


def test_reference_jax():
    """(bfloat16 and float16: tests/test_parity_dtypes.py.)"""
    report = P.assert_parity(*PP.case("softmax", (4, 7), 1.0), reference="jax")
    assert report.ways[0]["reference"] == "jax"
    bug = PP.case("layernorm", (4, 8), 1.0, bug="layernorm eps 1e-6")
    report = P.compare(*bug, dtype="float64")
    assert report.first_failure["name"] == "xhat" and all(r["low"] is None for r in report.rows)


def test_structure_shape_and_nonfinite_are_named():
    report = P.compare(lambda p, x: (x, x), lambda p, x: [x], {}, P.normal((2,)), seeds=(0,))
    assert report.first_failure["verdict"] == "structure"
    assert "out[1] is only on the jax side" in report.first_failure["message"]
    # a tuple and a list of one length agree, with a note
    report = P.compare(lambda p, x: (x, x), lambda p, x: [x, x], {}, P.normal((2,)), seeds=(0,))
    assert report.ok and any("a list and a tuple" in n for n in report.notes)
    report = P.compare(
        lambda p, x: jnp.log(x), lambda p, x: torch.log(x.abs()), {}, P.normal((8,)), seeds=(0,)
    )
    assert report.first_failure["verdict"] == "nonfinite"


def test_bad_input_is_one_line():
    x = P.normal((3,))

    def raises(p, x):
        return x.no_such_method()

    cases = [
        (lambda: P.compare(raises, lambda p, x: x, {}, x), r"AttributeError.*test_parity\.py:\d+"),
        (lambda: P.compare(lambda p, x: 1.0, lambda p, x: x, {}, x), "returned a float at out"),
        (lambda: P.compare(lambda p, x: x, lambda p, x: x, {"w": "a"}, x), r"params\['w'\]"),
        (lambda: P.normal((2, -1)), "not a tuple of non-negative ints"),
        (lambda: P.integers((2,), 3, 1), "low < high"),
        (lambda: P.compare(lambda p, x: x, lambda p, x: x, {}, x, dtype="int8"), "choose one"),
        (lambda: P.compare(lambda p, x: x, lambda p, x: x, {}, x, reference="np"), "choose"),
    ]
    for call, message in cases:
        with pytest.raises(UsageError, match=message) as info:
            call()
        assert "\n" not in str(info.value)


def test_without_torch_compare_says_so(monkeypatch):
    import jaxninja.parity.engine as engine

    monkeypatch.setattr(engine, "torch_available", lambda: False)
    with pytest.raises(UsageError, match="needs PyTorch"):
        P.compare(lambda p, x: x, lambda p, x: x, {}, P.normal((2,)))
    bn = batchnorm_layer(layers.batchnorm_backward)
    assert P.check_backward(*bn, seeds=(0,)).ok  # no torch_fn: no torch needed


def batchnorm_layer(backward_fn):
    """The project's BatchNorm as check_backward's (forward, backward, params, x)."""

    def forward(p, x):
        return layers.batchnorm_forward(x, p["bngain"], p["bnbias"], PP.EPS)

    def backward(dout, cache):
        dx, dgain, dbias = backward_fn(dout, cache)
        return {"bngain": dgain, "bnbias": dbias}, (dx,)

    params = {"bngain": P.uniform((1, 6), 0.5, 1.5), "bnbias": P.normal((1, 6))}
    return forward, backward, params, P.normal((8, 6), 3.0)


def biased_backward(dout, cache):
    """Exercise 3 with Bessel's n/(n-1) forgotten: a real learner's mistake."""
    n = dout.shape[0]
    dbias, dgain = dout.sum(0, keepdims=True), (dout * cache.bnraw).sum(0, keepdims=True)
    dx = cache.bngain * cache.bnvar_inv / n * (n * dout - dbias - cache.bnraw * dgain)
    return dx, dgain, dbias


def bn_torch(p, x):
    m, v = x.mean(0, keepdim=True), x.var(0, keepdim=True)
    return p["bngain"] * (x - m) * (v + PP.EPS) ** -0.5 + p["bnbias"]


def test_check_backward_three_ways():
    report = P.check_backward(*batchnorm_layer(layers.batchnorm_backward), torch_fn=bn_torch)
    assert report.ok and [w["way"] for w in report.ways] == [
        "(1) jax.vjp", "(2) torch", "(3) jax~torch",
    ]  # fmt: skip
    report = P.check_backward(*batchnorm_layer(biased_backward), torch_fn=bn_torch)
    assert max(len(line) for line in report.format().splitlines()) <= 100
    first = report.first_failure
    assert (first["way"], first["name"]) == ("(1) jax.vjp", "d args[0]"), report.format()
    assert {r["way"] for r in report.failures()} == {"(1) jax.vjp", "(2) torch"}


def test_report_table_and_json():
    bug = PP.BUGS["causal mask off by one"]
    report = P.compare(*PP.case(bug.pair, bug.shapes[0], 1.0, bug="causal mask off by one"))
    text = report.format()
    assert max(len(line) for line in text.splitlines()) <= 100
    table = text.splitlines()[3:]
    assert table[0].startswith("probs") and "WRONG" in table[0]  # the first failing row first
    assert "the difference enters at `probs`" in text
    data = json.loads(report.to_json())
    assert data["ok"] is False and data["first_tap"]["tap"] == "probs"
    assert {r["seed"] for r in data["rows"]} == {0, 1, 2}


def test_readme_example_runs():
    """The README's worked example, executed as written."""
    text = (ROOT / "README.md").read_text()
    section = text.split("## Check a port: `jaxninja.parity`", 1)[1].split("\n## ", 1)[0]
    code = section.split("```python\n", 1)[1].split("```", 1)[0]
    exec(compile(code, "README.md", "exec"), {})


def test_nondeterministic_torch_side_is_named():
    """A torch module left in train mode with dropout: named as such, not a port bug."""
    drop = torch.nn.Dropout(0.5)

    report = P.compare(lambda p, x: x * 1.0, lambda p, x: drop(x), {}, P.normal((8, 8)))
    first = report.first_failure
    assert first["verdict"] == "nondeterministic" and "dropout" in first["message"]
    assert {r["verdict"] for r in report.rows} == {"nondeterministic"}


def test_a_printed_tracer_gets_the_debug_print_hint(capsys):
    def f(p, x):
        print(x)
        return x

    report = P.compare(f, lambda p, x: x, {}, P.normal((2,)), seeds=(0,), dtype="float64")
    assert any("jax.debug.print" in n for n in report.notes)
    assert "jax.debug.print" in report.format()


def test_a_long_compare_says_where_it_is_on_stderr(monkeypatch, capsys):
    import jaxninja.parity.watch as watch

    monkeypatch.setattr(watch, "QUIET_S", 0.0)  # speak at once, and often
    monkeypatch.setattr(watch, "EVERY_S", 0.01)
    jax_fn, torch_fn, *inputs = PP.case("softmax", (4, 7), 1.0)

    def slow_torch_fn(*args):  # a side that takes a while, 20 of the watcher's periods a call
        time.sleep(0.2)
        return torch_fn(*args)

    P.compare(jax_fn, slow_torch_fn, *inputs, seeds=(0,))
    err = capsys.readouterr().err
    assert "parity: seed 0 (1 of 1)" in err and "parity: done" in err


def test_table_keeps_shapes_and_names_whole():
    """A 4-D shape lost its parenthesis, a long parameter name its head; the FAILED line quoted
    seed 0 where the table showed the worst seed."""
    long = {"blocks": {"attention": {"query_projection_weight": P.normal((2, 4, 5, 5))}}}

    def j(p, x):
        return p["blocks"]["attention"]["query_projection_weight"] * x

    def t(p, x):
        return p["blocks"]["attention"]["query_projection_weight"] * x * (1.0 + 1e-3 * x)

    report = P.compare(j, t, long, P.normal((5,)))
    text = report.format()
    assert "(2, 4, 5, 5)" in text
    assert "d params['blocks']['attention']['query_projection_weight']" in text
    assert max(len(line) for line in text.splitlines()) <= 100
    first = report.first_failure
    shown = next(line for line in text.splitlines()[3:] if line.startswith(first["name"]))
    assert shown.rstrip().endswith(f"| {first['seed']}")


def test_noise_summary_lists_whole_names():
    rows = [
        {"way": "w", "seed": 0, "index": i, "name": f"d params['layer_{i}']['weight']",
         "tap": None, "kind": "grad", "shapes": [[3], [3]], "verdict": "noise",
         "message": None, "float64": None, "low": None}
        for i in range(12)
    ]  # fmt: skip
    report = P.Report("float32", (0,), [{"way": "w", "other": "a", "reference": "b"}], rows)
    lines = report.format().splitlines()
    start = next(i for i, x in enumerate(lines) if x.startswith("noise:"))
    text = " ".join(x.strip() for x in lines[start : start + 4])
    assert max(len(x) for x in lines) <= 100 and "and 4 more" in text
    names = sorted(r["name"] for r in rows)[:8]  # sorted, the first eight listed
    assert all(n in text for n in names) and names[-1] + ", and 4 more" in text


def test_check_backward_documents_torch_fn():
    doc = P.check_backward.__doc__
    assert "torch_fn(params, *args)" in doc
    assert "torch_fn(params, *args)" in (ROOT / "README.md").read_text()
